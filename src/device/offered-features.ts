/** What this vhost-user-net device offers the front-end. */
import { featureMask, NetFeature, ProtocolFeature, VirtioFeature } from '../protocol/features.js';

export const OFFERED_FEATURES = featureMask(
  VirtioFeature.VERSION_1,
  VirtioFeature.LOG_ALL,
  VirtioFeature.PROTOCOL_FEATURES,
  VirtioFeature.ACCESS_PLATFORM,
  VirtioFeature.EVENT_IDX,
  VirtioFeature.INDIRECT_DESC,
  VirtioFeature.RING_PACKED,
  NetFeature.MRG_RXBUF,
  NetFeature.MQ,
);

export const OFFERED_PROTOCOL_FEATURES = featureMask(
  ProtocolFeature.MQ,
  ProtocolFeature.LOG_SHMFD,
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.BACKEND_REQ,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
);

/**
 * With a tap behind it the device also has a link: an MTU the front-end can set (applied to
 * the tap), and announcements after a migration: by the guest (GUEST_ANNOUNCE, through QEMU's
 * control queue) or, for a guest that cannot, a RARP the back-end sends (SEND_RARP). The link
 * status (STATUS) QEMU keeps itself and never asks a vhost-user back-end for.
 */
export const TAP_FEATURES = featureMask(NetFeature.MTU, NetFeature.GUEST_ANNOUNCE);
export const TAP_PROTOCOL_FEATURES = featureMask(ProtocolFeature.NET_MTU, ProtocolFeature.RARP);

/** Memory slots we accept with CONFIGURE_MEM_SLOTS: the classic table size, as DPDK does. */
export const MAX_MEM_SLOTS = 8;

/** What this vhost-user-net device offers the front-end. */
import { featureMask, NetFeature, ProtocolFeature, VirtioFeature } from '../protocol/features.js';
import { RX_OFFLOAD_FEATURES, TX_OFFLOAD_FEATURES } from '../net/offloads.js';
import type { NetMode } from '../datapath/contract.js';

/**
 * IN_ORDER: the device uses buffers in the order they were made available, which serve
 * always does (virtio-net.ts completes chains in the order it consumed them, and the packed
 * ring writes each used descriptor at its chain's first position). A driver that knows it
 * skips work: DPDK's virtio PMD then frees split TX buffers from the used index alone and
 * takes buffer ids from ring positions. DPDK's vhost offers it, so without it the same
 * front-end ran other, dearer code behind serve than behind DPDK: serve-ab against the build
 * that did not offer it, guest -> back-end 1.15-1.23x split and 1.02-1.08x packed, back-end
 * -> guest 0.89-1.16x split (five rounds, median 1.08x) and 1.05-1.06x packed.
 */
const OFFERED_FEATURES = featureMask(
  VirtioFeature.VERSION_1,
  VirtioFeature.IN_ORDER,
  VirtioFeature.LOG_ALL,
  VirtioFeature.PROTOCOL_FEATURES,
  VirtioFeature.ACCESS_PLATFORM,
  VirtioFeature.EVENT_IDX,
  VirtioFeature.INDIRECT_DESC,
  VirtioFeature.RING_PACKED,
  NetFeature.MRG_RXBUF,
  NetFeature.MQ,
);

const OFFERED_PROTOCOL_FEATURES = featureMask(
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
const TAP_FEATURES = featureMask(NetFeature.MTU, NetFeature.GUEST_ANNOUNCE);
const TAP_PROTOCOL_FEATURES = featureMask(ProtocolFeature.NET_MTU, ProtocolFeature.RARP);

/** Memory slots we accept with CONFIGURE_MEM_SLOTS: the classic table size, as DPDK does. */
export const MAX_MEM_SLOTS = 8;

/** GET_FEATURES' answer for a device of `queuePairs` pairs over `net`. */
export function offeredFeatures(queuePairs: number, net: NetMode): bigint {
  let offered = queuePairs > 1 ? OFFERED_FEATURES : OFFERED_FEATURES & ~(1n << BigInt(NetFeature.MQ));
  // Only a tap passes headers between the guest and the kernel, which segments and checksums;
  // other endpoints would have to do that work themselves, so they do not offer it.
  if (net.kind === 'tap') offered |= TX_OFFLOAD_FEATURES | RX_OFFLOAD_FEATURES | TAP_FEATURES;
  return offered;
}

/** GET_PROTOCOL_FEATURES' answer for a device over `net`. */
export function offeredProtocolFeatures(net: NetMode): bigint {
  return net.kind === 'tap' ? OFFERED_PROTOCOL_FEATURES | TAP_PROTOCOL_FEATURES : OFFERED_PROTOCOL_FEATURES;
}

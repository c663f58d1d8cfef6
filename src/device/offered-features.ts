/** What this vhost-user-net device offers the front-end. */
import { featureMask, NetFeature, ProtocolFeature, VirtioFeature } from '../protocol/features.js';

export const OFFERED_FEATURES = featureMask(
  VirtioFeature.VERSION_1,
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
  ProtocolFeature.REPLY_ACK,
  ProtocolFeature.BACKEND_REQ,
  ProtocolFeature.CONFIGURE_MEM_SLOTS,
  ProtocolFeature.STATUS,
);

/** Memory slots we accept with CONFIGURE_MEM_SLOTS: the classic table size, as DPDK does. */
export const MAX_MEM_SLOTS = 8;

/** Public surface of the vhost-user codec. */
export { ProtocolError, type ProtocolErrorCode } from './errors.js';
export {
  HEADER_SIZE, VERSION, REPLY_FLAG, NEED_REPLY_FLAG,
  decodeHeader, isReply, needsReply, makeFlags, replyFlags, type Header,
} from './header.js';
export {
  MAX_PAYLOAD, MAX_FDS, MAX_MEM_REGIONS, MAX_CONFIG_SIZE,
  VRING_INDEX_MASK, VRING_NOFD_FLAG, VRING_F_LOG,
  IotlbType, IotlbPerm, ConfigFlags, DeviceStateDirection, DeviceStatePhase,
  type Body, type BodyKind, type MemoryRegion,
} from './bodies.js';
export {
  FrontendRequest, BackendRequest, requestName, requestInfo, knownRequests, fdRange,
  type Channel, type RequestInfo, type Shape, type FdRule,
} from './requests.js';
export {
  VirtioFeature, NetFeature, ProtocolFeature, NET_DEVICE_FEATURES, PROTOCOL_FEATURES,
  featureBit, featureMask, hasFeature, featureNames, type FeatureTable,
} from './features.js';
export { decodeMessage, type VhostMessage } from './decode.js';
export { encodeMessage, type OutgoingMessage } from './encode.js';
export { MessageFramer, type Frame } from './framer.js';
export { decodePlainIotlb, plainIotlbRequest, IOTLB_FRAME_SIZE, type PlainIotlbRequest } from './plain-iotlb.js';

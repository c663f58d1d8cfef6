/** The test front-end: a vhost-user-net driver with an emulated IOMMU (see frontend.ts). */
export { VhostUserFrontend, RX_VRING, TX_VRING, canaryByte, type FrontendOptions, type IommuMode, type CanaryViolation, type FrontendStats } from './frontend.js';
export { VhostUserConnection, VhostUserError, connectWhenListening } from './connection.js';
export { EmulatedIommu, PAGE_4K, PAGE_2M, PAGE_1G, type IommuTranslation } from './iommu.js';
export { writeFrame, frameLength, frameSeq, checkLoopedFrame, payloadByte, FRAME_DST, FRAME_SRC } from './frames.js';
export { SplitDriver, layoutRings, type RingLayout } from './split-driver.js';

/**
 * The test front-end's vhost-user control messages, in QEMU's order: GET_FEATURES,
 * GET/SET_PROTOCOL_FEATURES (REPLY_ACK, BACKEND_REQ), SET_OWNER, SET_BACKEND_REQ_FD,
 * SET_FEATURES, SET_MEM_TABLE (negotiate()); per ring NUM/BASE/ADDR/KICK/CALL (setUpRing());
 * SET_VRING_ENABLE (enableRing()). With REPLY_ACK every request after SET_PROTOCOL_FEATURES
 * asks for an ack and waits. What goes between the steps — mapping the rings, priming the
 * device IOTLB — is the caller's (frontend.ts start()).
 */
import {
  FrontendRequest, NetFeature, ProtocolFeature, VirtioFeature, VRING_NOFD_FLAG, featureMask, hasFeature,
} from '../../../src/protocol/index.js';
import { closeFd, eventfdCreate } from '../../../src/sys/index.js';
import type { VhostUserConnection } from './connection.js';
import type { ResolvedFrontendOptions } from './options.js';
import type { DriverRing } from './vring.js';

export interface Negotiated {
  features: bigint;
  protocolFeatures: bigint;
}

/** Features, protocol features, owner, back-end channel and memory table. Throws if the back-end lacks a feature the options need. */
export function negotiate(c: VhostUserConnection, o: ResolvedFrontendOptions, memfd: number): Negotiated {
  const iommu = o.iommu !== 'off';
  const offered = getU64(c, FrontendRequest.GET_FEATURES);
  let features = featureMask(VirtioFeature.VERSION_1);
  if (hasFeature(offered, VirtioFeature.PROTOCOL_FEATURES)) features |= featureMask(VirtioFeature.PROTOCOL_FEATURES);
  if (iommu) features |= featureMask(VirtioFeature.ACCESS_PLATFORM);
  if (o.mergeableRx) features |= featureMask(NetFeature.MRG_RXBUF);
  if (o.eventIdx) features |= featureMask(VirtioFeature.EVENT_IDX);
  const missing = features & ~offered;
  if (missing !== 0n) throw new Error(`the back-end does not offer features 0x${missing.toString(16)} (offered 0x${offered.toString(16)})`);

  let protocolFeatures = 0n;
  if (hasFeature(features, VirtioFeature.PROTOCOL_FEATURES)) {
    const offeredProto = getU64(c, FrontendRequest.GET_PROTOCOL_FEATURES);
    protocolFeatures = offeredProto & featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.BACKEND_REQ);
    c.request(FrontendRequest.SET_PROTOCOL_FEATURES, { kind: 'u64', value: protocolFeatures });
    c.replyAck = hasFeature(protocolFeatures, ProtocolFeature.REPLY_ACK);
  }
  const backendChannel = hasFeature(protocolFeatures, ProtocolFeature.BACKEND_REQ);
  if (iommu && !backendChannel) throw new Error('the back-end does not offer BACKEND_REQ: IOTLB misses would have no channel');
  c.request(FrontendRequest.SET_OWNER);
  if (backendChannel) {
    const theirs = c.openBackendChannel();
    try {
      c.request(FrontendRequest.SET_BACKEND_REQ_FD, { kind: 'none' }, [theirs]);
    } finally {
      closeFd(theirs);
    }
  }
  c.request(FrontendRequest.SET_FEATURES, { kind: 'u64', value: features });
  c.request(FrontendRequest.SET_MEM_TABLE, {
    kind: 'memTable',
    regions: [{ guestAddr: 0n, size: BigInt(o.memoryBytes), userAddr: BigInt(o.uaddrBase), mmapOffset: 0n }],
  }, [memfd]);
  return { features, protocolFeatures };
}

/** Size, base, addresses (r.descDev etc. must be set), kick and call eventfds of one ring; asks for no interrupts. */
export function setUpRing(c: VhostUserConnection, o: ResolvedFrontendOptions, r: DriverRing): void {
  c.request(FrontendRequest.SET_VRING_NUM, { kind: 'vringState', index: r.index, num: o.queueSize });
  c.request(FrontendRequest.SET_VRING_BASE, { kind: 'vringState', index: r.index, num: 0 });
  c.request(FrontendRequest.SET_VRING_ADDR, {
    kind: 'vringAddr', index: r.index, flags: 0,
    descUser: BigInt(r.descDev), usedUser: BigInt(r.usedDev), availUser: BigInt(r.availDev), logGuest: 0n,
  });
  if (o.kicks === 'eventfd') {
    r.kickFd = eventfdCreate(0);
    c.request(FrontendRequest.SET_VRING_KICK, { kind: 'u64', value: BigInt(r.index) }, [r.kickFd]);
  } else {
    c.request(FrontendRequest.SET_VRING_KICK, { kind: 'u64', value: BigInt(r.index | VRING_NOFD_FLAG) });
  }
  r.callFd = eventfdCreate(0);
  c.request(FrontendRequest.SET_VRING_CALL, { kind: 'u64', value: BigInt(r.index) }, [r.callFd]);
  // We busy-poll the used rings: ask for no interrupts (Linux NAPI does the same while polling).
  if (o.eventIdx) r.driver.setUsedEvent(0x7fff);
  else r.driver.setNoInterrupt(true);
}

/** SET_VRING_ENABLE, with PROTOCOL_FEATURES (without it the spec has rings start enabled). */
export function enableRing(c: VhostUserConnection, negotiated: Negotiated, r: DriverRing): void {
  if (hasFeature(negotiated.features, VirtioFeature.PROTOCOL_FEATURES)) {
    c.request(FrontendRequest.SET_VRING_ENABLE, { kind: 'vringState', index: r.index, num: 1 });
  }
}

function getU64(c: VhostUserConnection, request: number): bigint {
  const body = c.request(request);
  if (body === null || body.kind !== 'u64') throw new Error(`${FrontendRequest[request]}: unexpected reply ${body?.kind}`);
  return body.value;
}

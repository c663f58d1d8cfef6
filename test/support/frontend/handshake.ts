/**
 * The test front-end's vhost-user control messages, in QEMU's order: GET_FEATURES,
 * GET/SET_PROTOCOL_FEATURES (REPLY_ACK, BACKEND_REQ), SET_OWNER, SET_BACKEND_REQ_FD,
 * SET_FEATURES, SET_MEM_TABLE (negotiate()); per ring NUM/BASE/ADDR/KICK/CALL (setUpRing());
 * SET_VRING_ENABLE (enableRing()); with the dirtyLog option, LOG_SHMFD as well, and a migration's
 * start / end: SET_LOG_BASE (setLogBase()), then LOG_ALL in SET_FEATURES and every ring's
 * addresses again with VHOST_VRING_F_LOG (setLogging()). With REPLY_ACK every request after SET_PROTOCOL_FEATURES
 * asks for an ack and waits. What goes between the steps — mapping the rings, priming the
 * device IOTLB — is the caller's (frontend.ts start()).
 */
import {
  FrontendRequest, NetFeature, ProtocolFeature, VirtioFeature, VRING_F_LOG, VRING_NOFD_FLAG, featureMask, hasFeature,
} from '../../../src/protocol/index.js';
import { closeFd, eventfdCreate } from '../../../src/sys/index.js';
import type { VhostUserConnection } from './connection.js';
import type { FrontendDirtyLog } from './dirty-log.js';
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
  // LOG_ALL is not negotiated here: setLogging() adds it once the log is set, as QEMU does.
  if (o.dirtyLog && !hasFeature(offered, VirtioFeature.LOG_ALL)) throw new Error(`the back-end does not offer LOG_ALL (offered 0x${offered.toString(16)})`);
  const missing = features & ~offered;
  if (missing !== 0n) throw new Error(`the back-end does not offer features 0x${missing.toString(16)} (offered 0x${offered.toString(16)})`);

  let protocolFeatures = 0n;
  if (hasFeature(features, VirtioFeature.PROTOCOL_FEATURES)) {
    const offeredProto = getU64(c, FrontendRequest.GET_PROTOCOL_FEATURES);
    const wanted = featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.BACKEND_REQ) | (o.dirtyLog ? featureMask(ProtocolFeature.LOG_SHMFD) : 0n);
    protocolFeatures = offeredProto & wanted;
    if (o.dirtyLog && !hasFeature(protocolFeatures, ProtocolFeature.LOG_SHMFD)) {
      throw new Error(`the back-end does not offer protocol feature LOG_SHMFD (offered 0x${offeredProto.toString(16)})`);
    }
    c.request(FrontendRequest.SET_PROTOCOL_FEATURES, { kind: 'u64', value: protocolFeatures });
    c.replyAck = hasFeature(protocolFeatures, ProtocolFeature.REPLY_ACK);
  }
  if (o.dirtyLog && protocolFeatures === 0n) throw new Error('the back-end does not offer PROTOCOL_FEATURES: no LOG_SHMFD');
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
  setRingAddr(c, r, false);
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

/** SET_VRING_ADDR; with `log`, VHOST_VRING_F_LOG and log_guest_addr = the used ring's guest-physical address (QEMU). */
function setRingAddr(c: VhostUserConnection, r: DriverRing, log: boolean): void {
  c.request(FrontendRequest.SET_VRING_ADDR, {
    kind: 'vringAddr', index: r.index, flags: log ? VRING_F_LOG : 0,
    descUser: BigInt(r.descDev), usedUser: BigInt(r.usedDev), availUser: BigInt(r.availDev),
    logGuest: log ? BigInt(r.layout.usedAddr) : 0n,
  });
}

/**
 * SET_LOG_BASE (LOG_SHMFD): the log's memfd, its size and offset 0. The back-end always
 * replies (serve: u64 0; DPDK's vhost: an empty payload, as QEMU expects); a non-zero u64 is a refusal.
 */
export function setLogBase(c: VhostUserConnection, log: FrontendDirtyLog): void {
  const reply = c.request(FrontendRequest.SET_LOG_BASE, { kind: 'log', size: BigInt(log.size), offset: 0n }, [log.memfd]);
  if (reply !== null && reply.kind === 'u64' && reply.value !== 0n) {
    throw new Error(`SET_LOG_BASE refused by the back-end (${reply.value})`);
  }
}

/**
 * A migration's start (on) or end (off), after setLogBase(): SET_FEATURES with or without
 * LOG_ALL, then each ring's addresses again with or without VHOST_VRING_F_LOG (QEMU's
 * vhost_dev_set_log()). Returns the features now negotiated.
 */
export function setLogging(c: VhostUserConnection, negotiated: Negotiated, rings: DriverRing[], on: boolean): Negotiated {
  const logAll = featureMask(VirtioFeature.LOG_ALL);
  const features = on ? negotiated.features | logAll : negotiated.features & ~logAll;
  c.request(FrontendRequest.SET_FEATURES, { kind: 'u64', value: features });
  for (const r of rings) setRingAddr(c, r, on);
  return { ...negotiated, features };
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

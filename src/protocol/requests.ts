/**
 * Request numbers of both channels and, per request, what travels with it: which payload
 * kinds the request and its reply may carry, and how many fds. Numbers and payloads follow
 * QEMU docs/interop/vhost-user.rst; where QEMU's own code differs from the text, the code wins
 * because that is what arrives on the socket (noted per entry).
 */
import { FIXED_SIZES, MEM_TABLE_HEADER_SIZE, CONFIG_HEADER_SIZE, VRING_NOFD_FLAG, type Body, type BodyKind } from './bodies.js';

/** 'frontend' = the main socket (front-end requests, back-end replies); 'backend' = the back-end channel. */
export type Channel = 'frontend' | 'backend';

/** Requests the front-end (QEMU) sends to the back-end on the main socket. */
export enum FrontendRequest {
  /** Read the back-end's virtio feature bits (reply u64). */
  GET_FEATURES = 1,
  /** Enable virtio feature bits (u64). */
  SET_FEATURES = 2,
  /** Session start: the sender owns the back-end. */
  SET_OWNER = 3,
  /** Deprecated; disable all rings at most. */
  RESET_OWNER = 4,
  /** Guest memory map: regions + one fd per region. */
  SET_MEM_TABLE = 5,
  /** Dirty-log shared memory: size/offset + fd (reply when LOG_SHMFD). */
  SET_LOG_BASE = 6,
  /** Eventfd to signal log updates. */
  SET_LOG_FD = 7,
  /** Ring size. */
  SET_VRING_NUM = 8,
  /** Ring addresses (user addresses, or IOVAs with ACCESS_PLATFORM). */
  SET_VRING_ADDR = 9,
  /** Next available index to process (packed: both indices and wrap counters). */
  SET_VRING_BASE = 10,
  /** Stop the ring and return its base (reply vring state). */
  GET_VRING_BASE = 11,
  /** Kick eventfd; u64 = index | NOFD(0x100). */
  SET_VRING_KICK = 12,
  /** Call eventfd; u64 = index | NOFD(0x100). */
  SET_VRING_CALL = 13,
  /** Error eventfd; u64 = index | NOFD(0x100). */
  SET_VRING_ERR = 14,
  /** Read the protocol feature bits (reply u64). */
  GET_PROTOCOL_FEATURES = 15,
  /** Enable protocol feature bits (u64). */
  SET_PROTOCOL_FEATURES = 16,
  /** How many queues the back-end supports (reply u64). */
  GET_QUEUE_NUM = 17,
  /** Enable (num=1) or disable (num=0) a ring. */
  SET_VRING_ENABLE = 18,
  /** Broadcast a RARP for the MAC in the u64's first 6 bytes. */
  SEND_RARP = 19,
  /** Host MTU (u64). */
  NET_SET_MTU = 20,
  /** Socket for the back-end channel. */
  SET_BACKEND_REQ_FD = 21,
  /** Device IOTLB update/invalidate (reply u64 ack). */
  IOTLB_MSG = 22,
  /** Legacy ring endianness: num 0 little, 1 big. */
  SET_VRING_ENDIAN = 23,
  /** Read config space (reply config; empty payload = error). */
  GET_CONFIG = 24,
  /** Write config space. */
  SET_CONFIG = 25,
  /** Crypto session setup (opaque; reply opaque). */
  CREATE_CRYPTO_SESSION = 26,
  /** Close a crypto session (u64 id). */
  CLOSE_CRYPTO_SESSION = 27,
  /** Postcopy starting: reply carries a userfaultfd. */
  POSTCOPY_ADVISE = 28,
  /** Switch to postcopy mode. */
  POSTCOPY_LISTEN = 29,
  /** Postcopy finished (reply u64). */
  POSTCOPY_END = 30,
  /** Ask for an inflight-tracking buffer (reply inflight + fd). */
  GET_INFLIGHT_FD = 31,
  /** Hand the inflight buffer back after reconnect (+ fd). */
  SET_INFLIGHT_FD = 32,
  /** vhost-user-gpu socket (+ fd). */
  GPU_SET_SOCKET = 33,
  /** Disable all rings and reset device state. */
  RESET_DEVICE = 34,
  /** In-band kick (vring state, num reserved 0). */
  VRING_KICK = 35,
  /** Most memory slots the back-end supports (reply u64). */
  GET_MAX_MEM_SLOTS = 36,
  /** Map one more region (+ fd). */
  ADD_MEM_REG = 37,
  /** Unmap a region (0 fds; 1 tolerated, must be closed). */
  REM_MEM_REG = 38,
  /** Virtio device status (u64). */
  SET_STATUS = 39,
  /** Read virtio device status (reply u64). */
  GET_STATUS = 40,
  /** Fetch a dma-buf by UUID (reply: fd or none). */
  GET_SHARED_OBJECT = 41,
  /** Migration state channel (+ fd; reply u64, maybe + fd). */
  SET_DEVICE_STATE_FD = 42,
  /** Was the state transfer processed? (reply u64). */
  CHECK_DEVICE_STATE = 43,
  /** Shared memory region sizes (reply nregions + 256 u64 sizes). */
  GET_SHMEM_CONFIG = 44,
}

/** Requests the back-end sends to the front-end on the back-end channel. */
export enum BackendRequest {
  /** IOTLB miss or access failure. */
  IOTLB_MSG = 1,
  /** Config space changed; front-end should GET_CONFIG. */
  CONFIG_CHANGE_MSG = 2,
  /** Map (fd) or unmap (NOFD) a queue's host notifier page. */
  VRING_HOST_NOTIFIER_MSG = 3,
  /** In-band call (vring state). */
  VRING_CALL = 4,
  /** In-band error (vring state). */
  VRING_ERR = 5,
  /** Export a shared object UUID. */
  SHARED_OBJECT_ADD = 6,
  /** Withdraw a shared object UUID. */
  SHARED_OBJECT_REMOVE = 7,
  /** Look up a shared object (reply u64 + fd on success). */
  SHARED_OBJECT_LOOKUP = 8,
  /** Map an fd into a VIRTIO shared memory region (+ fd). */
  SHMEM_MAP = 9,
  /** Unmap from a VIRTIO shared memory region. */
  SHMEM_UNMAP = 10,
}

/** A payload alternative; `size` pins 'raw' payloads whose layout we do not model. */
export interface Shape {
  kind: BodyKind;
  size?: number;
}

/** [min, max] fds allowed given the decoded body. */
export type FdRule = (body: Body) => readonly [number, number];

export interface RequestInfo {
  name: string;
  request: readonly Shape[];
  reply: readonly Shape[];
  fds: FdRule;
  replyFds: FdRule;
  /** Replied to even without NEED_REPLY (the spec's list plus every GET_*). */
  alwaysReplies: boolean;
}

const NO_FDS: FdRule = () => [0, 0];
const ONE_FD: FdRule = () => [1, 1];
const OPTIONAL_FD: FdRule = () => [0, 1];
const PER_REGION: FdRule = (b) => (b.kind === 'memTable' ? [b.regions.length, b.regions.length] : [0, 0]);
/** Kick/call/err and host notifiers: an fd unless bit 8 of the u64 says there is none. */
const UNLESS_NOFD: FdRule = (b) => {
  const word = b.kind === 'u64' ? b.value : b.kind === 'vringArea' ? b.u64 : 0n;
  return (word & BigInt(VRING_NOFD_FLAG)) !== 0n ? [0, 0] : [1, 1];
};
/** ADD/REM_MEM_REG: QEMU's postcopy ack reuses the request number with a u64 and no fd. */
const REGION_FD = (withRegion: readonly [number, number]): FdRule => (b) => (b.kind === 'memRegion' ? withRegion : [0, 0]);
/** GET_INFLIGHT_FD reply: QEMU only takes the fd when mmap size is non-zero. */
const IF_MMAP: FdRule = (b) => (b.kind === 'inflight' && b.mmapSize !== 0n ? [1, 1] : [0, 0]);
/** SET_DEVICE_STATE_FD reply: fd iff success (bits 0-7 zero) and NOFD clear. */
const DEVICE_STATE_REPLY: FdRule = (b) =>
  b.kind === 'u64' && (b.value & 0xffn) === 0n && (b.value & BigInt(VRING_NOFD_FLAG)) === 0n ? [1, 1] : [0, 0];

const s = (kind: BodyKind, size?: number): Shape => (size === undefined ? { kind } : { kind, size });
const ACK = [s('u64')] as const;

interface Entry {
  request: Shape[];
  reply?: Shape[];
  fds?: FdRule;
  replyFds?: FdRule;
  always?: boolean;
}

const FRONTEND: Record<FrontendRequest, Entry> = {
  [FrontendRequest.GET_FEATURES]: { request: [s('none')], reply: [s('u64')], always: true },
  [FrontendRequest.SET_FEATURES]: { request: [s('u64')] },
  [FrontendRequest.SET_OWNER]: { request: [s('none')] },
  [FrontendRequest.RESET_OWNER]: { request: [s('none')] },
  // Postcopy: the back-end replies with its mapping bases; otherwise a REPLY_ACK u64.
  [FrontendRequest.SET_MEM_TABLE]: { request: [s('memTable')], reply: [s('u64'), s('memTable')], fds: PER_REGION },
  // The spec text says u64, but QEMU, DPDK and rust-vmm all send the 16-byte log description;
  // QEMU's reply check ignores the payload and DPDK replies with an empty one.
  [FrontendRequest.SET_LOG_BASE]: { request: [s('log')], reply: [s('none'), s('u64')], fds: ONE_FD, always: true },
  [FrontendRequest.SET_LOG_FD]: { request: [s('none')], fds: ONE_FD },
  [FrontendRequest.SET_VRING_NUM]: { request: [s('vringState')] },
  [FrontendRequest.SET_VRING_ADDR]: { request: [s('vringAddr')] },
  [FrontendRequest.SET_VRING_BASE]: { request: [s('vringState')] },
  [FrontendRequest.GET_VRING_BASE]: { request: [s('vringState')], reply: [s('vringState')], always: true },
  [FrontendRequest.SET_VRING_KICK]: { request: [s('u64')], fds: UNLESS_NOFD },
  [FrontendRequest.SET_VRING_CALL]: { request: [s('u64')], fds: UNLESS_NOFD },
  [FrontendRequest.SET_VRING_ERR]: { request: [s('u64')], fds: UNLESS_NOFD },
  [FrontendRequest.GET_PROTOCOL_FEATURES]: { request: [s('none')], reply: [s('u64')], always: true },
  [FrontendRequest.SET_PROTOCOL_FEATURES]: { request: [s('u64')] },
  [FrontendRequest.GET_QUEUE_NUM]: { request: [s('none')], reply: [s('u64')], always: true },
  [FrontendRequest.SET_VRING_ENABLE]: { request: [s('vringState')] },
  [FrontendRequest.SEND_RARP]: { request: [s('u64')] },
  [FrontendRequest.NET_SET_MTU]: { request: [s('u64')] },
  [FrontendRequest.SET_BACKEND_REQ_FD]: { request: [s('none')], fds: ONE_FD },
  [FrontendRequest.IOTLB_MSG]: { request: [s('iotlb')], always: true },
  [FrontendRequest.SET_VRING_ENDIAN]: { request: [s('vringState')] },
  [FrontendRequest.GET_CONFIG]: { request: [s('config')], reply: [s('none'), s('config')], always: true },
  [FrontendRequest.SET_CONFIG]: { request: [s('config')] },
  [FrontendRequest.CREATE_CRYPTO_SESSION]: { request: [s('raw')], reply: [s('raw')], always: true },
  [FrontendRequest.CLOSE_CRYPTO_SESSION]: { request: [s('u64')] },
  [FrontendRequest.POSTCOPY_ADVISE]: { request: [s('none')], reply: [s('none')], replyFds: ONE_FD, always: true },
  [FrontendRequest.POSTCOPY_LISTEN]: { request: [s('none')] },
  [FrontendRequest.POSTCOPY_END]: { request: [s('none')], always: true },
  [FrontendRequest.GET_INFLIGHT_FD]: { request: [s('inflight')], reply: [s('inflight')], replyFds: IF_MMAP, always: true },
  [FrontendRequest.SET_INFLIGHT_FD]: { request: [s('inflight')], fds: ONE_FD },
  [FrontendRequest.GPU_SET_SOCKET]: { request: [s('none')], fds: ONE_FD },
  [FrontendRequest.RESET_DEVICE]: { request: [s('none')] },
  [FrontendRequest.VRING_KICK]: { request: [s('vringState')] },
  [FrontendRequest.GET_MAX_MEM_SLOTS]: { request: [s('none')], reply: [s('u64')], always: true },
  [FrontendRequest.ADD_MEM_REG]: { request: [s('memRegion'), s('u64')], reply: [s('u64'), s('memRegion')], fds: REGION_FD([1, 1]) },
  // The spec allows (and QEMU once sent) one stray fd; accept it so the caller can close it.
  [FrontendRequest.REM_MEM_REG]: { request: [s('memRegion'), s('u64')], reply: [s('u64'), s('memRegion')], fds: REGION_FD([0, 1]) },
  [FrontendRequest.SET_STATUS]: { request: [s('status')] },
  [FrontendRequest.GET_STATUS]: { request: [s('none')], reply: [s('status')], always: true },
  // QEMU fills the UUID but leaves hdr.size at 0, so an empty request must decode too.
  [FrontendRequest.GET_SHARED_OBJECT]: { request: [s('sharedObject'), s('none')], reply: [s('none'), s('u64')], replyFds: OPTIONAL_FD, always: true },
  [FrontendRequest.SET_DEVICE_STATE_FD]: { request: [s('deviceState')], fds: ONE_FD, replyFds: DEVICE_STATE_REPLY, always: true },
  [FrontendRequest.CHECK_DEVICE_STATE]: { request: [s('none')], always: true },
  // VhostUserShMemConfig: u32 nregions, u32 padding, u64 sizes[256]; kept opaque.
  [FrontendRequest.GET_SHMEM_CONFIG]: { request: [s('none')], reply: [s('raw', 8 + 256 * 8)], always: true },
};

const BACKEND: Record<BackendRequest, Entry> = {
  [BackendRequest.IOTLB_MSG]: { request: [s('iotlb')] },
  [BackendRequest.CONFIG_CHANGE_MSG]: { request: [s('none')] },
  [BackendRequest.VRING_HOST_NOTIFIER_MSG]: { request: [s('vringArea')], fds: UNLESS_NOFD },
  [BackendRequest.VRING_CALL]: { request: [s('vringState')] },
  [BackendRequest.VRING_ERR]: { request: [s('vringState')] },
  [BackendRequest.SHARED_OBJECT_ADD]: { request: [s('sharedObject')] },
  [BackendRequest.SHARED_OBJECT_REMOVE]: { request: [s('sharedObject')] },
  [BackendRequest.SHARED_OBJECT_LOOKUP]: { request: [s('sharedObject')], replyFds: OPTIONAL_FD, always: true },
  // VhostUserMMap: u8 shmid, 7 padding, u64 fd_offset, shm_offset, len, flags; kept opaque.
  [BackendRequest.SHMEM_MAP]: { request: [s('raw', 40)], fds: ONE_FD },
  [BackendRequest.SHMEM_UNMAP]: { request: [s('raw', 40)] },
};

function build<E extends number>(names: Record<number, string>, entries: Record<E, Entry>): Map<number, RequestInfo> {
  const out = new Map<number, RequestInfo>();
  for (const [key, e] of Object.entries(entries) as [string, Entry][]) {
    const n = Number(key);
    out.set(n, {
      name: names[n]!,
      request: e.request,
      reply: e.reply ?? [...ACK],
      fds: e.fds ?? NO_FDS,
      replyFds: e.replyFds ?? NO_FDS,
      alwaysReplies: e.always ?? false,
    });
  }
  return out;
}

const TABLES: Record<Channel, Map<number, RequestInfo>> = {
  frontend: build(FrontendRequest, FRONTEND),
  backend: build(BackendRequest, BACKEND),
};

/** What the spec says travels with a request, or undefined for numbers it does not define. */
export function requestInfo(channel: Channel, request: number): RequestInfo | undefined {
  return TABLES[channel].get(request);
}

/** "SET_MEM_TABLE", or "unknown (N)" for numbers the channel does not define. */
export function requestName(channel: Channel, request: number): string {
  return requestInfo(channel, request)?.name ?? `unknown (${request})`;
}

/** Every request number defined for a channel, ascending. */
export function knownRequests(channel: Channel): number[] {
  return [...TABLES[channel].keys()].sort((a, b) => a - b);
}

/** Whether a payload of `size` bytes can be this shape (memTable/config contents are checked by the reader). */
export function shapeFits(shape: Shape, size: number): boolean {
  if (shape.size !== undefined) return size === shape.size;
  switch (shape.kind) {
    case 'memTable':
      return size >= MEM_TABLE_HEADER_SIZE;
    case 'config':
      return size >= CONFIG_HEADER_SIZE;
    case 'raw':
      return true;
    default:
      return size === FIXED_SIZES[shape.kind];
  }
}

/** Human list of the sizes a set of shapes accepts, for error messages. */
export function describeShapes(shapes: readonly Shape[]): string {
  return shapes
    .map((sh) => {
      if (sh.size !== undefined) return `${sh.size} (${sh.kind})`;
      if (sh.kind === 'memTable') return `8+32n (memTable)`;
      if (sh.kind === 'config') return `12+n (config)`;
      if (sh.kind === 'raw') return 'any (raw)';
      return `${FIXED_SIZES[sh.kind]} (${sh.kind})`;
    })
    .join(' or ');
}

/** [min, max] fds a decoded message must carry; unknown requests may carry any number up to the cap. */
export function fdRange(channel: Channel, request: number, isReply: boolean, body: Body, cap: number): readonly [number, number] {
  const info = requestInfo(channel, request);
  if (!info) return [0, cap];
  return (isReply ? info.replyFds : info.fds)(body);
}

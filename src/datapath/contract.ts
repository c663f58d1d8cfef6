/**
 * What the control path (main thread) and a queue-pair worker say to each other.
 * Rare, ordered commands travel by postMessage; IOTLB updates and invalidations travel
 * through a shared-memory ring (iotlb-ring.ts) the worker drains between bursts; counters
 * live in shared memory (stats.ts) so `inspect` never costs the hot path anything.
 */

/**
 * A worker's default busy-poll budget beyond its first idle rounds (worker.ts) when it has a
 * CPU of its own: a vIOMMU guest's round trips (miss -> UPDATE) are then seen without a
 * wake-up across CPUs (strict guest 6 k -> 10 k pps). Without one (serve on fewer CPUs than
 * it has threads), 0: polling on would take the CPU from the threads it shares it with (a
 * DPDK front-end's lcore: 0.97x -> 0.8x). See docs/performance.md.
 */
export const DEFAULT_BUSY_POLL_US = 1000;

export type { NetMode } from '../net/endpoint.js';
import type { NetMode } from '../net/endpoint.js';
import type { SocketReturn } from './iotlb-fast-path.js';

export interface RegionConfig {
  fd: number;
  guestAddr: number;
  userAddr: number;
  size: number;
  mmapOffset: number;
}

/** SET_LOG_BASE's shared memory: the dirty bitmap at fd[offset, offset + size). */
export interface DirtyLogConfig {
  fd: number;
  offset: number;
  size: number;
}

export interface RingConfig {
  index: number;
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** The vhost-user ring base (packed: avail index|wrap<<15, used index|wrap<<15 in the upper half). */
  lastAvailIdx: number;
  /** -1 when the front-end polls (NOFD). */
  kickFd: number;
  /** -1 when the front-end wants no interrupts. */
  callFd: number;
}

/**
 * What a worker thread starts with. The queue pairs it serves arrive later, each with its
 * WorkerSetup ('add-pair'), and it serves them in turn, burst by burst (worker.ts).
 */
export interface ThreadSetup {
  /** Worker number (serve --workers), for thread names and logs. */
  worker: number;
  /** Eventfd the main thread writes to wake a sleeping worker. */
  wakeFd: number;
  /**
   * Int32 [0]: commands the main thread has posted. The worker visits its event loop (where
   * postMessage deliveries arrive) when this is ahead of what it received, not on every
   * few rounds: each visit costs a trip through libuv, which at full rate is time lost.
   */
  doorbell: SharedArrayBuffer;
  /** Microseconds the worker spins without work before it sleeps; < 0: it never sleeps. */
  busyPollUs: number;
  /** serve may run on fewer CPUs than it has threads that poll: an idle worker yields its CPU. */
  sharesCpu: boolean;
  /**
   * A worker whose TX ring waits on a miss yields its CPU on every idle round: when the
   * thread that reads the answers may need this CPU (the main thread, or the worker itself
   * when serve shares its CPUs). Not when a reader thread of its own reads them (worker.ts).
   */
  yieldWhileParked: boolean;
  /** CPUs this thread pins itself to (serve --cpus); empty: wherever the scheduler puts it. */
  cpus: number[];
  /** Float64 IdleSlot: how the thread idles, written by it, read for inspect without a message. */
  idle: SharedArrayBuffer;
}

/** ThreadSetup.idle's slots. */
export const IdleSlot = {
  /** The poll window of the thread's next idle spell, µs (poll-window.ts); -1: it never sleeps. */
  windowUs: 0,
  /** Times it slept in poll(2). */
  sleeps: 1,
} as const;
export const IDLE_SLOTS = 2;

/** One queue pair as its worker thread serves it. */
export interface WorkerSetup {
  pairIndex: number;
  net: NetMode;
  iommu: boolean;
  eventIdx: boolean;
  /** VIRTIO_F_RING_PACKED: packed virtqueues. */
  packed: boolean;
  mergeableRx: boolean;
  /** virtio-net header length: 12 with VERSION_1 or MRG_RXBUF, else 10. */
  headerLength: number;
  strategy: string;
  /** Socket of the backend channel, for IOTLB MISS requests; -1 if none. */
  backendFd: number;
  iotlbRing: SharedArrayBuffer;
  /** IOTLB operations the worker read off a lent front-end socket, back to the main thread (iotlb-fast-path.ts). */
  appliedRing: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** Batch misses: walk the rest of a burst and send every distinct miss at once. */
  batchMisses: boolean;
  /** net/offloads.ts TxOffload bits negotiated: what a guest header may ask of an endpoint that takes headers. */
  txOffloads: number;
  /** net/offloads.ts TunOffload flags: what a tap may hand this guest (partial checksums, segments). */
  rxOffloads: number;
  /** Bytes around a miss to ask for (0 = just the missing page). */
  prefetch: number;
  /**
   * Forget every cached translation after a burst that returned buffers to the driver
   * (serve --iotlb-reuse per-burst): a guest whose IOMMU flushes never reach us (Linux's lazy
   * mode under QEMU, docs/peers.md) may reuse an IOVA for a new page once its buffer is back.
   */
  forgetAfterBurst: boolean;
  /** Record translations into this shared ring for the trace writer (null = off). */
  translationRing: SharedArrayBuffer | null;
  /** process.hrtime (ns) of the trace's time zero (TraceWriter.startHrNs). */
  traceStartHrNs: number;
}

/** Commands for one queue pair of a worker thread. */
export type ToPair =
  | { type: 'memory'; regions: RegionConfig[] }
  | { type: 'start-ring'; ring: RingConfig }
  | { type: 'stop-ring'; index: number }
  | { type: 'set-call'; index: number; callFd: number }
  | { type: 'set-backend'; backendFd: number }
  | { type: 'snapshot'; entries: boolean }
  | { type: 'clear-iotlb'; index: number }
  /** Mark every write into guest memory in this log from the next round on (null: stop). */
  | { type: 'dirty-log'; log: DirtyLogConfig | null }
  /** Read plain IOTLB requests off the front-end socket until one is not (iotlb-fast-path.ts). */
  | { type: 'lend-socket'; fd: number }
  /** Give the lent socket back now (the session is closing). */
  | { type: 'return-socket' }
  /** The pair leaves this thread: its socket back, its memory unmapped. */
  | { type: 'remove-pair' };

export type ToWorker =
  | (ToPair & { pair: number; id: number })
  /** A queue pair to serve from now on. */
  | { type: 'add-pair'; setup: WorkerSetup; id: number }
  | { type: 'shutdown'; id: number };

export type FromWorker =
  | { type: 'done'; id: number; value?: unknown; error?: string }
  | { type: 'broken'; index: number; reason: string }
  | ({ type: 'socket-returned'; pair: number } & SocketReturn)
  | { type: 'log'; level: 'info' | 'warn' | 'error'; text: string };

export interface IotlbEntrySnapshot {
  iova: number;
  size: number;
  uaddr: number;
  perm: number;
}

export interface QueueSnapshot {
  index: number;
  size: number;
  started: boolean;
  broken: string | null;
  waitingForMapping: boolean;
  lastAvailIdx: number;
  availIdx: number;
  usedIdx: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** The pair's dirty log (the same on both of its queues): pages marked, writes it could not hold. */
  dirtyLog: { marks: number; outside: number } | null;
  iotlb: null | {
    strategy: string;
    stats: Record<string, number>;
    pendingMisses: number;
    entries: IotlbEntrySnapshot[];
  };
}

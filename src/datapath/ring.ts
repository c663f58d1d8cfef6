/**
 * One virtqueue as a queue-pair worker holds it: the ring format, its virtio-net queue and
 * counters, its IOTLB cache and pending-miss list, its fds, and whether it waits for a
 * mapping or for the answer to a miss (miss-policy.ts).
 */
import type { PendingMisses } from '../iotlb/pending-misses.js';
import type { IotlbStrategy } from '../iotlb/strategy.js';
import type { AddressSpace } from '../memory/address-space.js';
import { NetQueue } from '../net/virtio-net.js';
import type { LatencyHistogram } from '../stats/latency.js';
import { PackedQueue } from '../virtqueue/packed.js';
import type { VirtQueue } from '../virtqueue/queue.js';
import { SplitQueue } from '../virtqueue/split.js';
import type { RingConfig, WorkerSetup } from './contract.js';
import { missLatency, ringCounters } from './stats.js';

export class Ring {
  /** One kind per worker (the layout is negotiated per device), so its call sites stay monomorphic. */
  readonly queue: VirtQueue;
  readonly net: NetQueue;
  readonly counters: Float64Array;
  /** Miss sent -> covering UPDATE applied here, per parked ring (inspect's miss round trip). */
  readonly missLatency: LatencyHistogram;
  cache: IotlbStrategy | null = null;
  pending: PendingMisses | null = null;
  ringSpace!: AddressSpace;
  dataSpace!: AddressSpace;
  config: RingConfig | null = null;
  kickFd = -1;
  callFd = -1;
  running = false;
  waitingForMapping = false;
  /** Available count when notifications were last enabled, to tell new work from blocked work. */
  lastSeenAvail = 0;
  /**
   * A miss is outstanding: the ring is not retried (each retry is a cache walk) until an
   * UPDATE covering the address it stopped at arrives, or MISS_RETRY_MS pass, when the miss
   * is sent again — a real QEMU sends no UPDATE for an IOVA the guest has not mapped yet,
   * and does not announce later mappings. Other UPDATEs (the answers to a batch's later
   * misses, the other ring's) leave it parked: the chain at its head still misses.
   */
  missStalled = false;
  stalledAt = 0;
  stalledIova = 0;
  /** The used index when the cache was last forgotten (WorkerSetup.forgetAfterBurst). */
  usedWhenForgotten = 0;

  constructor(readonly index: number, setup: WorkerSetup, stats: SharedArrayBuffer) {
    this.counters = ringCounters(stats, index & 1);
    this.missLatency = missLatency(stats, index & 1);
    const isRx = (index & 1) === 0;
    this.queue = setup.packed ? new PackedQueue() : new SplitQueue();
    this.net = new NetQueue(this.queue, {
      headerLength: setup.headerLength, mergeable: isRx && setup.mergeableRx, counters: this.counters, txOffloads: isRx ? 0 : setup.txOffloads,
    });
  }
}

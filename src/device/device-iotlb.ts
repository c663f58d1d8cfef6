/**
 * The device's side of IOTLB_MSG: UPDATE and INVALIDATE handed to every worker under their
 * ack rules (docs/architecture.md, "IOTLB updates without locks"), the main thread's shadow
 * of every live mapping, and lending the front-end socket to a worker that reads them itself.
 */
import { IotlbOp } from '../datapath/iotlb-ring.js';
import type { QueuePairHost } from '../datapath/queue-pair-host.js';
import type { SocketReturn } from '../datapath/iotlb-fast-path.js';
import { getStrategy } from '../iotlb/registry.js';
import type { IotlbStrategy } from '../iotlb/strategy.js';
import { LatencyHistogram } from '../stats/latency.js';
import type { QueuePairs, WorkerOptions } from './queue-pairs.js';
import { IotlbReaderThread } from './iotlb-reader.js';

/**
 * Which thread reads IOTLB UPDATE/INVALIDATE requests while the rings run. `worker`: the
 * queue-pair worker, from the socket the session lends it (datapath/iotlb-fast-path.ts):
 * no hop between threads, which matters when they share a CPU. `thread`: a thread of its own
 * blocking in poll(2) (iotlb-reader-thread.ts), lent the socket the same way. `control`: the
 * session on the main thread, as every other request. `auto`: worker when serve has fewer
 * CPUs than threads that poll, else thread (measured in docs/performance.md).
 */
export const IOTLB_READERS = ['auto', 'worker', 'thread', 'control'] as const;
export type IotlbReader = (typeof IOTLB_READERS)[number];
export type ResolvedIotlbReader = Exclude<IotlbReader, 'auto'>;

export type DeviceIotlbOptions = Pick<WorkerOptions, 'queuePairs' | 'forgetAfterBurst' | 'log'>;

export class DeviceIotlb {
  /**
   * Every live IOTLB mapping, kept on the main thread so a worker started later is seeded
   * with what the front-end already sent, and so `inspect` can show the device's view.
   */
  readonly shadow: IotlbStrategy = getStrategy('interval').create({ capacity: 1 << 20 });
  /** Where workers report what they applied from a lent socket. */
  readonly applied = {
    update: (iova: number, size: number, uaddr: number, perm: number) => this.shadow.insert({ iova, size, uaddr, perm }),
    invalidate: (iova: number, size: number) => this.shadow.invalidate(iova, size),
  };

  /** The reader thread (--iotlb-reader thread), started once the IOMMU is negotiated (or at the first lend). */
  private readerThread: IotlbReaderThread | null = null;
  /** What reader threads of earlier connections acknowledged. */
  private readonly pastReaderAcks = { update: new LatencyHistogram(), invalidate: new LatencyHistogram() };

  constructor(private readonly options: DeviceIotlbOptions, private readonly workers: QueuePairs) {}

  /**
   * Said once per negotiation: no message tells a back-end which guests flush lazily, so the
   * log names what the reuse mode means for one (docs/peers.md).
   */
  negotiated(): void {
    this.options.log('info', this.options.forgetAfterBurst
      ? 'IOMMU negotiated: translations forgotten after every burst that returned buffers (--iotlb-reuse per-burst)'
      : 'IOMMU negotiated: translations kept until invalidated; behind QEMU before 8.0, a Linux guest in its default lazy IOMMU mode needs --iotlb-reuse per-burst (or iommu.strict=1)');
    // Started now, so that it has booted (tens of ms) by the time the session first lends it the socket.
    if (this.workers.iotlbReader === 'thread') this.startReaderThread();
  }

  private startReaderThread(): IotlbReaderThread {
    return (this.readerThread ??= new IotlbReaderThread(this.applied, this.options.log));
  }

  /** A new worker starts with every mapping the front-end already sent. */
  async seed(pair: QueuePairHost): Promise<void> {
    for (const entry of this.shadow.entries()) {
      await pair.pushIotlbOp(IotlbOp.Update, entry.iova, entry.size, entry.uaddr, entry.perm);
    }
  }

  /**
   * An UPDATE is acknowledged as soon as every worker has it queued: a lookup that runs before
   * the worker applies it only misses again (and the pending-miss list keeps that miss from
   * being re-sent), so waiting would only add a worker round trip to every answered miss —
   * the latency that makes dynamic mappings slow. INVALIDATE, below, must wait.
   * Both return synchronously (no promise, no event-loop turn) unless a worker's ring is
   * full or a worker is stuck inside a burst: they sit on the path of every guest DMA map.
   */
  update(iova: number, size: number, uaddr: number, perm: number): Promise<void> | void {
    let slow: Array<Promise<number>> | null = null;
    for (const pair of this.workers.values()) {
      if (pair.tryPushIotlbOp(IotlbOp.Update, iova, size, uaddr, perm) < 0) {
        (slow ??= []).push(pair.pushIotlbOp(IotlbOp.Update, iova, size, uaddr, perm));
      }
    }
    // After the workers have it: a parked ring resumes while this thread updates its shadow.
    this.shadow.insert({ iova, size, uaddr, perm });
    if (slow !== null) return Promise.all(slow).then(() => undefined);
  }

  /** Returns (or resolves) only when every worker has dropped the range: the caller acks after this. */
  invalidate(iova: number, size: number): Promise<void> | void {
    this.shadow.invalidate(iova, size);
    // Every worker gets the operation before any is waited for: their bursts end in parallel.
    // The sequences go into a reused array (this runs for every guest DMA unmap); the second
    // walk meets the workers in the same order, the map being untouched in between.
    const seqs = this.invalidateSeqs;
    seqs.length = 0;
    for (const pair of this.workers.values()) seqs.push(pair.tryPushIotlbOp(IotlbOp.Invalidate, iova, size, 0, 0));
    let slow: Array<Promise<void>> | null = null;
    let i = 0;
    for (const pair of this.workers.values()) {
      const seq = seqs[i++]!;
      if (seq >= 0 && pair.appliedNow(seq)) continue;
      (slow ??= []).push(this.waitApplied(pair, seq, iova, size));
    }
    if (slow !== null) return Promise.all(slow).then(() => undefined);
  }

  private readonly invalidateSeqs: number[] = [];

  /** An INVALIDATE this worker has not applied yet (or had no room for): waits until it has. */
  private async waitApplied(pair: QueuePairHost, seq: number, iova: number, size: number): Promise<void> {
    const s = seq >= 0 ? seq : await pair.pushIotlbOp(IotlbOp.Invalidate, iova, size, 0, 0);
    await pair.waitApplied(s);
  }

  /**
   * SET_FEATURES with no ring running is QEMU starting the device (vhost_dev_start; after a
   * guest reboot or driver reload too, on the same connection and often with no new memory
   * table). The guest's IOMMU starts over then, so translations learnt before would map its
   * new IOVAs to old pages, and QEMU invalidates none of them: they go, as DPDK drops its
   * cache on a new memory table. (Idle workers were just retired: the shadow is all there is.)
   */
  forgetIfStopped(): void {
    if (this.workers.anyRunning || this.shadow.stats.entries === 0) return;
    this.shadow.clear();
  }

  /** inspect --clear-iotlb: empties one ring's cache (the shadow keeps its mappings). */
  async clear(index: number): Promise<void> {
    const pair = this.workers.get(index >> 1);
    if (pair) await pair.clearIotlb(index);
  }

  /**
   * Whether the session may lend its socket to the worker or the reader thread, which then
   * reads and acks IOTLB requests itself (datapath/iotlb-fast-path.ts): when --iotlb-reader
   * says so, and not without IOMMU_PLATFORM (there are none), not while a trace records every
   * message on the main thread, not before a worker exists; to the worker, not with several
   * queue pairs (every worker needs each request; the reader thread queues it for each).
   */
  lendable(iommu: boolean, tracing: boolean): boolean {
    const reader = this.workers.iotlbReader;
    if (reader === 'control' || !iommu || tracing) return false;
    if (reader === 'thread') return this.workers.size > 0 && !this.readerThread?.socketLent && this.readerThread?.usable !== false;
    if (this.options.queuePairs !== 1 || this.workers.size !== 1) return false;
    return !this.workers.values().next().value!.socketLent;
  }

  /** Lends the socket (the caller checked lendable); resolves when the worker or reader thread gives it back. */
  lend(fd: number): Promise<SocketReturn> {
    if (this.workers.iotlbReader === 'thread') return this.startReaderThread().lend(fd, [...this.workers.values()]);
    return this.workers.values().next().value!.lendSocket(fd);
  }

  /** Asks for a lent socket back (the session is closing). */
  reclaim(): void {
    this.readerThread?.reclaim();
    for (const pair of this.workers.values()) pair.reclaimSocket();
  }

  /** IOTLB requests reader threads acknowledged: read -> ack sent, over the life of this device. */
  readerAckLatency(invalidate: boolean): LatencyHistogram {
    const all = new LatencyHistogram();
    all.add(invalidate ? this.pastReaderAcks.invalidate : this.pastReaderAcks.update);
    if (this.readerThread) all.add(this.readerThread.ackLatency(invalidate));
    return all;
  }

  /** Stops the reader thread, if any, taking the socket back first (its counts stay for inspect). */
  async closeReader(): Promise<void> {
    const reader = this.readerThread;
    if (reader === null) return;
    this.readerThread = null;
    await reader.close();
    this.pastReaderAcks.update.add(reader.ackLatency(false));
    this.pastReaderAcks.invalidate.add(reader.ackLatency(true));
  }
}

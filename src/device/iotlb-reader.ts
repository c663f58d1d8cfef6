/**
 * The main thread's handle on the IOTLB reader thread (iotlb-reader-thread.ts, `serve
 * --iotlb-reader thread`): started once the IOMMU is negotiated, it reads the front-end socket whenever
 * the session lends it, and gives it back at a message boundary for anything but a plain
 * IOTLB request. What it applied comes back through a ring into the device's shadow; its
 * acks' round trips are read from shared memory by inspect.
 *
 * Single producer: while the socket is lent only the thread pushes into the workers' IOTLB
 * rings (the main thread reads no request, and workers start or stop only on requests it
 * handles after the socket is back), so the rings keep one producer at a time.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { SocketReturn } from '../datapath/iotlb-fast-path.js';
import { createIotlbRing, IotlbRingConsumer, type IotlbOpSink } from '../datapath/iotlb-ring.js';
import type { QueuePairHost } from '../datapath/queue-pair-host.js';
import { LatencyHistogram, LATENCY_SLOTS } from '../stats/latency.js';
import { closeFd, eventfdCreate, eventfdWrite } from '../sys/index.js';

const THREAD_URL = new URL('./iotlb-reader-thread.js', import.meta.url);
/** While the socket is lent, what the thread applied is collected this often (the ring holds 1024). */
const COLLECT_APPLIED_MS = 5;

export interface ReaderSetup {
  /** Written to ask for the socket back (with returnFlag set). */
  controlFd: number;
  returnFlag: SharedArrayBuffer;
  appliedRing: SharedArrayBuffer;
  /** Two latency histograms (UPDATE, INVALIDATE: read -> ack sent) of ackSlots doubles each. */
  acks: SharedArrayBuffer;
  ackSlots: number;
}

export interface ReaderLend {
  type: 'lend';
  fd: number;
  /** Each worker's IOTLB ring and the eventfd that wakes it. */
  rings: SharedArrayBuffer[];
  wakeFds: number[];
}

export type ReaderToHost = { type: 'returned' } & SocketReturn;

export class IotlbReaderThread {
  private readonly worker: Worker;
  private readonly setup: ReaderSetup;
  private readonly returnFlag: Int32Array;
  private readonly applied: IotlbRingConsumer;
  private readonly acks: { update: LatencyHistogram; invalidate: LatencyHistogram };
  private lent: { resolve(back: SocketReturn): void; timer: NodeJS.Timeout; back: Promise<SocketReturn> } | null = null;
  private exited = false;

  constructor(private readonly appliedSink: IotlbOpSink, onLog: (level: string, text: string) => void) {
    const acks = new SharedArrayBuffer(2 * LATENCY_SLOTS * 8);
    this.setup = { controlFd: eventfdCreate(0), returnFlag: new SharedArrayBuffer(4), appliedRing: createIotlbRing(), acks, ackSlots: LATENCY_SLOTS };
    this.returnFlag = new Int32Array(this.setup.returnFlag);
    this.applied = new IotlbRingConsumer(this.setup.appliedRing);
    this.acks = {
      update: new LatencyHistogram(new Float64Array(acks, 0, LATENCY_SLOTS)),
      invalidate: new LatencyHistogram(new Float64Array(acks, LATENCY_SLOTS * 8, LATENCY_SLOTS)),
    };
    this.worker = new Worker(fileURLToPath(THREAD_URL), { workerData: this.setup, name: 'iotlb-reader' });
    this.worker.on('message', (msg: ReaderToHost) => this.returned(msg));
    this.worker.on('error', (err) => onLog('error', `IOTLB reader thread failed: ${err.stack ?? err}`));
    this.worker.on('exit', () => {
      this.exited = true;
      this.returned({ type: 'returned', reason: 'the IOTLB reader thread exited', fatal: false });
    });
    // It serves a session, which keeps the process alive while it lasts; alone it should not.
    // (After the listeners: adding a 'message' listener refs the worker again.)
    this.worker.unref();
  }

  get socketLent(): boolean {
    return this.lent !== null;
  }

  get usable(): boolean {
    return !this.exited;
  }

  /** Lends the socket (the session stopped reading it); resolves when the thread gives it back. */
  lend(fd: number, pairs: ReadonlyArray<Pick<QueuePairHost, 'iotlbRing' | 'wakeFd'>>): Promise<SocketReturn> {
    if (this.lent) throw new Error('the IOTLB reader thread already holds a lent socket');
    let resolve!: (back: SocketReturn) => void;
    const back = new Promise<SocketReturn>((r) => (resolve = r));
    this.lent = { resolve, back, timer: setInterval(() => this.applied.drain(this.appliedSink), COLLECT_APPLIED_MS) };
    const lend: ReaderLend = { type: 'lend', fd, rings: pairs.map((p) => p.iotlbRing), wakeFds: pairs.map((p) => p.wakeFd) };
    this.worker.postMessage(lend);
    return back;
  }

  /** Asks for a lent socket back; lend's promise settles when the thread has let go of it. */
  reclaim(): void {
    if (!this.lent || this.exited) return;
    Atomics.store(this.returnFlag, 0, 1);
    eventfdWrite(this.setup.controlFd, 1);
  }

  /** IOTLB requests this thread acknowledged: read -> ack sent. */
  ackLatency(invalidate: boolean): LatencyHistogram {
    return invalidate ? this.acks.invalidate : this.acks.update;
  }

  /**
   * Takes the socket back if lent, then stops the thread: before the workers go, since it
   * writes their wake-up eventfds (a terminate cannot interrupt its poll(2), the eventfd can).
   */
  async close(): Promise<void> {
    const lent = this.lent;
    if (lent) {
      this.reclaim();
      await lent.back;
    }
    await this.worker.terminate();
    closeFd(this.setup.controlFd);
  }

  private returned(back: ReaderToHost): void {
    const lent = this.lent;
    if (!lent) return;
    this.lent = null;
    clearInterval(lent.timer);
    this.applied.drain(this.appliedSink);
    const { type: _type, ...socketReturn } = back;
    lent.resolve(socketReturn);
  }
}

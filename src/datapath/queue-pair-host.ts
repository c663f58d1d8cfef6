/**
 * The main thread's handle on one queue pair served by a worker thread (worker-thread.ts):
 * its shared buffers (IOTLB rings, counters, traced translations), its commands, the IOTLB
 * operations pushed through the shared ring, and the lending of the front-end socket.
 */
import type { DirtyLogConfig, QueueSnapshot, RegionConfig, RingConfig, ToPair, WorkerSetup } from './contract.js';
import { createIotlbRing, IotlbRingConsumer, IotlbRingProducer, type IotlbOpCode, type IotlbOpSink } from './iotlb-ring.js';
import type { SocketReturn } from './iotlb-fast-path.js';
import { createTranslationRing, SENT_REQUEST, TranslationRingConsumer } from './translation-ring.js';
import { encodeIotlbRequest } from './miss-reporter.js';
import type { TraceWriter } from '../trace/writer.js';
import { createStatsBuffer, missLatency, readCounters, workerAckLatency, type RingCounterName } from './stats.js';
import type { LatencyHistogram } from '../stats/latency.js';
import type { WorkerThread } from './worker-thread.js';

const COMMAND_TIMEOUT_MS = 5000;
/** While the socket is lent, what the worker applied is collected this often (the ring holds 1024). */
const COLLECT_APPLIED_MS = 5;

/** What the device decides for a queue pair; the host adds the shared buffers. */
export interface QueuePairOptions extends Omit<WorkerSetup, 'iotlbRing' | 'appliedRing' | 'stats' | 'translationRing' | 'traceStartHrNs'> {
  /** The trace to record translations into, or null. */
  trace: { writer: TraceWriter; connection: number } | null;
  /** Gets the IOTLB operations the worker applied from a lent socket, in order. */
  applied: IotlbOpSink;
}

export class QueuePairHost {
  readonly pairIndex: number;
  private readonly iotlb: IotlbRingProducer;
  /** The ring IOTLB operations reach the worker through (another thread may produce while it holds the lent socket). */
  readonly iotlbRing: SharedArrayBuffer;
  readonly stats: SharedArrayBuffer;
  private drainTranslations: (() => void) | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  private readonly applied: IotlbRingConsumer;
  private readonly appliedSink: IotlbOpSink;
  /** Set while the worker has the front-end socket: settles when it gives it back. */
  private lent: { resolve(back: SocketReturn): void; timer: NodeJS.Timeout } | null = null;
  /** Settles once the thread serves the pair; a failure is reported by the first command. */
  private readonly joined: Promise<void>;

  constructor(options: QueuePairOptions, readonly thread: WorkerThread) {
    this.pairIndex = options.pairIndex;
    const iotlbRing = createIotlbRing();
    this.iotlbRing = iotlbRing;
    this.iotlb = new IotlbRingProducer(iotlbRing);
    this.stats = createStatsBuffer();
    const appliedRing = createIotlbRing();
    this.applied = new IotlbRingConsumer(appliedRing);
    this.appliedSink = options.applied;
    const { trace: _trace, applied: _applied, ...decided } = options;
    const setup: WorkerSetup = { ...decided, iotlbRing, appliedRing, stats: this.stats, translationRing: null, traceStartHrNs: 0 };
    if (options.trace) {
      const { writer, connection } = options.trace;
      setup.translationRing = createTranslationRing();
      setup.traceStartHrNs = writer.startHrNs;
      const consumer = new TranslationRingConsumer(setup.translationRing);
      const sink = { translation: (t: number, q: number, iova: number, len: number, access: number, result: number) => {
        if (writer.isClosed) return;
        if (result < SENT_REQUEST) {
          writer.translation(t, connection, q, iova, len, access, result);
          return;
        }
        const bytes = encodeIotlbRequest(result - SENT_REQUEST, iova, access);
        writer.writeMessage({ timeNs: BigInt(t), connection, channel: 'backend', direction: 'to-frontend', bytes, fds: [] });
      } };
      this.drainTranslations = () => consumer.drain(sink);
      this.drainTimer = setInterval(this.drainTranslations, 20);
    }
    this.joined = thread.addPair(setup, { socketReturned: (back) => this.socketReturned(back) });
    this.joined.catch(() => undefined);
  }

  private get exited(): boolean {
    return this.thread.exited;
  }

  private async send<T>(command: ToPair): Promise<T> {
    await this.joined;
    return this.thread.send<T>(this.pairIndex, command);
  }

  /** Written (eventfd) to wake the worker thread from poll(). */
  get wakeFd(): number {
    return this.thread.wakeFd;
  }

  /** Interrupts the thread if it sleeps in poll(), so it reads its messages and IOTLB rings. */
  wake(): void {
    this.thread.wake();
  }

  setMemory(regions: RegionConfig[]): Promise<void> {
    return this.send({ type: 'memory', regions });
  }

  startRing(ring: RingConfig): Promise<void> {
    return this.send({ type: 'start-ring', ring });
  }

  /** Stops a ring and returns its last available index, for GET_VRING_BASE. */
  stopRing(index: number): Promise<number> {
    return this.send({ type: 'stop-ring', index });
  }

  setCall(index: number, callFd: number): Promise<void> {
    return this.send({ type: 'set-call', index, callFd });
  }

  setBackend(backendFd: number): Promise<void> {
    return this.send({ type: 'set-backend', backendFd });
  }

  snapshot(entries: boolean): Promise<QueueSnapshot[]> {
    return this.send({ type: 'snapshot', entries });
  }

  clearIotlb(index: number): Promise<void> {
    return this.send({ type: 'clear-iotlb', index });
  }

  /** Resolves once the worker marks every later write in `log` (null: stops marking). */
  setDirtyLog(log: DirtyLogConfig | null): Promise<void> {
    return this.send({ type: 'dirty-log', log });
  }

  /**
   * Lends the front-end socket to the worker (iotlb-fast-path.ts); the caller stops reading
   * it first. Resolves when the worker gives it back, with what it applied already collected.
   */
  lendSocket(fd: number): Promise<SocketReturn> {
    if (this.lent) throw new Error(`queue pair ${this.pairIndex} already holds a lent socket`);
    return new Promise<SocketReturn>((resolve) => {
      this.lent = { resolve, timer: setInterval(() => this.collectApplied(), COLLECT_APPLIED_MS) };
      this.send({ type: 'lend-socket', fd }).catch((err: Error) => this.socketReturned({ reason: err.message, fatal: false }));
    });
  }

  /** Asks the worker to give a lent socket back now; lendSocket's promise settles when it has. */
  reclaimSocket(): void {
    if (this.lent) this.send({ type: 'return-socket' }).catch(() => undefined);
  }

  get socketLent(): boolean {
    return this.lent !== null;
  }

  private socketReturned(back: SocketReturn): void {
    const lent = this.lent;
    if (!lent) return;
    this.lent = null;
    clearInterval(lent.timer);
    this.collectApplied();
    lent.resolve(back);
  }

  /** Moves what the worker applied from a lent socket to the main thread's sink. */
  private collectApplied(): void {
    this.applied.drain(this.appliedSink);
  }

  /** IOTLB requests the worker acknowledged itself: message seen -> ack sent. */
  workerAckLatency(invalidate: boolean): LatencyHistogram {
    return workerAckLatency(this.stats, invalidate);
  }

  counters(ringInPair: number): Record<RingCounterName, number> {
    return readCounters(this.stats, ringInPair);
  }

  missLatency(ringInPair: number): LatencyHistogram {
    return missLatency(this.stats, ringInPair);
  }

  /**
   * Queues an IOTLB operation and returns its sequence number, or -1 if the ring is full (the
   * worker is behind; pushIotlbOp waits for room). A sleeping worker is woken: a parked ring
   * may wait for this UPDATE; a spinning one sees it at its next step without a syscall.
   */
  tryPushIotlbOp(op: IotlbOpCode, iova: number, size: number, uaddr: number, perm: number): number {
    if (this.exited) return 0;
    const seq = this.iotlb.push(op, iova, size, uaddr, perm);
    if (seq >= 0 && this.iotlb.workerSleeping) this.wake();
    return seq;
  }

  /** tryPushIotlbOp that waits for room instead of failing; never drops an operation. */
  async pushIotlbOp(op: IotlbOpCode, iova: number, size: number, uaddr: number, perm: number): Promise<number> {
    let seq = this.tryPushIotlbOp(op, iova, size, uaddr, perm);
    while (seq < 0) {
      this.wake();
      await new Promise((r) => setTimeout(r, 1));
      seq = this.tryPushIotlbOp(op, iova, size, uaddr, perm);
    }
    return seq;
  }

  /**
   * True once no lookup of this worker can use what operations up to `seq` removed; blocks
   * for at most a burst in flight (iotlb-ring.ts). False means: use waitApplied.
   */
  appliedNow(seq: number): boolean {
    return this.exited || this.iotlb.waitAppliedSync(seq);
  }

  /** appliedNow for a worker stuck inside a step: waits on the event loop, throws on timeout. */
  async waitApplied(seq: number): Promise<void> {
    if (!(await this.iotlb.waitApplied(seq, COMMAND_TIMEOUT_MS)) && !this.exited) {
      throw new Error(`queue pair ${this.pairIndex}: IOTLB operation not applied within ${COMMAND_TIMEOUT_MS} ms`);
    }
  }

  /** The pair leaves its thread (the device shuts the thread down once it serves no pair). */
  async shutdown(): Promise<void> {
    if (!this.exited) {
      try {
        await this.thread.removePair(this.pairIndex);
      } catch {
        // the thread is gone or stuck: the device terminates it
      }
    }
    if (this.drainTimer) clearInterval(this.drainTimer);
    this.drainTranslations?.();
  }
}

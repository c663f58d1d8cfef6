/**
 * Translations recorded by a worker for `serve --trace`: a single-producer single-consumer ring
 * in shared memory that the main thread drains into the trace writer. When the writer falls
 * behind, records are dropped and counted rather than slowing the data path.
 */
const CAPACITY = 1 << 16; // records, power of two
const FIELDS = 6; // timeNs, queue, iova, length, access, result
const PRODUCED = 0;
const CONSUMED = 1;
const DROPPED = 2;
/** Longest time between two readings of the shared clock (see TranslationRingProducer). */
const SYNC_MS = 1;

export function createTranslationRing(): SharedArrayBuffer {
  return new SharedArrayBuffer(16 + CAPACITY * FIELDS * 8);
}

/** Result codes stored in the ring are the trace format's. */
export { TranslationResultCode as TranslationCode } from '../trace/format.js';

/**
 * Records with a result at or above SENT_REQUEST stand for an IOTLB request the worker sent on
 * the backend channel (code = SENT_REQUEST + IOTLB type); the main thread turns them into
 * message records, so a trace shows the misses beside the UPDATEs that answer them.
 */
export const SENT_REQUEST = 16;

export function sentRequestCode(iotlbType: number): number {
  return SENT_REQUEST + iotlbType;
}

export class TranslationRingProducer {
  private readonly counters: Int32Array;
  private readonly slots: Float64Array;
  /**
   * Records are stamped on the trace writer's clock (process.hrtime), which every thread
   * shares. Reading it allocates a bigint, so a record reads performance.now() and adds an
   * offset to hrtime measured at most every SYNC_MS: the two clocks drift apart by up to
   * 0.1% here (so the offset is re-measured, and is then off by 1 µs at most), and each
   * thread's performance.timeOrigin is its own reading of the wall clock, tens of µs off
   * the others' (stamping with it put misses after the UPDATEs that answered them).
   */
  private offsetNs = 0;
  private syncedAtMs = -Infinity;

  /** `startHrNs`: process.hrtime of the trace's time zero (TraceWriter.startHrNs). */
  constructor(buffer: SharedArrayBuffer, private readonly startHrNs: number) {
    this.counters = new Int32Array(buffer, 0, 4);
    this.slots = new Float64Array(buffer, 16, CAPACITY * FIELDS);
  }

  /** Now, in ns since the trace's time zero. */
  nowNs(): number {
    const now = performance.now();
    if (now - this.syncedAtMs > SYNC_MS) this.sync(now);
    return Math.round(now * 1e6 + this.offsetNs);
  }

  /**
   * Pairs an hrtime reading with the middle of the performance.now() readings around it,
   * keeping the tightest of a few pairs: a thread preempted between two readings would
   * otherwise shift every stamp of the next SYNC_MS by the length of the preemption.
   */
  private sync(now: number): void {
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const before = performance.now();
      const hr = Number(process.hrtime.bigint());
      const after = performance.now();
      if (after - before < best) {
        best = after - before;
        this.offsetNs = hr - this.startHrNs - ((before + after) / 2) * 1e6;
      }
    }
    this.syncedAtMs = now;
  }

  record(queue: number, iova: number, length: number, access: number, result: number, timeNs = this.nowNs()): void {
    const produced = this.counters[PRODUCED];
    if (((produced - Atomics.load(this.counters, CONSUMED)) | 0) >= CAPACITY) {
      this.counters[DROPPED]++;
      return;
    }
    const base = (produced & (CAPACITY - 1)) * FIELDS;
    this.slots[base] = timeNs;
    this.slots[base + 1] = queue;
    this.slots[base + 2] = iova;
    this.slots[base + 3] = length;
    this.slots[base + 4] = access;
    this.slots[base + 5] = result;
    Atomics.store(this.counters, PRODUCED, (produced + 1) | 0);
  }
}

export interface TranslationSink {
  translation(timeNs: number, queue: number, iova: number, length: number, access: number, result: number): void;
}

export class TranslationRingConsumer {
  private readonly counters: Int32Array;
  private readonly slots: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    this.counters = new Int32Array(buffer, 0, 4);
    this.slots = new Float64Array(buffer, 16, CAPACITY * FIELDS);
  }

  drain(sink: TranslationSink): number {
    const produced = Atomics.load(this.counters, PRODUCED);
    let consumed = this.counters[CONSUMED];
    let count = 0;
    while (consumed !== produced) {
      const base = (consumed & (CAPACITY - 1)) * FIELDS;
      const s = this.slots;
      sink.translation(Math.max(0, s[base]), s[base + 1], s[base + 2], s[base + 3], s[base + 4], s[base + 5]);
      consumed = (consumed + 1) | 0;
      count++;
    }
    Atomics.store(this.counters, CONSUMED, consumed);
    return count;
  }

  get dropped(): number {
    return Atomics.load(this.counters, DROPPED);
  }
}

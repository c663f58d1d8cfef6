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
  /** Wall-clock milliseconds of the trace's time zero (performance.timeOrigin-based, same in every thread). */
  private readonly originMs: number;

  constructor(buffer: SharedArrayBuffer, originMs: number) {
    this.counters = new Int32Array(buffer, 0, 4);
    this.slots = new Float64Array(buffer, 16, CAPACITY * FIELDS);
    this.originMs = originMs;
  }

  record(queue: number, iova: number, length: number, access: number, result: number): void {
    const produced = this.counters[PRODUCED];
    if (((produced - Atomics.load(this.counters, CONSUMED)) | 0) >= CAPACITY) {
      this.counters[DROPPED]++;
      return;
    }
    const base = (produced & (CAPACITY - 1)) * FIELDS;
    this.slots[base] = Math.round((performance.timeOrigin + performance.now() - this.originMs) * 1e6);
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

/**
 * A single-producer single-consumer ring in shared memory carrying IOTLB updates and
 * invalidations from the main thread (producer) to one queue-pair worker (consumer).
 *
 * Why not postMessage: a busy worker only reaches its event loop now and then, while this
 * ring is checked at the start of every burst with one Atomics.load. The worker publishes
 * how far it has applied (`consumed`); the main thread acknowledges an INVALIDATE to the
 * front-end only after `consumed` has passed it, so no lookup after the ack can use a
 * stale entry — and the hot path takes no lock.
 */

export const IotlbOp = { Update: 1, Invalidate: 2, Clear: 3 } as const;

const CAPACITY = 1024; // power of two
const SLOT_DOUBLES = 5; // op, iova, size, uaddr, perm
const PRODUCED = 0;
const CONSUMED = 1;
const HEADER_INTS = 2;

export function createIotlbRing(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_INTS * 4 + 8 /* align */ + CAPACITY * SLOT_DOUBLES * 8);
}

function views(buffer: SharedArrayBuffer): { counters: Int32Array; slots: Float64Array } {
  return {
    counters: new Int32Array(buffer, 0, HEADER_INTS),
    slots: new Float64Array(buffer, 16, CAPACITY * SLOT_DOUBLES),
  };
}

export class IotlbRingProducer {
  private readonly counters: Int32Array;
  private readonly slots: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    ({ counters: this.counters, slots: this.slots } = views(buffer));
  }

  /** Queues one operation; returns its sequence number, or -1 when the ring is full. */
  push(op: number, iova: number, size: number, uaddr: number, perm: number): number {
    const produced = Atomics.load(this.counters, PRODUCED);
    const consumed = Atomics.load(this.counters, CONSUMED);
    if (((produced - consumed) | 0) >= CAPACITY) return -1;
    const base = (produced & (CAPACITY - 1)) * SLOT_DOUBLES;
    this.slots[base] = op;
    this.slots[base + 1] = iova;
    this.slots[base + 2] = size;
    this.slots[base + 3] = uaddr;
    this.slots[base + 4] = perm;
    const next = (produced + 1) | 0;
    Atomics.store(this.counters, PRODUCED, next); // publishes the slot writes above
    return next;
  }

  /** Resolves once the worker has applied every operation up to `sequence`. */
  async waitApplied(sequence: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const consumed = Atomics.load(this.counters, CONSUMED);
      if (((consumed - sequence) | 0) >= 0) return true;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      const waited = Atomics.waitAsync(this.counters, CONSUMED, consumed, left);
      if (waited.async) await waited.value;
    }
  }

  get backlog(): number {
    return (Atomics.load(this.counters, PRODUCED) - Atomics.load(this.counters, CONSUMED)) | 0;
  }
}

export interface IotlbOpSink {
  update(iova: number, size: number, uaddr: number, perm: number): void;
  invalidate(iova: number, size: number): void;
  clear(): void;
}

export class IotlbRingConsumer {
  private readonly counters: Int32Array;
  private readonly slots: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    ({ counters: this.counters, slots: this.slots } = views(buffer));
  }

  /** True when operations are waiting: one atomic load, cheap enough for every burst. */
  hasWork(): boolean {
    return Atomics.load(this.counters, PRODUCED) !== this.counters[CONSUMED];
  }

  /** Applies every queued operation to `sink`, then publishes progress and wakes waiters. */
  drain(sink: IotlbOpSink): number {
    const produced = Atomics.load(this.counters, PRODUCED);
    let consumed = this.counters[CONSUMED];
    let applied = 0;
    while (consumed !== produced) {
      const base = (consumed & (CAPACITY - 1)) * SLOT_DOUBLES;
      const op = this.slots[base];
      if (op === IotlbOp.Update) {
        sink.update(this.slots[base + 1], this.slots[base + 2], this.slots[base + 3], this.slots[base + 4]);
      } else if (op === IotlbOp.Invalidate) {
        sink.invalidate(this.slots[base + 1], this.slots[base + 2]);
      } else {
        sink.clear();
      }
      consumed = (consumed + 1) | 0;
      applied++;
    }
    if (applied > 0) {
      Atomics.store(this.counters, CONSUMED, consumed);
      Atomics.notify(this.counters, CONSUMED);
    }
    return applied;
  }
}

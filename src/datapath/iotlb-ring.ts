/**
 * A single-producer single-consumer ring in shared memory carrying IOTLB updates and
 * invalidations from the main thread (producer) to one queue-pair worker (consumer).
 *
 * Why not postMessage: a busy worker only reaches its event loop now and then, while this
 * ring is checked at the start of every burst with one Atomics.load. The worker publishes
 * how far it has applied (`consumed`); the main thread acknowledges an INVALIDATE to the
 * front-end only once no lookup can use the stale entry any more — and the hot path takes
 * no lock.
 *
 * "No lookup can use it" is either of:
 *  - the worker has applied it (`consumed` passed it), or
 *  - the worker is quiescent: it holds no translation (no burst, no ring view in use) and
 *    drains this ring before it uses one again. The worker bumps `epoch` to odd when it
 *    resumes (then drains) and to even when it goes quiescent (before it sleeps in poll or
 *    visits its event loop). The producer stores `produced` and then loads `epoch`, the
 *    worker stores `epoch` and then loads `produced`: all sequentially consistent atomics,
 *    so if the producer still sees the worker quiescent, the worker's next resume comes
 *    later in that order and its drain sees the operation (the store-load pairing of
 *    Dekker's algorithm). An epoch that changed since the push means the same.
 * This is the lock-free counterpart of DPDK's per-virtqueue rwlock: the seed's INVALIDATE
 * takes the write lock, i.e. waits only for a burst in flight. A sleeping worker therefore
 * costs an INVALIDATE nothing, where waiting for it to wake and drain cost two thread
 * wake-ups per INVALIDATE — the dominant cost of dynamic mappings.
 */

export const IotlbOp = { Update: 1, Invalidate: 2, Clear: 3 } as const;

const CAPACITY = 1024; // power of two
const SLOT_DOUBLES = 5; // op, iova, size, uaddr, perm
const PRODUCED = 0;
const CONSUMED = 1;
/** Odd while the worker may hold translations, even while it is quiescent (see above). */
const EPOCH = 2;
const HEADER_INTS = 3;
/**
 * How long the producer spins for a busy worker to drain before it waits on the event loop:
 * a worker drains at the start of every burst (a few microseconds apart), and an
 * Atomics.waitAsync wake-up costs tens of microseconds on these machines.
 */
const SPIN_MS = 0.05;

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

  /**
   * True once no lookup can use what operations up to `sequence` removed: the worker applied
   * them, or it is (or since the push has been) quiescent, so it drains them before its next
   * lookup. Call after push(); false on timeout.
   */
  async waitApplied(sequence: number, timeoutMs: number): Promise<boolean> {
    const epoch = Atomics.load(this.counters, EPOCH);
    if (this.settled(sequence, epoch)) return true;
    const spinUntil = performance.now() + SPIN_MS;
    while (performance.now() < spinUntil) if (this.settled(sequence, epoch)) return true;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const consumed = Atomics.load(this.counters, CONSUMED);
      if (this.settled(sequence, epoch)) return true;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      const waited = Atomics.waitAsync(this.counters, CONSUMED, consumed, left);
      if (waited.async) await waited.value;
    }
  }

  /** `epochAfterPush` was loaded after the push (see the header comment). */
  private settled(sequence: number, epochAfterPush: number): boolean {
    if (((Atomics.load(this.counters, CONSUMED) - sequence) | 0) >= 0) return true;
    const epoch = Atomics.load(this.counters, EPOCH);
    return (epoch & 1) === 0 || epoch !== epochAfterPush;
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

  /** The worker is about to sleep or leave its loop holding no translation (see the header). */
  quiesce(): void {
    if ((this.counters[EPOCH] & 1) === 0) return;
    Atomics.add(this.counters, EPOCH, 1);
    Atomics.notify(this.counters, CONSUMED); // a waiting producer re-checks: quiescent now
  }

  /** The worker is back: from here it may translate, so it drains first (see the header). */
  resume(sink: IotlbOpSink): void {
    if ((this.counters[EPOCH] & 1) === 0) Atomics.add(this.counters, EPOCH, 1);
    this.drain(sink);
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

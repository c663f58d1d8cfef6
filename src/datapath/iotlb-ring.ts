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
 *  - the worker is quiescent: it holds no translation and drains this ring before it uses
 *    one again. The worker is quiescent between two rounds of its loop (and while it sleeps,
 *    visits its event loop or yields its CPU), and drains at the start of every round, so an
 *    INVALIDATE waits at most for the round in flight, and not at all for a worker the
 *    scheduler has taken off its CPU between rounds: it bumps `epoch` to odd when it resumes
 *    (then drains) and to even when it goes quiescent.
 *    The producer stores `produced` and then loads `epoch`, the worker stores `epoch` and
 *    then loads `produced`: all sequentially consistent atomics, so if the producer still
 *    sees the worker quiescent, the worker's next step comes later in that order and its
 *    drain sees the operation (the store-load pairing of Dekker's algorithm). An epoch that
 *    changed since the push means the same.
 * This is the lock-free counterpart of DPDK's per-virtqueue rwlock: an INVALIDATE takes the
 * write lock, i.e. waits only for a burst in flight. The producer waits for that burst
 * synchronously (a short spin, then a futex wait the worker's quiesce ends): a burst takes
 * microseconds, while a trip through the event loop (Atomics.waitAsync) costs tens.
 *
 * The same pairing tells the producer whether the worker sleeps (`sleeping`, set before it
 * polls, then `produced` re-checked): only a sleeper needs the wake-up eventfd, a spinning
 * worker sees the operation at its next step.
 *
 * A second ring of the same kind runs the other way: operations a worker read off the
 * front-end socket itself (iotlb-fast-path.ts) go back to the main thread's IOTLB shadow.
 * Only push and drain are used there: nobody waits on it.
 */

export const IotlbOp = { Update: 1, Invalidate: 2 } as const;
export type IotlbOpCode = (typeof IotlbOp)[keyof typeof IotlbOp];

const CAPACITY = 1024; // power of two
const SLOT_DOUBLES = 5; // op, iova, size, uaddr, perm
const PRODUCED = 0;
const CONSUMED = 1;
/** Odd while the worker may hold translations, even while it is quiescent (see above). */
const EPOCH = 2;
/** Producers blocked in waitApplied: the worker's quiesce() and drain() notify only when non-zero. */
const WAITERS = 3;
/** 1 while the worker sleeps (or is about to) in poll: a new operation must wake it. */
const SLEEPING = 4;
const HEADER_INTS = 5;
/**
 * How long the producer spins for a step in flight before it blocks on the futex: a step
 * ends within microseconds when the worker runs, while a futex wake-up across CPUs costs
 * tens of them on these machines. On one CPU the spin cannot succeed, so it stays short.
 */
const SPIN_MS = 0.005;
/**
 * How long waitApplied blocks its thread before it waits on the event loop instead: a burst
 * in flight or a worker descheduled for a tick ends well within it, and a worker stuck for
 * longer should not stall every other connection.
 */
const BLOCK_MS = 2;
/** Longest futex wait between two checks (see waitAppliedSync). */
const DRAIN_RECHECK_MS = 0.2;
/** The same for waitApplied's wait on the event loop. */
const ASYNC_RECHECK_MS = 1;

export function createIotlbRing(): SharedArrayBuffer {
  return new SharedArrayBuffer(SLOTS_OFFSET + CAPACITY * SLOT_DOUBLES * 8);
}

/** The header rounded up to a multiple of 8 bytes, for the Float64Array after it. */
const SLOTS_OFFSET = Math.ceil((HEADER_INTS * 4) / 8) * 8;

function views(buffer: SharedArrayBuffer): { counters: Int32Array; slots: Float64Array } {
  return {
    counters: new Int32Array(buffer, 0, HEADER_INTS),
    slots: new Float64Array(buffer, SLOTS_OFFSET, CAPACITY * SLOT_DOUBLES),
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

  /** No room for another operation until the consumer drains. */
  get full(): boolean {
    return this.backlog >= CAPACITY;
  }

  /** The worker sleeps in poll (or is about to): it needs the wake-up eventfd. Call after push(). */
  get workerSleeping(): boolean {
    return Atomics.load(this.counters, SLEEPING) !== 0;
  }

  /**
   * True once no lookup can use what operations up to `sequence` removed: the worker applied
   * them, or it is (or since the push has been) quiescent, so it drains them before its next
   * lookup. Call after push(). Blocks this thread for at most `blockMs` (a burst in flight),
   * and returns false if the worker is still inside the same step then.
   */
  waitAppliedSync(sequence: number, blockMs = BLOCK_MS): boolean {
    const epoch = Atomics.load(this.counters, EPOCH);
    if (this.settled(sequence, epoch)) return true;
    const now = performance.now();
    const spinUntil = now + SPIN_MS;
    while (performance.now() < spinUntil) if (this.settled(sequence, epoch)) return true;
    const deadline = now + blockMs;
    Atomics.add(this.counters, WAITERS, 1);
    try {
      for (;;) {
        if (this.settled(sequence, epoch)) return true;
        const left = deadline - performance.now();
        if (left <= 0) return false;
        // The worker notifies after a quiesce or a drain once it sees WAITERS (stored before
        // the check above). A quiesce moves the epoch, so a notify that comes before the wait
        // is not lost; a drain leaves it, so the wait is cut short in case it came just then.
        Atomics.wait(this.counters, EPOCH, epoch, Math.min(left, DRAIN_RECHECK_MS));
      }
    } finally {
      Atomics.sub(this.counters, WAITERS, 1);
    }
  }

  /**
   * waitApplied for a worker that may stay inside one step longer than a thread should
   * block: first waitAppliedSync, then waits on the event loop; false on timeout.
   */
  async waitApplied(sequence: number, timeoutMs: number): Promise<boolean> {
    const epoch = Atomics.load(this.counters, EPOCH);
    if (this.waitAppliedSync(sequence, Math.min(BLOCK_MS, timeoutMs))) return true;
    const deadline = Date.now() + timeoutMs;
    Atomics.add(this.counters, WAITERS, 1);
    try {
      for (;;) {
        if (this.settled(sequence, epoch)) return true;
        const left = deadline - Date.now();
        if (left <= 0) return false;
        // Capped like waitAppliedSync's wait: a drain's notify may come just before it.
        const waited = Atomics.waitAsync(this.counters, EPOCH, epoch, Math.min(left, ASYNC_RECHECK_MS));
        if (waited.async) await waited.value;
      }
    } finally {
      Atomics.sub(this.counters, WAITERS, 1);
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
}

export class IotlbRingConsumer {
  private readonly counters: Int32Array;
  private readonly slots: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    ({ counters: this.counters, slots: this.slots } = views(buffer));
  }

  /** From here the worker holds no translation until resume() (see the header). */
  quiesce(): void {
    if ((this.counters[EPOCH] & 1) === 0) return;
    Atomics.add(this.counters, EPOCH, 1);
    if (Atomics.load(this.counters, WAITERS) !== 0) Atomics.notify(this.counters, EPOCH);
  }

  /** A step begins: from here the worker may translate, so it drains first (see the header). Cheap when not quiescent: one load. */
  resume(sink: IotlbOpSink): void {
    if ((this.counters[EPOCH] & 1) === 0) Atomics.add(this.counters, EPOCH, 1);
    if (this.hasWork()) this.drain(sink);
  }

  /**
   * Before sleeping in poll (quiescent): marks the worker asleep and says whether it may
   * sleep, i.e. no operation arrived that a producer might not have woken it for.
   */
  mayStartSleeping(): boolean {
    Atomics.store(this.counters, SLEEPING, 1);
    return !this.hasWork();
  }

  stoppedSleeping(): void {
    Atomics.store(this.counters, SLEEPING, 0);
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
      } else {
        sink.invalidate(this.slots[base + 1], this.slots[base + 2]);
      }
      consumed = (consumed + 1) | 0;
      applied++;
    }
    if (applied > 0) {
      Atomics.store(this.counters, CONSUMED, consumed);
      // A producer blocked on the epoch of a worker that stays busy is released by the drain.
      if (Atomics.load(this.counters, WAITERS) !== 0) Atomics.notify(this.counters, EPOCH);
    }
    return applied;
  }
}

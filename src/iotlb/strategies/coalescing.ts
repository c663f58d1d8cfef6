/**
 * `coalescing`: sorted, non-overlapping IOVA ranges, each merged with neighbours that
 * continue it in BOTH IOVA and user-address space with the same permissions (the "merge
 * contiguous IOTLB entries" idea from the DPDK IOTLB cover letter). A 512 MiB guest mapped
 * as 256 x 2 MiB IOTLB updates becomes one range, so a lookup is the last-hit check and
 * nothing else. Partial invalidates trim or split a merged range.
 *
 * Built for both kinds of workload (docs/performance.md, "IOTLB strategies"):
 *  - static mappings: a lookup is one range check against a copy of the last range found
 *    (`lo`, `hi`, `d`, `p`: plain double fields, no array, no bounds check);
 *  - dynamic mappings (a strict-IOMMU guest maps and unmaps a buffer per packet over a
 *    dozen or two live ranges): there inserts and invalidates cost more than lookups, so
 *    they avoid per-call overhead: the ranges live in ONE interleaved Float64Array (iova,
 *    end, uaddr - iova, and the insertion stamp with the perm in its low two bits, so a
 *    range moves as four doubles and nothing else), a merge extends a neighbour in
 *    place instead of inserting and removing, and short moves (the usual case) are plain
 *    loops rather than copyWithin calls (~20 ns each before moving anything).
 *
 * V8 notes that shaped the code: a double passed to a call V8 does not inline is boxed in
 * a new HeapNumber, so out-of-line paths take their addresses from fields (`key`, `want`,
 * `cs`, `ce`) and lookup() stays small enough to be inlined into the data path; lookups
 * allocate nothing.
 *
 * Eviction at `capacity` is FIFO by insertion stamp, as in `interval` (a merge refreshes
 * the merged range's stamp).
 */
import type {
  AccessBits, IotlbEntry, IotlbStats, IotlbStrategy, LookupOut, StrategyDefinition, StrategyOptions,
} from '../strategy.js';
import { LOOKUP_DENIED, LOOKUP_MISS, emptyStats } from '../strategy.js';
import { recordSize } from '../stats.js';
import { DEFAULT_CAPACITY } from './interval.js';

/** Doubles per range in `r`: iova, end, delta (uaddr - iova), tagOf(stamp, perm). */
const W = 4;

/** Moves range i (its four fields, the permission among them) to slot j: the shifts below go one range at a time. */
function copySlot(r: Float64Array, i: number, j: number): void {
  const k = i * W;
  const m = j * W;
  r[m] = r[k];
  r[m + 1] = r[k + 1];
  r[m + 2] = r[k + 2];
  r[m + 3] = r[k + 3];
}
/** The fourth field of a range: its insertion stamp (FIFO order) times 4, plus its access bits. */
const tagOf = (stamp: number, perm: number): number => stamp * 4 + perm;
/** The access bits in a range's fourth field (stamps are below 2^51, so the low bits survive ToInt32). */
const PERM_BITS = 3;
/** Ranges moved with a plain loop rather than copyWithin (two builtin calls of ~20 ns each). */
const SHORT_MOVE = 24;
const INITIAL_SLOTS = 32;
/** Up to this many ranges, searches scan linearly (predictable branches beat bisection's). */
const LINEAR = 32;
/** 2^53 (ADDRESS_LIMIT) as a literal: a module constant read from a cell made the clamped end a boxed value. */
const LIMIT = 9007199254740992;

export class CoalescingStrategy implements IotlbStrategy {
  readonly name: string = 'coalescing';
  readonly capacity: number;
  readonly stats: IotlbStats = emptyStats();
  /** IotlbStrategy.version: bumped by insert, invalidate and clear (evictions happen inside those). */
  version = 0;
  /**
   * The ranges occupy slots [b, t) of `r`, sorted by IOVA, with free slots on
   * both sides: a splice moves whichever side of it is shorter, so a top-down IOVA
   * allocator's map (below every range) and unmap of its oldest buffer (just below the
   * rings) both move next to nothing. Slot i: r[i*W] iova, r[i*W+1] end, r[i*W+2]
   * uaddr - iova, r[i*W+3] tagOf(insertion stamp, access bits).
   */
  private b = 0;
  private t = 0;
  private r: Float64Array;
  /** Insertion clock for FIFO eviction stamps. */
  private clock = 0;
  /**
   * A copy of the range the last lookup found: [lo, hi) at user address IOVA + d, perm p.
   * Empty when hi <= lo. Dropped by any mutation that touches it (an insert that may merge
   * into it, an overlapping invalidate, an eviction, clear). Initialised with non-integers
   * so V8 gives the fields a double representation from the start (stored unboxed).
   */
  private lo = 0.5;
  private hi = 0.5;
  private d = 0.5;
  private p = 0;
  /** Arguments of the out-of-line paths (see the header). */
  private key = 0.5;
  private want = 0.5;
  private cs = 0.5;
  private ce = 0.5;
  private cd = 0.5;
  /** For carve(): the first slot whose range ends above cs (and overlaps [cs, ce)). */
  private at = 0;
  /** How many ranges the last carve() removed or trimmed. */
  private affected = 0;

  constructor(options: StrategyOptions = {}) {
    this.capacity = Math.max(1, Math.floor(options.capacity ?? DEFAULT_CAPACITY));
    const slots = Math.max(8, Math.min(2 * this.capacity + 4, INITIAL_SLOTS));
    this.r = new Float64Array(slots * W);
    this.b = this.t = slots >> 1;
    this.lo = 0;
    this.hi = 0;
    this.d = 0;
  }

  /** Number of ranges. */
  get count(): number {
    return this.t - this.b;
  }

  lookup(x: number, len: number, access: AccessBits, out: LookupOut): number {
    const stats = this.stats;
    stats.lookups++;
    if (!(x >= this.lo && x < this.hi)) {
      this.key = x;
      if (!this.refill()) {
        stats.misses++;
        return LOOKUP_MISS;
      }
    }
    if ((this.p & access) !== access) {
      stats.permissionFaults++;
      return LOOKUP_DENIED;
    }
    stats.hits++;
    const hi = this.hi;
    out.uaddr = x + this.d;
    if (!(len > 0)) len = 1;
    if (hi - x >= len) return len;
    this.key = x;
    this.want = len;
    return this.stitch(access);
  }

  /** The last hit's range is the copy lookup() answered from. */
  span(out: LookupOut): void {
    out.spanStart = this.lo;
    out.spanEnd = this.hi;
  }

  /** Slot of the last range starting at or below this.key (b - 1 if none). */
  private below(): number {
    const x = this.key;
    const r = this.r;
    let lo = this.b;
    let hi = this.t;
    if (hi - lo <= LINEAR) {
      while (lo < hi && r[lo * W] <= x) lo++;
      return lo - 1;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (r[mid * W] <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }

  /** Copies the range holding this.key into lo/hi/d/p; false if no range holds it. */
  private refill(): boolean {
    const x = this.key;
    const i = this.below();
    if (i < this.b) return false;
    const r = this.r;
    const k = i * W;
    const e = r[k + 1];
    if (!(x < e)) return false;
    this.lo = r[k];
    this.hi = e;
    this.d = r[k + 2];
    this.p = r[k + 3] & PERM_BITS;
    return true;
  }

  /**
   * The length of a hit at this.key running past the copy's end: extends it across the
   * ranges above that continue it in user address and grant `access`, up to this.want.
   * Equal-perm neighbours are merged, so this only crosses a permission change that still
   * grants the access (e.g. RW then R, read). Rare.
   */
  private stitch(access: AccessBits): number {
    const x = this.key;
    const want = this.want;
    const d = this.d;
    const r = this.r;
    const t = this.t;
    let e = this.hi;
    this.key = e;
    for (let j = this.below(); j >= this.b && j < t; j++) {
      const k = j * W;
      if (r[k] !== e || r[k + 2] !== d || (r[k + 3] & access) !== access) break;
      e = r[k + 1];
      if (e - x >= want) return want;
    }
    return e - x;
  }

  /**
   * Inserts and invalidates are written out for their common cases (no overlap with an
   * existing range; removing one whole range): a dynamic workload does one of each per
   * packet. insert() keeps only the search, the merges and a map below every range (a
   * top-down allocator's next buffer) in line, small enough for V8 to inline it into the
   * caller; moving ranges to open a slot, bisection and joins are out of line.
   */
  insert(entry: IotlbEntry): void {
    this.stats.inserts++;
    const s = entry.iova;
    let e = s + entry.size;
    if (!(e < LIMIT)) e = LIMIT;
    if (!(e > s)) return;
    this.version++;
    if (s <= this.hi && e >= this.lo) this.hi = 0; // it may merge into the copy, or replace part of it
    const delta = entry.uaddr - s;
    const p = entry.perm;
    const b = this.b;
    if (b > 0 && (b === this.t || e < this.r[b * W])) {
      // Below every range, not touching it (a top-down allocator's next buffer): nothing moves.
      const i = b - 1;
      const k = i * W;
      const r = this.r;
      r[k] = s;
      r[k + 1] = e;
      r[k + 2] = delta;
      r[k + 3] = tagOf(++this.clock, p);
      this.b = i;
      const n = this.t - i;
      if (n > this.capacity) {
        this.settle();
        return;
      }
      const stats = this.stats;
      stats.entries = n;
      if (n > stats.peakEntries) stats.peakEntries = n;
      return;
    }
    this.cs = s;
    this.ce = e;
    this.cd = delta;
    this.add(p);
  }

  /** insert() of [cs, ce) at user address IOVA + cd with perm p, other than below every range. */
  private add(p: number): void {
    const s = this.cs;
    const e = this.ce;
    const delta = this.cd;
    const r = this.r;
    const b = this.b;
    const t = this.t;
    // at = the first slot whose range ends above s.
    let at = b;
    if (b === t || e < r[b * W]) {
      // below every range (a top-down allocator's next buffer)
    } else if (!(s < r[t * W - W + 1])) {
      at = t;
    } else if (t - b <= LINEAR) {
      while (r[at * W + 1] <= s) at++; // stops below t: the last range ends above s
    } else {
      this.key = s;
      at = this.endsAbove();
    }
    if (at < t && r[at * W] < e) {
      // Overlaps what is there: carve it out first (cs, ce, cd are set).
      this.at = at;
      this.place(p);
      return;
    }
    const stamp = tagOf(++this.clock, p);
    // A merge never adds a range (nor evicts).
    if (at > b && r[at * W - W + 1] === s && r[at * W - W + 2] === delta && (r[at * W - W + 3] & PERM_BITS) === p) {
      const k = at * W - W;
      r[k + 3] = stamp;
      if (at < t && r[at * W] === e && r[at * W + 2] === delta && (r[at * W + 3] & PERM_BITS) === p) {
        this.join(at);
      } else {
        r[k + 1] = e;
      }
      return;
    }
    if (at < t && r[at * W] === e && r[at * W + 2] === delta && (r[at * W + 3] & PERM_BITS) === p) {
      const k = at * W;
      r[k] = s;
      r[k + 3] = stamp;
      return;
    }
    let i = at - 1;
    if (at === b && b > 0) this.b = i; // below every range: nothing moves
    else i = this.open(at);
    const rr = this.r; // open() may have moved everything to new arrays
    const k = i * W;
    rr[k] = s;
    rr[k + 1] = e;
    rr[k + 2] = delta;
    rr[k + 3] = stamp;
    const n = this.t - this.b;
    if (n > this.capacity) {
      this.settle();
      return;
    }
    const stats = this.stats;
    stats.entries = n;
    if (n > stats.peakEntries) stats.peakEntries = n;
  }

  /** First slot whose range ends above this.key, by bisection (for tables above LINEAR ranges). */
  private endsAbove(): number {
    const s = this.key;
    const r = this.r;
    let at = this.b;
    let hi = this.t;
    while (at < hi) {
      const mid = (at + hi) >>> 1;
      if (r[mid * W + 1] <= s) at = mid + 1;
      else hi = mid;
    }
    return at;
  }

  /** insert() merged the range at slot at - 1 up to the one at `at`: they become one. */
  private join(at: number): void {
    const r = this.r;
    r[at * W - W + 1] = r[at * W + 1];
    this.splice(at, 1, 0);
    this.stats.entries = this.t - this.b;
  }

  /** Opens an uninitialised slot before slot `at`, moving the shorter side; returns its slot. */
  private open(at: number): number {
    const r = this.r;
    const b = this.b;
    const t = this.t;
    if (at - b <= t - at && b > 0) {
      // Move the lower ranges down one.
      for (let j = b; j < at; j++) {
        copySlot(r, j, j - 1);
      }
      this.b = b - 1;
      return at - 1;
    }
    if ((t + 1) * W <= r.length && t - at <= SHORT_MOVE) {
      for (let j = t - 1; j >= at; j--) {
        copySlot(r, j, j + 1);
      }
      this.t = t + 1;
      return at;
    }
    return this.splice(at, 0, 1);
  }

  /** insert() of [cs, ce) at user address IOVA + cd with perm p where it overlaps ranges (`at`: the first): carve, then merge or add. */
  private place(p: number): void {
    const s = this.cs;
    const e = this.ce;
    const delta = this.cd;
    const at = this.carve();
    const r = this.r;
    const stamp = tagOf(++this.clock, p);
    const left = at - 1;
    const mergeLeft = left >= this.b && r[left * W + 1] === s && r[left * W + 2] === delta && (r[left * W + 3] & PERM_BITS) === p;
    const mergeRight = at < this.t && r[at * W] === e && r[at * W + 2] === delta && (r[at * W + 3] & PERM_BITS) === p;
    if (mergeLeft) {
      const k = left * W;
      // The stamp first: removing the right range below may move the left side, this range
      // with it, up a slot, and slot `left` then holds its lower neighbour.
      r[k + 3] = stamp;
      if (mergeRight) {
        r[k + 1] = r[at * W + 1];
        this.splice(at, 1, 0);
      } else {
        r[k + 1] = e;
      }
    } else if (mergeRight) {
      const k = at * W;
      r[k] = s;
      r[k + 3] = stamp;
    } else {
      const i = this.splice(at, 0, 1);
      const k = i * W;
      const rr = this.r; // splice may have moved everything to new arrays
      rr[k] = s;
      rr[k + 1] = e;
      rr[k + 2] = delta;
      rr[k + 3] = stamp;
    }
    this.settle();
  }

  /**
   * Tiny on purpose, as is lookup(): V8 inlines any function this small into its caller,
   * so the caller's doubles are stored into fields in place instead of being boxed into
   * new HeapNumbers for a call.
   */
  invalidate(iova: number, size: number): number {
    this.key = iova;
    this.want = size;
    return this.invalidateKey();
  }

  /** invalidate() of [key, key + want). */
  private invalidateKey(): number {
    const iova = this.key;
    const size = this.want;
    this.stats.invalidations++;
    let e = iova + size;
    if (!(e < LIMIT)) e = LIMIT;
    if (!(e > iova)) return 0;
    const r = this.r;
    const b = this.b;
    const t = this.t;
    // Nothing there: no change, so no new version either.
    if (b === t || !(e > r[b * W] && iova < r[t * W - W + 1])) return 0;
    // at = the first slot whose range ends above iova.
    let at = b;
    if (t - b <= LINEAR) {
      while (r[at * W + 1] <= iova) at++; // stops below t: the last range ends above iova
    } else {
      let hi = t;
      while (at < hi) {
        const mid = (at + hi) >>> 1;
        if (r[mid * W + 1] <= iova) at = mid + 1;
        else hi = mid;
      }
    }
    const k = at * W;
    if (!(at < t && r[k] < e)) return 0;
    this.version++;
    if (iova < this.hi && e > this.lo) this.hi = 0;
    if (!(r[k] >= iova && r[k + 1] <= e && (at + 1 === t || r[k + W] >= e))) {
      // Trims or splits a range, or removes several.
      this.cs = iova;
      this.ce = e;
      this.at = at;
      return this.remove();
    }
    // Exactly one whole range goes (an unmap of what one map mapped): close the gap from the shorter side.
    if (at - b < t - 1 - at) {
      for (let j = at - 1; j >= b; j--) {
        copySlot(r, j, j + 1);
      }
      this.b = b + 1;
    } else {
      for (let j = at + 1; j < t; j++) {
        copySlot(r, j, j - 1);
      }
      this.t = t - 1;
    }
    this.stats.entries = t - b - 1; // a removal never raises the peak
    return 1;
  }

  /** invalidate() of [cs, ce), which overlaps the range at slot `at`. */
  private remove(): number {
    this.carve();
    this.settle(); // a split can add one range
    return this.affected;
  }

  /**
   * Removes [cs, ce) from the table, trimming or splitting ranges that straddle its edges
   * (`at`: the first range it overlaps). Sets `affected` and returns the slot at which a range
   * starting at cs now belongs.
   */
  private carve(): number {
    const s = this.cs;
    const e = this.ce;
    const r = this.r;
    const lo = this.at;
    let hi = lo;
    while (hi < this.t && r[hi * W] < e) hi++;
    this.affected = hi - lo;
    const last = hi - 1;
    const keepLeft = r[lo * W] < s;
    const lk = last * W;
    const rEnd = r[lk + 1];
    const keepRight = rEnd > e;
    const rDelta = r[lk + 2];
    const rTag = r[lk + 3];
    if (keepLeft) r[lo * W + 1] = s;
    const from = keepLeft ? lo + 1 : lo;
    const at = this.splice(from, hi - from, keepRight ? 1 : 0);
    if (keepRight) {
      const rr = this.r;
      const k = at * W;
      rr[k] = e;
      rr[k + 1] = rEnd;
      rr[k + 2] = rDelta;
      rr[k + 3] = rTag;
    }
    return at;
  }

  /**
   * Replaces the `removeCount` ranges at slot `at` with `insertCount` uninitialised ones,
   * moving the shorter side; returns the slot of the first of them (slots move when the
   * left side does).
   */
  private splice(at: number, removeCount: number, insertCount: number): number {
    const delta = insertCount - removeCount;
    if (delta === 0) return at;
    const b = this.b;
    const t = this.t;
    const leftLen = at - b;
    const rightLen = t - (at + removeCount);
    const left = leftLen < rightLen;
    if (delta < 0 || (left ? b >= delta : (t + delta) * W <= this.r.length)) {
      if (left) {
        // [b, at) moves by -delta; the new slots end where the removed ones did.
        this.move(b, at, -delta);
        this.b = b - delta;
        return at - delta;
      }
      this.move(at + removeCount, t, delta);
      this.t = t + delta;
      return at;
    }
    // No room on the cheaper side: recentre (growing if more than half full), then retry.
    this.recentre(t - b + delta);
    return this.splice(at + this.b - b, removeCount, insertCount);
  }

  /** Moves slots [from, to) by `by` (either direction, overlap-safe). */
  private move(from: number, to: number, by: number): void {
    const n = to - from;
    if (n <= 0) return;
    const r = this.r;
    if (n > SHORT_MOVE) {
      r.copyWithin((from + by) * W, from * W, to * W);
    } else if (by > 0) {
      for (let i = to - 1; i >= from; i--) {
        copySlot(r, i, i + by);
      }
    } else {
      for (let i = from; i < to; i++) {
        copySlot(r, i, i + by);
      }
    }
  }

  /** Centres the ranges in arrays with room for `need` of them and as much again. */
  private recentre(need: number): void {
    const n = this.t - this.b;
    const had = this.r.length / W;
    let slots = had;
    while (slots < 2 * need + 2) slots *= 2;
    const nb = (slots - n) >> 1;
    if (slots === had) {
      this.move(this.b, this.t, nb - this.b);
    } else {
      const r = new Float64Array(slots * W);
      r.set(this.r.subarray(this.b * W, this.t * W), nb * W);
      this.r = r;
    }
    this.b = nb;
    this.t = nb + n;
  }

  /** After a mutation: evicts the oldest insertions down to capacity, records the size. */
  private settle(): void {
    if (this.t - this.b > this.capacity) this.evict();
    recordSize(this.stats, this.t - this.b);
  }

  /** FIFO eviction: the smallest stamp goes until the table fits (never the newest range). */
  private evict(): void {
    this.hi = 0;
    const r = this.r;
    while (this.t - this.b > this.capacity) {
      let best = this.b;
      let bestStamp = Infinity;
      for (let i = this.b; i < this.t; i++) {
        const st = r[i * W + 3];
        if (st < bestStamp) {
          bestStamp = st;
          best = i;
        }
      }
      this.splice(best, 1, 0);
      this.stats.evictions++;
    }
  }

  entries(): IotlbEntry[] {
    const out: IotlbEntry[] = [];
    const r = this.r;
    for (let i = this.b; i < this.t; i++) {
      const k = i * W;
      out.push({ iova: r[k], size: r[k + 1] - r[k], uaddr: r[k] + r[k + 2], perm: r[k + 3] & PERM_BITS });
    }
    return out;
  }

  clear(): void {
    this.version++;
    this.b = this.t = (this.r.length / W) >> 1;
    this.hi = 0;
    this.lo = 0;
    this.clock = 0; // stamps only order the ranges held; restarting keeps them small
    recordSize(this.stats, 0);
  }
}

export const coalescing: StrategyDefinition = {
  name: 'coalescing',
  summary: 'sorted ranges merged when contiguous in IOVA and uaddr with equal perm; last-hit copy, binary search, FIFO eviction',
  create: (options?: StrategyOptions) => new CoalescingStrategy(options),
};

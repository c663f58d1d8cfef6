/**
 * The shared core of the `interval`, `coalescing` and `lru` strategies: sorted,
 * non-overlapping IOVA ranges kept in parallel typed arrays.
 *
 *   iova[i] < end[i] <= iova[i+1]       (sorted, non-overlapping, half-open)
 *   uaddr[i] is the user address of iova[i]; perm[i] the access bits
 *   stamp[i] is an ordering key the owning strategy uses to choose an eviction victim
 *
 * Lookups binary-search iova[] and keep a one-entry "last hit" index. The index is
 * only trusted after re-checking that the entry at that index still contains the
 * address, so it stays correct across inserts and invalidates that shift entries:
 * entries never overlap, so whichever entry contains the address is the right one.
 *
 * The table itself never evicts; strategies bound it (see IntervalStrategy).
 */
import { recordSize } from './stats.js';
import { LOOKUP_DENIED, LOOKUP_MISS, emptyStats } from './strategy.js';
import type { AccessBits, IotlbEntry, IotlbStats, LookupOut } from './strategy.js';

const INITIAL_SLOTS = 64;

export class RangeTable {
  count = 0;
  iova: Float64Array;
  end: Float64Array;
  uaddr: Float64Array;
  perm: Uint8Array;
  stamp: Float64Array;
  /** Index of the entry that satisfied the last successful lookup (may be stale; always re-checked). */
  last = 0;
  /** span() reports the hit entry's range (off for tables whose hits have side effects, e.g. LRU stamps). */
  spans = true;
  /** How many entries the last carve() removed or trimmed. */
  affected = 0;
  readonly stats: IotlbStats = emptyStats();

  constructor(slots = INITIAL_SLOTS) {
    const n = Math.max(4, slots);
    this.iova = new Float64Array(n);
    this.end = new Float64Array(n);
    this.uaddr = new Float64Array(n);
    this.perm = new Uint8Array(n);
    this.stamp = new Float64Array(n);
  }

  /** Index of the entry containing x, or -1. */
  find(x: number): number {
    const iova = this.iova;
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (iova[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    const i = lo - 1;
    return i >= 0 && x < this.end[i] ? i : -1;
  }

  /** The hot path shared by `interval` and `lru`: last-hit check, then binary search. */
  lookup(x: number, len: number, access: AccessBits, out: LookupOut): number {
    const stats = this.stats;
    stats.lookups++;
    let i = this.last;
    if (!(i < this.count && this.iova[i] <= x && x < this.end[i])) {
      i = this.find(x);
      if (i < 0) {
        stats.misses++;
        return LOOKUP_MISS;
      }
      this.last = i;
    }
    return this.translate(i, x, len, access, out);
  }

  /** IotlbStrategy.span(): lookup() leaves the hit's entry in `last`. */
  span(out: LookupOut): void {
    const i = this.last;
    if (this.spans && i < this.count) {
      out.spanStart = this.iova[i];
      out.spanEnd = this.end[i];
    } else {
      out.spanStart = out.spanEnd = 0;
    }
  }

  /**
   * Finishes a lookup of x, known to lie in entry i: permission check, user address,
   * and the length contiguous in both IOVA and user-address space (capped at len).
   */
  translate(i: number, x: number, len: number, access: AccessBits, out: LookupOut): number {
    const stats = this.stats;
    if ((this.perm[i] & access) !== access) {
      stats.permissionFaults++;
      return LOOKUP_DENIED;
    }
    stats.hits++;
    out.uaddr = this.uaddr[i] + (x - this.iova[i]);
    if (!(len > 0)) len = 1;
    const mapped = this.end[i] - x;
    return mapped >= len ? len : this.stitch(i, x, len, access);
  }

  /**
   * Extends a hit in entry i across following entries that continue it in IOVA *and*
   * user-address space and also grant `access`. Rare for `coalescing` (only across a
   * permission change); the common case for non-merging tables of small pages.
   */
  private stitch(i: number, x: number, len: number, access: AccessBits): number {
    const iova = this.iova;
    const end = this.end;
    const uaddr = this.uaddr;
    const perm = this.perm;
    const n = this.count;
    let e = end[i];
    let u = uaddr[i] + (e - iova[i]);
    for (let j = i + 1; j < n; j++) {
      if (iova[j] !== e || uaddr[j] !== u || (perm[j] & access) !== access) break;
      const ej = end[j];
      u += ej - e;
      e = ej;
      if (e - x >= len) return len;
    }
    return e - x;
  }

  /** First index whose end is above x (binary search; ends are sorted too). */
  firstEndingAfter(x: number): number {
    const end = this.end;
    let lo = 0;
    let hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (end[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Removes [s, e) from the table, trimming or splitting entries that straddle its
   * edges. Sets `affected` to the number of entries removed or trimmed and returns
   * the index at which a range starting at s now belongs.
   */
  carve(s: number, e: number): number {
    const lo = this.firstEndingAfter(s);
    let hi = lo;
    while (hi < this.count && this.iova[hi] < e) hi++;
    this.affected = hi - lo;
    if (hi === lo) return lo;
    const last = hi - 1;
    const keepLeft = this.iova[lo] < s;
    const keepRight = this.end[last] > e;
    // Save the right remainder before the splice moves things.
    const rEnd = this.end[last];
    const rUaddr = this.uaddr[last] + (e - this.iova[last]);
    const rPerm = this.perm[last];
    const rStamp = this.stamp[last];
    const from = keepLeft ? lo + 1 : lo;
    this.splice(from, hi - from, keepRight ? 1 : 0);
    if (keepLeft) this.end[lo] = s;
    if (keepRight) this.write(from, e, rEnd, rUaddr, rPerm, rStamp);
    return from;
  }

  /** Inserts a range at index `at` (the caller keeps the order). */
  insertAt(at: number, s: number, e: number, u: number, perm: number, stamp: number): void {
    this.splice(at, 0, 1);
    this.write(at, s, e, u, perm, stamp);
  }

  removeAt(i: number): void {
    this.splice(i, 1, 0);
  }

  write(i: number, s: number, e: number, u: number, perm: number, stamp: number): void {
    this.iova[i] = s;
    this.end[i] = e;
    this.uaddr[i] = u;
    this.perm[i] = perm;
    this.stamp[i] = stamp;
  }

  /** Index of the entry with the smallest stamp (the eviction victim), or -1 if empty. */
  minStamp(): number {
    const stamp = this.stamp;
    let best = -1;
    let bestStamp = Infinity;
    for (let i = 0; i < this.count; i++) {
      if (stamp[i] < bestStamp) {
        bestStamp = stamp[i];
        best = i;
      }
    }
    return best;
  }

  /** Replaces `removeCount` slots at `at` with `insertCount` uninitialised slots. */
  private splice(at: number, removeCount: number, insertCount: number): void {
    const delta = insertCount - removeCount;
    if (delta === 0) return;
    const n = this.count;
    if (n + delta > this.iova.length) this.grow(n + delta);
    const src = at + removeCount;
    const dst = at + insertCount;
    this.iova.copyWithin(dst, src, n);
    this.end.copyWithin(dst, src, n);
    this.uaddr.copyWithin(dst, src, n);
    this.perm.copyWithin(dst, src, n);
    this.stamp.copyWithin(dst, src, n);
    this.count = n + delta;
  }

  private grow(min: number): void {
    let n = this.iova.length * 2;
    while (n < min) n *= 2;
    const iova = new Float64Array(n);
    iova.set(this.iova);
    this.iova = iova;
    const end = new Float64Array(n);
    end.set(this.end);
    this.end = end;
    const uaddr = new Float64Array(n);
    uaddr.set(this.uaddr);
    this.uaddr = uaddr;
    const perm = new Uint8Array(n);
    perm.set(this.perm);
    this.perm = perm;
    const stamp = new Float64Array(n);
    stamp.set(this.stamp);
    this.stamp = stamp;
  }

  /** Records the current size in the stats (after any mutation). */
  noteSize(): void {
    recordSize(this.stats, this.count);
  }

  clear(): void {
    this.count = 0;
    this.last = 0;
    this.noteSize();
  }

  toEntries(): IotlbEntry[] {
    const out: IotlbEntry[] = [];
    for (let i = 0; i < this.count; i++) {
      out.push({ iova: this.iova[i], size: this.end[i] - this.iova[i], uaddr: this.uaddr[i], perm: this.perm[i] });
    }
    return out;
  }
}

/**
 * The exact, unbounded reference IOTLB: the replay checks every strategy against it, `trace
 * synth` derives its translation results from it, and the property tests hold strategies
 * and address spaces to it.
 *
 * Deliberately independent of the strategies (no RangeTable): plain arrays of sorted,
 * non-overlapping half-open ranges, newest UPDATE wins where ranges overlap, INVALIDATE
 * trims exactly. It never evicts, so at any moment it holds every mapping the front-end
 * has granted and not revoked — what a correct cache may at most know.
 *
 * lookup() follows the IotlbStrategy contract: the user address of iova and the length
 * (capped at len, len <= 0 counts as 1) contiguous in BOTH IOVA and user space across
 * following ranges that grant the access; LOOKUP_DENIED (-1) if the range holding iova
 * lacks the access, LOOKUP_MISS (0) if nothing holds it.
 */
import { rangeEnd } from './address.js';
import { LOOKUP_DENIED, LOOKUP_MISS } from './strategy.js';

export interface ReferenceAnswer {
  /** > 0 mapped length, LOOKUP_MISS or LOOKUP_DENIED. */
  result: number;
  /** User address of iova on a hit. */
  uaddr: number;
  /** The range holding iova (hit or denied), for refilling a cache that evicted it. */
  entryIova: number;
  entrySize: number;
  entryUaddr: number;
  entryPerm: number;
}

/** A zeroed answer, for callers of lookup() that keep one. */
export function referenceAnswer(): ReferenceAnswer {
  return { result: LOOKUP_MISS, uaddr: 0, entryIova: 0, entrySize: 0, entryUaddr: 0, entryPerm: 0 };
}

export class ReferenceIotlb {
  private readonly iova: number[] = [];
  private readonly end: number[] = [];
  private readonly uaddr: number[] = [];
  private readonly perm: number[] = [];
  /** Largest number of ranges held at once. */
  peak = 0;

  get size(): number {
    return this.iova.length;
  }

  /** Bytes mapped in all. */
  mappedBytes(): number {
    let bytes = 0;
    for (let i = 0; i < this.iova.length; i++) bytes += this.end[i] - this.iova[i];
    return bytes;
  }

  insert(iova: number, size: number, uaddr: number, perm: number): void {
    const e = rangeEnd(iova, size);
    if (!(e > iova)) return;
    const at = this.carve(iova, e);
    this.iova.splice(at, 0, iova);
    this.end.splice(at, 0, e);
    this.uaddr.splice(at, 0, uaddr);
    this.perm.splice(at, 0, perm);
    if (this.iova.length > this.peak) this.peak = this.iova.length;
  }

  invalidate(iova: number, size: number): void {
    const e = rangeEnd(iova, size);
    if (e > iova) this.carve(iova, e);
  }

  lookup(x: number, len: number, access: number, out: ReferenceAnswer = referenceAnswer()): ReferenceAnswer {
    out.result = LOOKUP_MISS;
    out.uaddr = 0;
    out.entryIova = 0;
    out.entrySize = 0;
    out.entryUaddr = 0;
    out.entryPerm = 0;
    const i = this.indexOf(x);
    if (i < 0) return out;
    out.entryIova = this.iova[i];
    out.entrySize = this.end[i] - this.iova[i];
    out.entryUaddr = this.uaddr[i];
    out.entryPerm = this.perm[i];
    if ((this.perm[i] & access) !== access) {
      out.result = LOOKUP_DENIED;
      return out;
    }
    out.uaddr = this.uaddr[i] + (x - this.iova[i]);
    const want = len > 0 ? len : 1;
    let end = this.end[i];
    let userEnd = this.uaddr[i] + (end - this.iova[i]);
    for (let j = i + 1; j < this.iova.length && end - x < want; j++) {
      if (this.iova[j] !== end || this.uaddr[j] !== userEnd || (this.perm[j] & access) !== access) break;
      userEnd += this.end[j] - this.iova[j];
      end = this.end[j];
    }
    out.result = Math.min(end - x, want);
    return out;
  }

  /** Index of the range holding x, or -1. */
  private indexOf(x: number): number {
    let lo = 0;
    let hi = this.iova.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.iova[mid] <= x) lo = mid + 1;
      else hi = mid;
    }
    const i = lo - 1;
    return i >= 0 && x < this.end[i] ? i : -1;
  }

  /** Removes [s, e), trimming or splitting straddling ranges; returns where a range starting at s belongs. */
  private carve(s: number, e: number): number {
    // First range ending after s.
    let lo = 0;
    let hi = this.end.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.end[mid] <= s) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    while (i < this.iova.length && this.iova[i] < e) {
      const rs = this.iova[i];
      const re = this.end[i];
      if (rs < s && re > e) {
        // Split: keep [rs, s), add [e, re).
        this.end[i] = s;
        this.iova.splice(i + 1, 0, e);
        this.end.splice(i + 1, 0, re);
        this.uaddr.splice(i + 1, 0, this.uaddr[i] + (e - rs));
        this.perm.splice(i + 1, 0, this.perm[i]);
        return i + 1;
      }
      if (rs < s) {
        this.end[i] = s;
        i++;
      } else if (re > e) {
        this.uaddr[i] += e - rs;
        this.iova[i] = e;
        return i;
      } else {
        this.iova.splice(i, 1);
        this.end.splice(i, 1);
        this.uaddr.splice(i, 1);
        this.perm.splice(i, 1);
      }
    }
    return i;
  }
}

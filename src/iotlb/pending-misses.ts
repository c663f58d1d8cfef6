/**
 * The pending-miss list (DPDK's iotlb_pending_list): IOTLB misses already sent to the
 * front-end and not yet answered, so that one miss is sent once.
 *
 * Keys are 4 KiB pages: misses at X and X + 8 in the same page are one miss. Each
 * pending page remembers the first IOVA that missed and the union of access bits
 * requested; add() returns true (send a miss) when the page is new or asks for access
 * bits not already requested.
 *
 * clearCovered(iova, size, perm) is called when an IOTLB UPDATE arrives: every pending
 * page overlapping [iova, iova + size) drops the access bits the update grants
 * (DPDK: vhost_user_iotlb_pending_remove drops nodes whose perm the update covers) and
 * is forgotten once none remain. Clearing on overlap rather than on full page coverage
 * errs toward re-sending: if a sub-page update did not cover the missing address, the
 * next lookup misses again and add() sends a fresh miss; it can never leave a miss
 * pending forever.
 *
 * Bound: at most `capacity` pages (default 2048, DPDK's pool size). Adding to a full
 * list drops the oldest pending page first (counted in `dropped`); if that translation
 * is still wanted, its next lookup misses and re-sends. (DPDK, whose pool is shared
 * with the cache, empties the whole pending list instead.)
 */
import { Access } from './strategy.js';
import type { AccessBits } from './strategy.js';
import { pageOf, rangeEnd } from './address.js';

export const DEFAULT_PENDING_CAPACITY = 2048;

export interface PendingMiss {
  /** The first IOVA that missed in this page. */
  iova: number;
  /** Union of the access bits requested and not yet granted. */
  perm: AccessBits;
}

export class PendingMisses {
  readonly capacity: number;
  /** Pending pages dropped to stay within capacity. */
  dropped = 0;
  /** Insertion-ordered, so the first key is the oldest. */
  private readonly pages = new Map<number, PendingMiss>();

  constructor(capacity = DEFAULT_PENDING_CAPACITY) {
    this.capacity = Math.max(1, Math.floor(capacity));
  }

  get size(): number {
    return this.pages.size;
  }

  /** Records a miss; true if it must be sent (new page, or new access bits for it). */
  add(iova: number, perm: AccessBits): boolean {
    const page = pageOf(iova);
    const pending = this.pages.get(page);
    if (pending !== undefined) {
      if ((pending.perm & perm) === perm) return false;
      pending.perm |= perm;
      return true;
    }
    if (this.pages.size >= this.capacity) {
      const oldest = this.pages.keys().next();
      if (!oldest.done) {
        this.pages.delete(oldest.value);
        this.dropped++;
      }
    }
    this.pages.set(page, { iova, perm });
    return true;
  }

  /** Whether a miss covering `iova` (and, if given, all of `perm`) is pending. */
  has(iova: number, perm: AccessBits = Access.None): boolean {
    const pending = this.pages.get(pageOf(iova));
    return pending !== undefined && (pending.perm & perm) === perm;
  }

  /** An UPDATE granted `perm` on [iova, iova + size): forget what it answers. Returns pages cleared. */
  clearCovered(iova: number, size: number, perm: AccessBits = Access.ReadWrite): number {
    const end = rangeEnd(iova, size);
    if (!(end > iova) || this.pages.size === 0) return 0;
    const first = pageOf(iova);
    const last = pageOf(end - 1);
    let cleared = 0;
    if (last - first < this.pages.size) {
      for (let page = first; page <= last; page++) {
        if (this.clearPage(page, perm)) cleared++;
      }
    } else {
      for (const page of [...this.pages.keys()]) {
        if (page >= first && page <= last && this.clearPage(page, perm)) cleared++;
      }
    }
    return cleared;
  }

  /** Forgets everything (DPDK: vhost_user_iotlb_pending_remove_all, on flush). */
  clear(): void {
    this.pages.clear();
  }

  /** Pending misses, oldest first. */
  entries(): PendingMiss[] {
    return [...this.pages.values()].map((p) => ({ iova: p.iova, perm: p.perm }));
  }

  private clearPage(page: number, perm: AccessBits): boolean {
    const pending = this.pages.get(page);
    if (pending === undefined) return false;
    pending.perm &= ~perm;
    if (pending.perm !== 0) return false;
    this.pages.delete(page);
    return true;
  }
}


/**
 * Address arithmetic shared by every strategy and by the pending-miss list.
 *
 * All addresses are JS numbers below 2^53 (see strategy.ts). An end computed as
 * iova + size can still exceed 2^53 (e.g. invalidate(0x1000, 2^53 - 1)), where
 * doubles stop being exact, so every end goes through rangeEnd(), which clamps to
 * ADDRESS_LIMIT. The clamp is exact: if the true sum is <= 2^53 the addition is exact,
 * otherwise the rounded sum is >= 2^53 and clamps.
 */

/** One past the highest address a cache can hold. */
export const ADDRESS_LIMIT = 2 ** 53;

/** Page granularity used for page-keyed structures (the LRU index, the pending-miss list). */
export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 1 << PAGE_SHIFT;

/** Exclusive end of [iova, iova + size), clamped to ADDRESS_LIMIT. */
export function rangeEnd(iova: number, size: number): number {
  const end = iova + size;
  return end < ADDRESS_LIMIT ? end : ADDRESS_LIMIT;
}

/** The 4 KiB page number holding `iova` (exact for any iova < 2^53). */
export function pageOf(iova: number): number {
  return Math.floor(iova / PAGE_SIZE);
}

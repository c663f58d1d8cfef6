/**
 * Approximate memory of a strategy's cache: entries x bytes per entry of the strategy's
 * own structure (a model, not a heap measurement — heap deltas of a few KiB drown in
 * GC noise). Sizes assume 64-bit V8 with pointer compression (Node 20 default builds):
 *
 *  - dpdk: one DpdkNode object per entry: 12 B header + 5 x 4 B fields (iova, size,
 *    uaddr, perm, next) + 3 boxed doubles x 12 B (addresses above 2^30 do not fit a Smi)
 *    = 68 B, rounded to 72 B. (DPDK's own C node is 48 B.)
 *  - interval: one RangeTable slot = 4 Float64 (iova, end, uaddr, stamp) + 1 Uint8 (perm) = 33 B.
 *  - coalescing: 4 Float64 (iova, end, uaddr - iova, stamp with the perm in its low bits) = 32 B.
 *  - lru: the same 33 B slot, plus ~14 B per page in its page hash (OrderedHashMap: key,
 *    value and chain slots of 4 B, plus a bucket per two entries); the hash is read from
 *    the instance after the replay.
 */
import type { IotlbStrategy } from '../iotlb/strategy.js';

export const DPDK_NODE_BYTES = 72;
export const RANGE_SLOT_BYTES = 33;
export const COALESCING_SLOT_BYTES = 32;
export const LRU_PAGE_BYTES = 14;

const MODELS: Record<string, string> = {
  dpdk: `${DPDK_NODE_BYTES} B/entry (list node)`,
  interval: `${RANGE_SLOT_BYTES} B/entry (typed-array slot)`,
  coalescing: `${COALESCING_SLOT_BYTES} B/entry (typed-array slot)`,
  lru: `${RANGE_SLOT_BYTES} B/entry + ${LRU_PAGE_BYTES} B/hashed page`,
};

export function memoryModel(strategy: string): string {
  return MODELS[strategy] ?? 'no model';
}

/** Bytes for `entries` entries of `cache` (a `strategy` instance), or null without a model. */
export function approxBytes(strategy: string, cache: IotlbStrategy, entries: number): number | null {
  switch (strategy) {
    case 'dpdk':
      return entries * DPDK_NODE_BYTES;
    case 'interval':
      return entries * RANGE_SLOT_BYTES;
    case 'coalescing':
      return entries * COALESCING_SLOT_BYTES;
    case 'lru': {
      const pages = (cache as unknown as { pages?: unknown }).pages;
      const hashed = pages instanceof Map ? pages.size : 0;
      return entries * RANGE_SLOT_BYTES + hashed * LRU_PAGE_BYTES;
    }
    default:
      return null;
  }
}

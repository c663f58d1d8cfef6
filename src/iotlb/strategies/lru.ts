/**
 * `lru`: a page-keyed hash (4 KiB page number -> entry index) in front of the same
 * range table as `interval`, with least-recently-used eviction at capacity.
 *
 * The hash is a cache of where each page's entry sat when it was last found. Inserts
 * and invalidates shift indices, so a cached index is only used after checking that
 * the entry there still contains the address (ranges never overlap, so that entry is
 * the right one); otherwise the lookup falls back to binary search and refreshes the
 * page. Stale pages therefore cost time, never correctness. The hash is bounded:
 * when it reaches `maxPages` it is emptied and refills from lookups.
 *
 * Every hit stamps its entry with a clock; eviction removes the smallest stamp.
 */
import { PAGE_SIZE } from '../address.js';
import { LOOKUP_MISS } from '../strategy.js';
import type { AccessBits, LookupOut, StrategyDefinition, StrategyOptions } from '../strategy.js';
import { IntervalStrategy } from './interval.js';

/** Enough pages for a 512 MiB working set in 4 KiB pages. */
export const DEFAULT_MAX_PAGES = 1 << 17;

export class LruStrategy extends IntervalStrategy {
  override readonly name: string = 'lru';
  private readonly pages = new Map<number, number>();
  private readonly maxPages: number;

  constructor(options: StrategyOptions & { maxPages?: number } = {}) {
    super(options);
    this.table.spans = false; // every hit must restamp its entry
    this.maxPages = Math.max(1, options.maxPages ?? DEFAULT_MAX_PAGES);
  }

  override lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
    const t = this.table;
    const page = Math.floor(iova / PAGE_SIZE);
    let i = this.pages.get(page);
    if (i === undefined || !(i < t.count && t.iova[i] <= iova && iova < t.end[i])) {
      i = t.find(iova);
      if (i < 0) {
        this.stats.lookups++;
        this.stats.misses++;
        return LOOKUP_MISS;
      }
      if (this.pages.size >= this.maxPages) this.pages.clear();
      this.pages.set(page, i);
    }
    this.stats.lookups++;
    t.stamp[i] = ++this.clock;
    return t.translate(i, iova, len, access, out);
  }

  override clear(): void {
    super.clear();
    this.pages.clear();
  }
}

export const lru: StrategyDefinition = {
  name: 'lru',
  summary: '4 KiB page hash in front of a range table, least-recently-used eviction',
  create: (options?: StrategyOptions) => new LruStrategy(options),
};

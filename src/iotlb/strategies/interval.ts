/**
 * `interval`: sorted non-overlapping ranges in parallel typed arrays (RangeTable),
 * binary search with a one-entry last-hit cache, bounded size with FIFO eviction
 * (the oldest inserted range goes first; a hit costs no bookkeeping).
 */
import { rangeEnd } from '../address.js';
import type {
  AccessBits, IotlbEntry, IotlbStats, IotlbStrategy, LookupOut, StrategyDefinition, StrategyOptions,
} from '../strategy.js';
import { RangeTable } from '../range-table.js';

export const DEFAULT_CAPACITY = 2048;

export class IntervalStrategy implements IotlbStrategy {
  readonly name: string = 'interval';
  readonly capacity: number;
  readonly stats: IotlbStats;
  protected readonly table: RangeTable;
  /** IotlbStrategy.version: bumped by insert, invalidate and clear (evictions happen inside those). */
  version = 0;
  /** Monotonic counter for stamps (insertion order here, recency in `lru`). */
  protected clock = 0;

  constructor(options: StrategyOptions = {}) {
    this.capacity = Math.max(1, Math.floor(options.capacity ?? DEFAULT_CAPACITY));
    this.table = new RangeTable(Math.min(this.capacity + 2, 1024));
    this.stats = this.table.stats;
  }

  insert(entry: IotlbEntry): void {
    const s = entry.iova;
    const e = rangeEnd(s, entry.size);
    this.stats.inserts++;
    if (!(e > s)) return;
    this.version++;
    const t = this.table;
    const at = t.carve(s, e);
    t.insertAt(at, s, e, entry.uaddr, entry.perm, ++this.clock);
    this.placed(at);
    this.enforceCapacity();
  }

  /** Hook for subclasses: a new range was just written at index `at`. */
  protected placed(_at: number): void {}

  invalidate(iova: number, size: number): number {
    this.stats.invalidations++;
    const e = rangeEnd(iova, size);
    if (!(e > iova)) return 0;
    this.version++;
    const t = this.table;
    t.carve(iova, e);
    this.enforceCapacity(); // a split can add one entry
    return t.affected;
  }

  lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
    return this.table.lookup(iova, len, access, out);
  }

  span(out: LookupOut): void {
    this.table.span(out);
  }

  entries(): IotlbEntry[] {
    return this.table.toEntries();
  }

  clear(): void {
    this.version++;
    this.table.clear();
  }

  /** Evicts smallest-stamp entries until the table fits; never evicts the newest entry. */
  protected enforceCapacity(): void {
    const t = this.table;
    while (t.count > this.capacity) {
      t.removeAt(t.minStamp());
      this.stats.evictions++;
    }
    t.noteSize();
  }
}

export const interval: StrategyDefinition = {
  name: 'interval',
  summary: 'sorted ranges in typed arrays, binary search + last-hit cache, FIFO eviction',
  create: (options?: StrategyOptions) => new IntervalStrategy(options),
};

/**
 * `one-entry`: the cheapest correct cache there is — it remembers only the most recent
 * mapping. Bench-only (not in the strategy registry): it measures what the replay engine
 * itself costs, so the engine can be shown not to hide differences between strategies.
 * Every UPDATE that displaces the held entry, and every INVALIDATE that touches it, counts
 * as an eviction (the replay allows misses only from caches that evicted).
 */
import { rangeEnd } from '../iotlb/address.js';
import { LOOKUP_DENIED, LOOKUP_MISS, emptyStats } from '../iotlb/strategy.js';
import type { AccessBits, IotlbEntry, IotlbStrategy, LookupOut, StrategyDefinition } from '../iotlb/strategy.js';

export class OneEntryStrategy implements IotlbStrategy {
  readonly name = 'one-entry';
  readonly stats = emptyStats();
  version = 0;
  private start = 0;
  private end = 0;
  private uaddr = 0;
  private perm = 0;

  insert(entry: IotlbEntry): void {
    this.stats.inserts++;
    const e = rangeEnd(entry.iova, entry.size);
    if (!(e > entry.iova)) return;
    this.version++;
    if (this.end > this.start) this.stats.evictions++;
    this.start = entry.iova;
    this.end = e;
    this.uaddr = entry.uaddr;
    this.perm = entry.perm;
    this.stats.entries = 1;
    this.stats.peakEntries = 1;
  }

  invalidate(iova: number, size: number): number {
    this.stats.invalidations++;
    this.version++;
    if (this.end > this.start && iova < this.end && rangeEnd(iova, size) > this.start) {
      this.start = this.end = 0;
      this.stats.entries = 0;
      this.stats.evictions++;
      return 1;
    }
    return 0;
  }

  lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
    if (iova < this.start || iova >= this.end) return LOOKUP_MISS;
    if ((this.perm & access) !== access) return LOOKUP_DENIED;
    out.uaddr = this.uaddr + (iova - this.start);
    const mapped = this.end - iova;
    const want = len > 0 ? len : 1;
    return mapped < want ? mapped : want;
  }

  span(out: LookupOut): void {
    out.spanStart = out.spanEnd = 0;
  }

  entries(): IotlbEntry[] {
    return this.end > this.start ? [{ iova: this.start, size: this.end - this.start, uaddr: this.uaddr, perm: this.perm }] : [];
  }

  clear(): void {
    this.version++;
    this.start = this.end = 0;
    this.stats.entries = 0;
  }
}

export const oneEntry: StrategyDefinition = {
  name: 'one-entry',
  summary: 'bench-only: remembers the latest mapping; measures the replay engine itself',
  create: () => new OneEntryStrategy(),
};

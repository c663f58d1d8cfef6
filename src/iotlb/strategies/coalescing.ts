/**
 * `coalescing`: `interval` that merges a newly inserted range with neighbours that
 * continue it in BOTH IOVA and user-address space and carry the same permissions
 * (the "merge contiguous IOTLB entries" idea from the DPDK IOTLB cover letter).
 * A 512 MiB guest mapped as 256 x 2 MiB IOTLB updates becomes one range, so a lookup
 * is the last-hit check and nothing else.
 *
 * Partial invalidates need nothing special: RangeTable.carve() trims or splits the
 * merged range, so invalidating the middle of it leaves two ranges.
 */
import type { StrategyDefinition, StrategyOptions } from '../strategy.js';
import { IntervalStrategy } from './interval.js';

export class CoalescingStrategy extends IntervalStrategy {
  override readonly name: string = 'coalescing';

  protected override placed(at: number): void {
    const t = this.table;
    // Merge with the right neighbour first so `at` stays valid, then with the left.
    if (at + 1 < t.count && this.continues(at, at + 1)) {
      t.end[at] = t.end[at + 1];
      t.removeAt(at + 1);
    }
    if (at > 0 && this.continues(at - 1, at)) {
      t.end[at - 1] = t.end[at];
      t.stamp[at - 1] = t.stamp[at];
      t.removeAt(at);
    }
  }

  /** Whether entry b starts exactly where entry a ends, in IOVA and user space, with equal perm. */
  private continues(a: number, b: number): boolean {
    const t = this.table;
    return t.end[a] === t.iova[b]
      && t.uaddr[a] + (t.end[a] - t.iova[a]) === t.uaddr[b]
      && t.perm[a] === t.perm[b];
  }
}

export const coalescing: StrategyDefinition = {
  name: 'coalescing',
  summary: 'interval + merging of entries contiguous in IOVA and user address with equal perm',
  create: (options?: StrategyOptions) => new CoalescingStrategy(options),
};

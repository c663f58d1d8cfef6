/**
 * `dpdk`: a model of DPDK 17.11's per-virtqueue IOTLB cache (lib/librte_vhost/iotlb.c,
 * "vhost: add iotlb helper functions" in Maxime Coquelin's device-IOTLB series), kept
 * as the baseline the other strategies are measured against:
 *
 *  - one singly linked list of nodes sorted by IOVA (DPDK: a TAILQ of mempool objects);
 *    freed nodes go back to a pool, as rte_mempool_put does;
 *  - at most IOTLB_CACHE_SIZE = 2048 entries; when full, one entry chosen at random is
 *    evicted before the new one is added (vhost_user_iotlb_cache_random_evict;
 *    rte_rand() is replaced by a seeded PRNG so replays are repeatable);
 *  - lookup (vhost_user_iotlb_cache_find) walks the list from the head, skipping
 *    entries that end at or before the address and stopping at the first that starts
 *    after it, then keeps walking to stitch following entries onto the hit.
 *
 * Where this model deliberately differs from 17.11 (all differences are about
 * correctness of the translation, none changes the cost shape of a lookup):
 *
 *  1. Stitching. 17.11 returns the vva of the first entry and keeps adding sizes while
 *     the next entry is contiguous in IOVA only; it never compares uaddr. Two entries
 *     adjacent in IOVA but not in user address would then be reported as one mapping
 *     and the caller would read the wrong bytes past the first entry. The
 *     IotlbStrategy contract is contiguity in BOTH spaces, so this model stops at a
 *     uaddr discontinuity.
 *  2. Permissions while stitching. 17.11 fails the whole lookup (vva = 0, i.e. a miss)
 *     when a stitched entry lacks the permission; here the hit is cut at that entry,
 *     and a lookup whose first entry lacks it returns LOOKUP_DENIED instead of a miss.
 *  3. Insert over an existing entry. 17.11 drops an update whose IOVA is already cached
 *     ("entries must be invalidated before being updated") and never trims overlaps;
 *     the contract here is newest-wins, so overlapping parts of older entries are
 *     trimmed away first.
 *  4. Invalidate. 17.11 removes every overlapping entry whole (and, through an
 *     off-by-one, also one starting exactly at iova + size); this model trims
 *     exactly, like every other strategy, so replays compare like with like.
 *  5. Capacity. In 17.11 the 2048-object mempool is shared with the pending-miss list;
 *     here the bound counts cache entries only (pending misses live in PendingMisses).
 */
import { rangeEnd } from '../address.js';
import { recordSize } from '../stats.js';
import { Prng } from '../prng.js';
import { LOOKUP_DENIED, LOOKUP_MISS, emptyStats } from '../strategy.js';
import type {
  AccessBits, IotlbEntry, IotlbStats, IotlbStrategy, LookupOut, StrategyDefinition, StrategyOptions,
} from '../strategy.js';

/** DPDK's IOTLB_CACHE_SIZE. */
export const IOTLB_CACHE_SIZE = 2048;

class DpdkNode {
  iova = 0;
  size = 0;
  uaddr = 0;
  perm = 0;
  next: DpdkNode | null = null;
}

export class DpdkStrategy implements IotlbStrategy {
  readonly name = 'dpdk';
  readonly capacity: number;
  readonly stats: IotlbStats = emptyStats();
  /** IotlbStrategy.version (this model never offers spans: every lookup walks the list, as DPDK's does). */
  version = 0;
  private head: DpdkNode | null = null;
  private count = 0;
  private readonly pool: DpdkNode[] = [];
  private readonly rng: Prng;

  constructor(options: StrategyOptions = {}) {
    this.capacity = Math.max(1, Math.floor(options.capacity ?? IOTLB_CACHE_SIZE));
    this.rng = new Prng(options.seed ?? 0x17_11);
  }

  insert(entry: IotlbEntry): void {
    this.stats.inserts++;
    const s = entry.iova;
    const e = rangeEnd(s, entry.size);
    if (!(e > s)) return;
    this.version++;
    if (this.count >= this.capacity) this.randomEvict();
    this.carve(s, e);
    const node = this.alloc();
    node.iova = s;
    node.size = e - s;
    node.uaddr = entry.uaddr;
    node.perm = entry.perm;
    let prev: DpdkNode | null = null;
    let cur = this.head;
    while (cur !== null && cur.iova < s) {
      prev = cur;
      cur = cur.next;
    }
    node.next = cur;
    if (prev === null) this.head = node;
    else prev.next = node;
    this.count++;
    // carve() may have split an entry in two; keep the bound.
    while (this.count > this.capacity) this.randomEvict();
    this.noteSize();
  }

  invalidate(iova: number, size: number): number {
    this.version++;
    this.stats.invalidations++;
    const e = rangeEnd(iova, size);
    if (!(e > iova)) return 0;
    const affected = this.carve(iova, e);
    while (this.count > this.capacity) this.randomEvict();
    this.noteSize();
    return affected;
  }

  lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
    const stats = this.stats;
    stats.lookups++;
    let node = this.head;
    while (node !== null) {
      // List sorted by iova.
      if (iova < node.iova) break;
      if (iova >= node.iova + node.size) {
        node = node.next;
        continue;
      }
      if ((node.perm & access) !== access) {
        stats.permissionFaults++;
        return LOOKUP_DENIED;
      }
      stats.hits++;
      out.uaddr = node.uaddr + (iova - node.iova);
      if (!(len > 0)) len = 1;
      let mapped = node.size - (iova - node.iova);
      let cur = node;
      while (mapped < len) {
        const next: DpdkNode | null = cur.next;
        if (next === null
          || next.iova !== cur.iova + cur.size
          || next.uaddr !== cur.uaddr + cur.size // difference 1: uaddr must continue too
          || (next.perm & access) !== access) break;
        mapped += next.size;
        cur = next;
      }
      return mapped < len ? mapped : len;
    }
    stats.misses++;
    return LOOKUP_MISS;
  }

  /** No span: every lookup walks the list, as DPDK's does. */
  span(out: LookupOut): void {
    out.spanStart = out.spanEnd = 0;
  }

  entries(): IotlbEntry[] {
    const out: IotlbEntry[] = [];
    for (let n = this.head; n !== null; n = n.next) {
      out.push({ iova: n.iova, size: n.size, uaddr: n.uaddr, perm: n.perm });
    }
    return out;
  }

  clear(): void {
    this.version++;
    let n = this.head;
    while (n !== null) {
      const next: DpdkNode | null = n.next;
      this.free(n);
      n = next;
    }
    this.head = null;
    this.count = 0;
    this.noteSize();
  }

  /** Removes [s, e) from the list, trimming or splitting straddling entries; returns entries touched. */
  private carve(s: number, e: number): number {
    let affected = 0;
    let prev: DpdkNode | null = null;
    let node = this.head;
    while (node !== null && node.iova < e) {
      const next: DpdkNode | null = node.next;
      const ns = node.iova;
      const ne = ns + node.size;
      if (ne <= s) {
        prev = node;
      } else {
        affected++;
        if (ns < s && ne > e) {
          // Split: keep [ns, s) in place, add [e, ne) after it.
          const right = this.alloc();
          right.iova = e;
          right.size = ne - e;
          right.uaddr = node.uaddr + (e - ns);
          right.perm = node.perm;
          right.next = next;
          node.size = s - ns;
          node.next = right;
          this.count++;
          break;
        } else if (ns < s) {
          node.size = s - ns;
          prev = node;
        } else if (ne > e) {
          node.uaddr += e - ns;
          node.iova = e;
          node.size = ne - e;
          break;
        } else {
          if (prev === null) this.head = next;
          else prev.next = next;
          this.free(node);
          this.count--;
        }
      }
      node = next;
    }
    return affected;
  }

  private randomEvict(): void {
    if (this.count === 0) return;
    let idx = this.rng.below(this.count);
    let prev: DpdkNode | null = null;
    let node = this.head;
    while (node !== null && idx > 0) {
      prev = node;
      node = node.next;
      idx--;
    }
    if (node === null) return;
    if (prev === null) this.head = node.next;
    else prev.next = node.next;
    this.free(node);
    this.count--;
    this.stats.evictions++;
  }

  private alloc(): DpdkNode {
    return this.pool.pop() ?? new DpdkNode();
  }

  private free(node: DpdkNode): void {
    node.next = null;
    this.pool.push(node);
  }

  private noteSize(): void {
    recordSize(this.stats, this.count);
  }
}

export const dpdk: StrategyDefinition = {
  name: 'dpdk',
  summary: 'model of DPDK 17.11: IOVA-sorted list, linear walk, 2048 entries, random eviction',
  create: (options?: StrategyOptions) => new DpdkStrategy(options),
};

import { GiB, PAGE } from './layout.js';

/**
 * Linux's IOVA allocator in outline: sizes rounded up to a power of two pages and aligned
 * to it; freed ranges of up to 32 pages go to a per-size LIFO cache (the "rcache", two
 * 128-entry magazines here) and are handed out again first; otherwise the allocator takes
 * the highest free range below the 32-bit DMA limit, growing downwards.
 */
export class IovaAllocator {
  private nextPfn: number;
  private readonly rcache = new Map<number, number[]>();
  private readonly freed = new Map<number, number[]>(); // by order, kept sorted high to low
  static readonly RCACHE_MAX_ORDER = 5;
  static readonly RCACHE_DEPTH = 256;

  constructor(readonly limit = 4 * GiB) {
    this.nextPfn = limit / PAGE;
  }

  static orderFor(pages: number): number {
    let order = 0;
    while (1 << order < pages) order++;
    return order;
  }

  /** Returns the IOVA (page aligned) of a fresh range of at least `pages` pages. */
  alloc(pages: number): number {
    const order = IovaAllocator.orderFor(pages);
    const cached = this.rcache.get(order);
    if (order <= IovaAllocator.RCACHE_MAX_ORDER && cached && cached.length > 0) return cached.pop()! * PAGE;
    const tree = this.freed.get(order);
    if (tree && tree.length > 0) return tree.shift()! * PAGE;
    const size = 1 << order;
    this.nextPfn = Math.floor((this.nextPfn - size) / size) * size;
    if (this.nextPfn < 1) throw new RangeError('IOVA space exhausted');
    return this.nextPfn * PAGE;
  }

  free(iova: number, pages: number): void {
    const order = IovaAllocator.orderFor(pages);
    const pfn = iova / PAGE;
    if (order <= IovaAllocator.RCACHE_MAX_ORDER) {
      let cached = this.rcache.get(order);
      if (!cached) this.rcache.set(order, (cached = []));
      if (cached.length < IovaAllocator.RCACHE_DEPTH) {
        cached.push(pfn);
        return;
      }
    }
    let tree = this.freed.get(order);
    if (!tree) this.freed.set(order, (tree = []));
    const at = tree.findIndex((p) => p < pfn);
    tree.splice(at < 0 ? tree.length : at, 0, pfn);
  }
}

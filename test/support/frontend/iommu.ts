/**
 * An emulated IOMMU for the test front-end: an IOVA space separate from guest-physical
 * addresses, mapped in pages of one size (4 KiB, 2 MiB or 1 GiB), each page with its own
 * guest-physical target and permission — the guest's IOMMU page table, as QEMU's
 * intel-iommu model walks it when it answers a device-IOTLB miss.
 *
 * Also Linux's IOVA allocator (drivers/iommu/iova.c) in the shape that matters here:
 * allocations are rounded up to a power-of-two number of pages and size-aligned, carved
 * top-down from a limit (the 32-bit DMA limit by default, where Linux tries first for a
 * PCI device), and freed ranges go to per-size LIFO caches that the next allocation of that
 * size takes first (the rcache), so a just-unmapped IOVA is immediately reused for another
 * buffer — which is what makes a strict IOMMU's invalidations matter.
 */
import { IotlbPerm } from '../../../src/protocol/index.js';

export const PAGE_4K = 4096;
export const PAGE_2M = 2 * 1024 * 1024;
export const PAGE_1G = 1024 * 1024 * 1024;


/** Result of translate(), reused (no allocation). */
export interface IommuTranslation {
  /** IOVA of the start of the page containing the address. */
  pageIova: number;
  /** Guest-physical address of that page. */
  pageGpa: number;
  perm: number;
}

const CACHED_ORDERS = 6; // Linux: IOVA_RANGE_CACHE_MAX_SIZE, sizes up to 32 pages

export class EmulatedIommu {
  /** iova page number -> gpa page number * 4 + perm. */
  private readonly table = new Map<number, number>();
  /** Lowest IOVA handed out by the top-down allocator so far. */
  private allocTop: number;
  private readonly rcache: number[][] = Array.from({ length: CACHED_ORDERS }, () => []);
  readonly stats = { maps: 0, unmaps: 0, pagesMapped: 0, allocs: 0, rcacheHits: 0 };

  constructor(readonly pageSize: number, readonly iovaLimit = 2 ** 32) {
    if (pageSize !== PAGE_4K && pageSize !== PAGE_2M && pageSize !== PAGE_1G) throw new Error(`IOMMU page size ${pageSize} is not 4K, 2M or 1G`);
    this.allocTop = iovaLimit;
  }

  get mappedPages(): number {
    return this.table.size;
  }

  /** Maps [iova, iova+size) -> [gpa, gpa+size) with perm; iova, gpa, size page-aligned. */
  map(iova: number, gpa: number, size: number, perm: number): void {
    const p = this.pageSize;
    if (iova % p !== 0 || gpa % p !== 0 || size % p !== 0 || size <= 0) {
      throw new Error(`IOMMU map 0x${iova.toString(16)} -> 0x${gpa.toString(16)} +0x${size.toString(16)}: not aligned to the ${p}-byte page`);
    }
    if (perm < IotlbPerm.RO || perm > IotlbPerm.RW) throw new Error(`IOMMU map: perm ${perm}`);
    const first = iova / p;
    const gp = gpa / p;
    const n = size / p;
    for (let i = 0; i < n; i++) this.table.set(first + i, (gp + i) * 4 + perm);
    this.stats.maps++;
    this.stats.pagesMapped += n;
  }

  /** Removes every page overlapping [iova, iova+size); returns how many were mapped. */
  unmap(iova: number, size: number): number {
    const p = this.pageSize;
    const first = Math.floor(iova / p);
    const last = Math.floor((iova + size - 1) / p);
    let removed = 0;
    for (let i = first; i <= last; i++) if (this.table.delete(i)) removed++;
    this.stats.unmaps++;
    return removed;
  }

  /** Looks up the page containing iova; false if unmapped. */
  translate(iova: number, out: IommuTranslation): boolean {
    const p = this.pageSize;
    const pn = Math.floor(iova / p);
    const v = this.table.get(pn);
    if (v === undefined) return false;
    out.pageIova = pn * p;
    out.pageGpa = Math.floor(v / 4) * p;
    out.perm = v & 3;
    return true;
  }

  /** IOVA -> GPA of one address (or -1), for checks. */
  toGpa(iova: number): number {
    const p = this.pageSize;
    const v = this.table.get(Math.floor(iova / p));
    return v === undefined ? -1 : Math.floor(v / 4) * p + (iova % p);
  }

  /** Linux alloc_iova_fast(): `pages` (rounded up to a power of two), size-aligned, top-down. */
  allocIova(pages: number): number {
    let order = 0;
    while ((1 << order) < pages) order++;
    this.stats.allocs++;
    if (order < CACHED_ORDERS) {
      const cached = this.rcache[order].pop();
      if (cached !== undefined) {
        this.stats.rcacheHits++;
        return cached;
      }
    }
    const bytes = (1 << order) * this.pageSize;
    let top = this.allocTop - bytes;
    top -= top % bytes; // size-aligned
    if (top < this.pageSize) throw new Error('IOVA space exhausted');
    this.allocTop = top;
    return top;
  }

  /** free_iova_fast(): back into the size's cache (LIFO), as Linux's rcache does. */
  freeIova(iova: number, pages: number): void {
    let order = 0;
    while ((1 << order) < pages) order++;
    if (order < CACHED_ORDERS) this.rcache[order].push(iova);
    // Larger ranges are simply leaked (never happens with packet buffers).
  }

  /** Pages (of this IOMMU) an allocation for `len` bytes at page offset `offset` needs. */
  pagesFor(offset: number, len: number): number {
    return Math.ceil((offset + len) / this.pageSize);
  }
}

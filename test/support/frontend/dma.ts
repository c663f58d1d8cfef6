/**
 * The guest's DMA mappings, for the test front-end: which device address each ring and
 * buffer gets, and what is mapped in the emulated IOMMU (iommu.ts) when.
 *
 *  - 'off': no IOMMU; rings are given by front-end virtual address (uaddrBase + gpa),
 *    buffers by guest-physical address.
 *  - 'static': rings and pools mapped once at staticIovaBase + gpa with 4K, 2M or 1G pages
 *    (a DPDK guest with VFIO); buffers need nothing more.
 *  - 'dynamic': each ring one dma_alloc_coherent() allocation; each buffer mapped before it
 *    is posted and unmapped when the device is done (a Linux guest with a strict IOMMU),
 *    with IOVAs from Linux's top-down allocator.
 *
 * Nothing here sends an UPDATE: the device learns mappings by missing (iotlb-service.ts
 * answers). An unmap sends an INVALIDATE and waits for its ack.
 */
import { IotlbPerm } from '../../../src/protocol/index.js';
import { PAGE_1G, PAGE_4K, type EmulatedIommu } from './iommu.js';
import type { IotlbService } from './iotlb-service.js';
import type { ResolvedFrontendOptions } from './options.js';
import type { DriverRing } from './vring.js';

type DmaOptions = Pick<ResolvedFrontendOptions, 'iommu' | 'pageSize' | 'uaddrBase' | 'staticIovaBase' | 'ringPerms' | 'txPerm' | 'rxPerm'>;

export class Dma {
  constructor(private readonly iommu: EmulatedIommu | null, private readonly iotlb: IotlbService, private readonly opts: DmaOptions) {}

  /** Maps [iova, iova+size) -> gpa in the IOMMU (no message: the device learns by missing) and answers deferred misses it covers. */
  mapPages(iova: number, gpa: number, size: number, perm: number): void {
    this.iommu!.map(iova, gpa, size, perm);
    this.iotlb.mapped(iova, size);
  }

  /** Unmaps [iova, iova+size) in the IOMMU and invalidates it in the device IOTLB (waiting for the ack). */
  unmapPages(iova: number, size: number): void {
    this.iommu!.unmap(iova, size);
    this.iotlb.invalidate(iova, size);
  }

  /** Static mappings: the IOVA of guest-physical gpa. */
  staticIova(gpa: number): number {
    return this.opts.staticIovaBase + gpa;
  }

  /** Dynamic mode: dma_map_single() — allocate an IOVA, map the buffer's pages. Returns the IOVA of gpa. */
  dmaMap(gpa: number, len: number, perm: number): number {
    const mmu = this.iommu!;
    const off = gpa % PAGE_4K;
    const pages = mmu.pagesFor(off, len);
    const base = mmu.allocIova(pages);
    this.mapPages(base, gpa - off, pages * PAGE_4K, perm);
    return base + off;
  }

  /**
   * Dynamic mode: dma_unmap_single() with a strict IOMMU for what dmaMap() returned —
   * unmap the whole allocation, invalidate (waiting for the ack), free the IOVA.
   */
  dmaUnmap(addr: number, len: number): void {
    const mmu = this.iommu!;
    const off = addr % PAGE_4K;
    const base = addr - off;
    const pages = mmu.pagesFor(off, len);
    let alloc = 1;
    while (alloc < pages) alloc <<= 1;
    this.unmapPages(base, alloc * PAGE_4K);
    mmu.freeIova(base, pages);
  }

  /** The device address of a buffer about to be posted (mapping it first in dynamic mode). */
  bufferAddr(gpa: number, len: number, perm: number): number {
    if (this.opts.iommu === 'dynamic') return this.dmaMap(gpa, len, perm);
    if (this.opts.iommu === 'static') return this.staticIova(gpa);
    return gpa;
  }

  /** The device is done with a buffer posted at bufferAddr(): unmaps it in dynamic mode. */
  releaseBuffer(addr: number, len: number): void {
    if (this.opts.iommu === 'dynamic') this.dmaUnmap(addr, len);
  }

  /**
   * Gives each ring its device addresses, mapping it (dynamic: the rings only, static:
   * rings and pools, everything at once). `ringsEnd`: first guest-physical byte after the rings.
   */
  mapRingsAndPools(rx: DriverRing, tx: DriverRing, ringsEnd: number): void {
    const o = this.opts;
    const rings = [rx, tx];
    for (const r of rings) {
      const l = r.layout;
      let dev: number;
      if (o.iommu === 'dynamic') {
        // dma_alloc_coherent(): one allocation for the ring, bidirectional.
        const bytes = Math.ceil((l.end - l.descAddr) / PAGE_4K) * PAGE_4K;
        dev = this.iommu!.allocIova(bytes / PAGE_4K);
        this.mapPages(dev, l.descAddr, bytes, IotlbPerm.RW);
      } else {
        dev = (o.iommu === 'off' ? o.uaddrBase : o.staticIovaBase) + l.descAddr;
      }
      r.descDev = dev;
      r.availDev = dev + (l.availAddr - l.descAddr);
      r.usedDev = dev + (l.usedAddr - l.descAddr);
    }
    if (o.iommu !== 'static') return;
    const p = o.pageSize;
    if (p === PAGE_1G) {
      // One page holds everything: it must be RW (the used rings and RX buffers are in it).
      this.mapPages(this.staticIova(0), 0, PAGE_1G, IotlbPerm.RW);
      return;
    }
    if (p === PAGE_4K && o.ringPerms === 'split') {
      // Per page: desc + avail read-only, used read-write, as a careful guest would.
      for (const r of rings) {
        const l = r.layout;
        const usedPage = Math.floor(l.usedAddr / PAGE_4K) * PAGE_4K;
        this.mapPages(this.staticIova(l.descAddr), l.descAddr, usedPage - l.descAddr, IotlbPerm.RO);
        const end = Math.ceil(l.end / PAGE_4K) * PAGE_4K;
        this.mapPages(this.staticIova(usedPage), usedPage, end - usedPage, IotlbPerm.RW);
      }
    } else {
      this.mapPages(this.staticIova(0), 0, Math.ceil(ringsEnd / p) * p, IotlbPerm.RW);
    }
    this.mapPages(this.staticIova(tx.pool.gpa), tx.pool.gpa, tx.pool.bytes, o.txPerm);
    this.mapPages(this.staticIova(rx.pool.gpa), rx.pool.gpa, rx.pool.bytes, o.rxPerm);
  }
}

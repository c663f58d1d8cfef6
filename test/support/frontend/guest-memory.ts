/**
 * The test front-end's guest memory: one memfd mapped here and shared with the back-end by
 * SET_MEM_TABLE as guest-physical [0, size), and where things live in it. From 0: the RX
 * ring, the TX ring (each 4 KiB aligned), then the TX pool and the RX pool, each aligned to
 * 2 MiB so pools and rings never share a mapping block; after the pools, memory tests take
 * for special buffers (allocGuest()). Laid out once, before anything is mapped.
 */
import { mapFd, memfdCreate, closeFd, unmap } from '../../../src/sys/index.js';
import { PAGE_2M, PAGE_4K } from './iommu.js';
import { layoutRings, type RingLayout } from './split-driver.js';
import type { ResolvedFrontendOptions } from './options.js';

/** A buffer pool's place in guest memory. */
export interface PoolRegion {
  gpa: number;
  bytes: number;
}

export class SharedGuestMemory {
  readonly memfd: number;
  /** Host view of guest-physical [0, size). */
  readonly bytes: Uint8Array;
  readonly size: number;
  readonly rxRing: RingLayout;
  readonly txRing: RingLayout;
  /** First guest-physical byte after the rings (everything below is ring memory). */
  readonly ringsEnd: number;
  readonly rxPool: PoolRegion;
  readonly txPool: PoolRegion;
  /** First free guest-physical byte after the pools. */
  private spareNext: number;

  constructor(o: ResolvedFrontendOptions) {
    const page = (x: number): number => Math.ceil(x / PAGE_4K) * PAGE_4K;
    const block = (x: number): number => Math.ceil(x / PAGE_2M) * PAGE_2M;
    this.rxRing = layoutRings(o.queueSize, 0);
    this.txRing = layoutRings(o.queueSize, page(this.rxRing.end));
    this.ringsEnd = page(this.txRing.end);
    this.txPool = { gpa: block(this.ringsEnd), bytes: block(o.txSlots * o.slotSize) };
    this.rxPool = { gpa: this.txPool.gpa + this.txPool.bytes, bytes: block(o.rxSlots * o.slotSize) };
    this.spareNext = this.rxPool.gpa + this.rxPool.bytes;
    if (this.spareNext + PAGE_2M > o.memoryBytes) throw new Error(`guest memory of ${o.memoryBytes} bytes is too small for the pools`);

    this.size = o.memoryBytes;
    this.memfd = memfdCreate('vit-frontend-guest', o.memoryBytes);
    this.bytes = new Uint8Array(mapFd(this.memfd, 0, o.memoryBytes, true));
  }

  /** Guest-physical memory for special test buffers, after the pools (4 KiB aligned unless align says otherwise). */
  allocGuest(bytes: number, align = PAGE_4K): number {
    const gpa = Math.ceil(this.spareNext / align) * align;
    if (gpa + bytes > this.size) throw new Error('guest memory exhausted');
    this.spareNext = gpa + bytes;
    return gpa;
  }

  /** Unmaps and closes the memfd; once. */
  close(): void {
    unmap(this.bytes.buffer as ArrayBuffer);
    closeFd(this.memfd);
  }
}

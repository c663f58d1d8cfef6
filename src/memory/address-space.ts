/**
 * Address translation for the data path: one small interface, three implementations.
 *
 *   GuestPhysicalSpace  descriptor addresses without an IOMMU (guest-physical)
 *   UserAddressSpace    ring addresses without an IOMMU (front-end virtual, from SET_VRING_ADDR)
 *   IotlbAddressSpace   every address with VIRTIO_F_IOMMU_PLATFORM (IOVA -> IOTLB -> uaddr)
 *
 * map() never allocates and never throws: the result is a number, and the host bytes
 * come back through the reused `bytes` / `offset` fields. A successful result is always
 * inside one region's bytes: offset + result <= bytes.length.
 */
import { Access, LOOKUP_MISS, lookupOut, type IotlbStrategy, type LookupOut } from '../iotlb/strategy.js';
import type { GuestMemory, GuestRegion } from './guest-memory.js';
import { NO_WIDE, type WideView } from './wide-view.js';

/** Outside guest memory, or the mapping lacks the requested access. */
export const MAP_FAULT = -1;
/** IOTLB miss (IOMMU only): retry after the front-end answers the miss. */
export const MAP_MISS = 0;

/** The IOTLB's access bits (one definition: src/iotlb/strategy.ts), named for the hot loops. */
export const ACCESS_READ = Access.Read;
export const ACCESS_WRITE = Access.Write;

/** Why the last map() returned MAP_FAULT (for the broken-queue reason). */
export const FAULT_NONE = 0;
/** The address is not in guest memory (or the IOTLB entry points outside every region). */
export const FAULT_UNMAPPED = 1;
/** The IOTLB maps the address without the requested access. */
export const FAULT_DENIED = 2;

export interface AddressSpace {
  /**
   * Translate [addr, addr+len) for access (1 read, 2 write). On success sets
   * this.bytes/this.offset to the host bytes of addr and returns how many bytes are
   * contiguous from there (1..len); the caller loops for the rest. len must be >= 1.
   */
  map(addr: number, len: number, access: number): number;
  bytes: Uint8Array;
  offset: number;
  /**
   * Wide views of `bytes` (GuestRegion.wide, same start): let copies and indirect-table
   * reads move 4 or 8 bytes at a time. May be NO_WIDE (unaligned region): callers then go
   * byte-wise. Optional so a decorator that does not forward it still works (its pieces
   * are then copied byte-wise); decorators should forward it with bytes/offset.
   */
  wide?: WideView;
  /** The IOVA that missed, for the miss report (valid after MAP_MISS). */
  missAddr: number;
  /** FAULT_UNMAPPED or FAULT_DENIED after MAP_FAULT. */
  faultKind: number;
  /**
   * Runs (VirtQueue.reserveRun) translate a burst's buffers against a window instead of
   * asking map() for each. window() says whether this space can vouch for [addr, addr+len)
   * with `access` WITHOUT a lookup that would have to be counted, traced or reported as a
   * miss; if so it sets bytes / wide to the window's host bytes and any address `a` in
   * [windowStart, windowEnd) is at bytes[a - windowBase], with the same access, until the
   * mappings change (the caller uses a window within one burst only). False is not a miss:
   * the caller takes map() for that buffer.
   */
  window(addr: number, len: number, access: number): boolean;
  readonly windowBase: number;
  readonly windowStart: number;
  readonly windowEnd: number;
  /** Counts `n` translations a run made inside windows, as map() would have counted them. */
  countWindowed(n: number): void;
  /**
   * True when translating bytes the device will not touch costs the guest something (an
   * IOTLB miss round trip): a device-writable buffer is then translated only as far as the
   * device writes (virtqueue/chain.ts writableSpan). False for guest memory, where checking a
   * whole buffer against the regions is free, so a descriptor claiming more memory than the
   * guest has still breaks its ring.
   */
  readonly translatesOnDemand: boolean;
}

const EMPTY = new Uint8Array(0);

/** Shared last-hit cache logic: [lo, hi) in the space's address kind -> bytes at base. */
abstract class RegionSpace implements AddressSpace {
  readonly translatesOnDemand = false;
  bytes: Uint8Array = EMPTY;
  offset = 0;
  wide: WideView = NO_WIDE;
  missAddr = 0;
  faultKind = FAULT_NONE;
  // Last region hit, as plain numbers so the fast path is three compares.
  protected lo = 0;
  protected hi = 0;
  protected hitBytes: Uint8Array = EMPTY;
  protected hitWide: WideView = NO_WIDE;
  protected gen = -1;

  constructor(readonly memory: GuestMemory) {}

  /** The whole region the address falls in: translating inside it has no side effect. */
  window(addr: number, len: number, access: number): boolean {
    return this.map(addr, len, access) === len;
  }
  get windowBase(): number {
    return this.lo;
  }
  get windowStart(): number {
    return this.lo;
  }
  get windowEnd(): number {
    return this.hi;
  }
  countWindowed(_n: number): void {}

  map(addr: number, len: number, _access: number): number {
    if (addr >= this.lo && addr < this.hi && this.gen === this.memory.generation) {
      this.bytes = this.hitBytes;
      this.wide = this.hitWide;
      this.offset = addr - this.lo;
      const room = this.hi - addr;
      return len <= room ? len : room;
    }
    return this.slowMap(addr, len);
  }

  protected abstract find(addr: number): GuestRegion | null;
  protected abstract startOf(r: GuestRegion): number;

  private slowMap(addr: number, len: number): number {
    const r = this.find(addr);
    if (r === null) {
      this.faultKind = FAULT_UNMAPPED;
      return MAP_FAULT;
    }
    this.lo = this.startOf(r);
    this.hi = this.lo + r.size;
    this.hitBytes = r.bytes;
    this.hitWide = r.wide;
    this.gen = this.memory.generation;
    this.bytes = r.bytes;
    this.wide = r.wide;
    this.offset = addr - this.lo;
    const room = this.hi - addr;
    return len <= room ? len : room;
  }
}

/** Guest-physical addresses (descriptor buffers without an IOMMU). */
export class GuestPhysicalSpace extends RegionSpace {
  protected find(addr: number): GuestRegion | null {
    return this.memory.findGuest(addr);
  }
  protected startOf(r: GuestRegion): number {
    return r.guestAddr;
  }
}

/** Front-end virtual addresses (ring addresses from SET_VRING_ADDR without an IOMMU). */
export class UserAddressSpace extends RegionSpace {
  protected find(addr: number): GuestRegion | null {
    return this.memory.findUser(addr);
  }
  protected startOf(r: GuestRegion): number {
    return r.userAddr;
  }
}

/**
 * IOVAs translated through an IOTLB cache (one per queue, as DPDK does, so lookups take
 * no lock), then from front-end virtual address to host bytes via the regions.
 *
 * When the strategy offers a span after a hit (IotlbStrategy.span: a range its entry maps linearly), the
 * space keeps it, clipped to the region it lands in, and answers the next addresses
 * inside it with the same three compares as a guest-physical lookup, counting them as
 * lookups and hits in the strategy's stats. The span is dropped the moment the
 * strategy's `version` moves (any UPDATE, INVALIDATE or eviction, applied on this same
 * thread) or the memory table changes, so it can never outlive its entry.
 */
export class IotlbAddressSpace implements AddressSpace {
  readonly translatesOnDemand = true;
  bytes: Uint8Array = EMPTY;
  offset = 0;
  wide: WideView = NO_WIDE;
  missAddr = 0;
  faultKind = FAULT_NONE;
  private readonly out: LookupOut = lookupOut();
  // Last region hit by user address.
  private lo = 0;
  private hi = 0;
  private hitBytes: Uint8Array = EMPTY;
  private hitWide: WideView = NO_WIDE;
  private gen = -1;
  // The kept span: IOVAs [spanLo, spanHi) with `spanPerm`, at region offset iova + spanDelta.
  private spanLo = 0;
  private spanHi = 0;
  private spanPerm = 0;
  private spanDelta = 0;
  private spanVersion = -1;

  constructor(readonly strategy: IotlbStrategy, readonly memory: GuestMemory) {}

  map(addr: number, len: number, access: number): number {
    if (addr >= this.spanLo && addr < this.spanHi && (this.spanPerm & access) === access &&
        this.spanVersion === this.strategy.version && this.gen === this.memory.generation) {
      const stats = this.strategy.stats;
      stats.lookups++;
      stats.hits++;
      this.bytes = this.hitBytes;
      this.wide = this.hitWide;
      this.offset = addr + this.spanDelta;
      const room = this.spanHi - addr;
      return len <= room ? len : room;
    }
    return this.lookup(addr, len, access);
  }

  /**
   * The kept span as a run's window: only what an earlier lookup vouched for, still at the
   * strategy's version and memory generation, with the access it granted. No lookup here
   * (a lookup is counted and may miss): outside the span the run ends and map() decides.
   */
  window(addr: number, len: number, access: number): boolean {
    if (!(addr >= this.spanLo && addr + len <= this.spanHi && (this.spanPerm & access) === access &&
        this.spanVersion === this.strategy.version && this.gen === this.memory.generation)) return false;
    this.bytes = this.hitBytes;
    this.wide = this.hitWide;
    this.offset = addr + this.spanDelta;
    return true;
  }

  get windowBase(): number {
    return -this.spanDelta;
  }
  get windowStart(): number {
    return this.spanLo;
  }
  get windowEnd(): number {
    return this.spanHi;
  }

  /** A run's translations inside the span are lookups and hits, as map() counts them. */
  countWindowed(n: number): void {
    const stats = this.strategy.stats;
    stats.lookups += n;
    stats.hits += n;
  }

  private lookup(addr: number, len: number, access: number): number {
    const out = this.out;
    const n = this.strategy.lookup(addr, len, access, out);
    if (n <= 0) {
      if (n === LOOKUP_MISS) {
        this.missAddr = addr;
        return MAP_MISS;
      }
      this.faultKind = FAULT_DENIED;
      return MAP_FAULT;
    }
    const uaddr = out.uaddr;
    if (!(uaddr >= this.lo && uaddr < this.hi && this.gen === this.memory.generation)) {
      const r = this.memory.findUser(uaddr);
      if (r === null) {
        this.faultKind = FAULT_UNMAPPED;
        return MAP_FAULT;
      }
      this.lo = r.userAddr;
      this.hi = r.userEnd;
      this.hitBytes = r.bytes;
      this.hitWide = r.wide;
      this.gen = this.memory.generation;
    }
    this.keepSpan(addr, uaddr, access);
    this.bytes = this.hitBytes;
    this.wide = this.hitWide;
    this.offset = uaddr - this.lo;
    const room = this.hi - uaddr;
    const m = n < len ? n : len;
    return m <= room ? m : room;
  }

  /** Keeps the strategy's span around addr (if it gave one), clipped to the current region. */
  private keepSpan(addr: number, uaddr: number, access: number): void {
    const out = this.out;
    const version = this.strategy.version;
    this.strategy.span(out);
    if (!(out.spanEnd > out.spanStart && out.spanStart <= addr && addr < out.spanEnd)) {
      this.spanHi = 0;
      return;
    }
    const delta = uaddr - addr; // user address = iova + delta inside the span
    const lo = Math.max(out.spanStart, this.lo - delta);
    const hi = Math.min(out.spanEnd, this.hi - delta);
    if (!(hi > lo)) {
      this.spanHi = 0;
      return;
    }
    // The lookup granted `access` for the span; a second access granted on the same span
    // in the same version is added (the entry grants both), otherwise the span restarts.
    const same = lo === this.spanLo && hi === this.spanHi && delta - this.lo === this.spanDelta && version === this.spanVersion;
    this.spanPerm = same ? this.spanPerm | access : access;
    this.spanLo = lo;
    this.spanHi = hi;
    this.spanDelta = delta - this.lo;
    this.spanVersion = version;
  }
}

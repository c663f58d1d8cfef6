/**
 * Guest memory as the back-end sees it: a small set of regions, each a range of
 * guest-physical addresses that is also a range of front-end (QEMU) virtual addresses,
 * backed by host bytes (a Uint8Array over an mmapped fd in production, over a plain
 * ArrayBuffer / SharedArrayBuffer in tests).
 *
 * Addresses and sizes are JS numbers: the control path rejects anything at or above
 * 2^53, and addRegion() re-checks it. Lookups are pure number compares; nothing here
 * allocates after addRegion().
 */
import { wideOf, type WideView } from './wide-view.js';
import { ADDRESS_LIMIT } from '../iotlb/address.js';

/** SET_MEM_TABLE carries at most 8 regions; ADD_MEM_REG may add up to this many. */
export const MAX_MEM_REGIONS = 512;
/** One past the highest address the data path can represent exactly. */

/** What the control path hands over for one region. */
export interface GuestRegionInit {
  guestAddr: number;
  userAddr: number;
  size: number;
  mmapOffset: number;
  /** Host bytes of the region: bytes[0] is guestAddr. Must hold at least `size` bytes. */
  bytes: Uint8Array;
}

export class GuestRegion {
  readonly guestAddr: number;
  readonly userAddr: number;
  readonly size: number;
  readonly mmapOffset: number;
  /** Exactly `size` bytes; bytes[0] is guestAddr / userAddr. */
  readonly bytes: Uint8Array;
  /** guestAddr + size (exclusive). */
  readonly guestEnd: number;
  /** userAddr + size (exclusive). */
  readonly userEnd: number;
  /** The same bytes as 4- and 8-byte units, for wide copies (wide-view.ts). */
  readonly wide: WideView;

  constructor(init: GuestRegionInit) {
    this.guestAddr = init.guestAddr;
    this.userAddr = init.userAddr;
    this.size = init.size;
    this.mmapOffset = init.mmapOffset;
    this.bytes = init.bytes.length === init.size ? init.bytes : init.bytes.subarray(0, init.size);
    this.guestEnd = init.guestAddr + init.size;
    this.userEnd = init.userAddr + init.size;
    this.wide = wideOf(this.bytes);
  }

  /** For descriptions and logs only. */
  toString(): string {
    return `gpa 0x${this.guestAddr.toString(16)}..0x${this.guestEnd.toString(16)} ` +
      `uva 0x${this.userAddr.toString(16)} size 0x${this.size.toString(16)}`;
  }
}

function checkAddress(field: string, value: unknown): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new Error(`memory region ${field} must be a non-negative integer, got ${String(value)}`);
  }
  if (value >= ADDRESS_LIMIT) {
    throw new Error(`memory region ${field} 0x${value.toString(16)} is at or above 2^53`);
  }
}

/** Index of the last region whose `key` start is <= addr, or -1 (regions sorted by that start). */
function floorIndex(list: readonly GuestRegion[], addr: number, byGuest: boolean): number {
  let lo = 0;
  let hi = list.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const start = byGuest ? list[mid].guestAddr : list[mid].userAddr;
    if (start <= addr) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

export class GuestMemory {
  /** Regions sorted by guestAddr. */
  private byGuest: GuestRegion[] = [];
  /** The same regions sorted by userAddr. */
  private byUser: GuestRegion[] = [];
  /**
   * Bumped on every add/remove: address spaces cache their last hit and revalidate
   * it against this, so a removed region is never used again.
   */
  generation = 0;

  constructor(readonly maxRegions: number = MAX_MEM_REGIONS) {}

  get regions(): readonly GuestRegion[] {
    return this.byGuest;
  }

  get count(): number {
    return this.byGuest.length;
  }

  /** Validates and adds a region; throws an Error naming the offending field. */
  addRegion(init: GuestRegionInit): GuestRegion {
    checkAddress('guestAddr', init.guestAddr);
    checkAddress('userAddr', init.userAddr);
    checkAddress('size', init.size);
    checkAddress('mmapOffset', init.mmapOffset);
    if (init.size === 0) throw new Error('memory region size must be > 0');
    if (init.guestAddr + init.size > ADDRESS_LIMIT) {
      throw new Error(`memory region guestAddr+size (0x${init.guestAddr.toString(16)} + 0x${init.size.toString(16)}) overflows 2^53`);
    }
    if (init.userAddr + init.size > ADDRESS_LIMIT) {
      throw new Error(`memory region userAddr+size (0x${init.userAddr.toString(16)} + 0x${init.size.toString(16)}) overflows 2^53`);
    }
    if (!(init.bytes instanceof Uint8Array)) throw new Error('memory region bytes must be a Uint8Array');
    if (init.bytes.length < init.size) {
      throw new Error(`memory region bytes holds ${init.bytes.length} bytes, fewer than size 0x${init.size.toString(16)}`);
    }
    if (this.byGuest.length >= this.maxRegions) {
      throw new Error(`too many memory regions (limit ${this.maxRegions})`);
    }
    const gEnd = init.guestAddr + init.size;
    const uEnd = init.userAddr + init.size;
    for (const r of this.byGuest) {
      if (init.guestAddr < r.guestEnd && r.guestAddr < gEnd) {
        throw new Error(`memory region guestAddr range 0x${init.guestAddr.toString(16)}..0x${gEnd.toString(16)} overlaps region ${r}`);
      }
      if (init.userAddr < r.userEnd && r.userAddr < uEnd) {
        throw new Error(`memory region userAddr range 0x${init.userAddr.toString(16)}..0x${uEnd.toString(16)} overlaps region ${r}`);
      }
    }
    const region = new GuestRegion(init);
    this.byGuest = [...this.byGuest, region].sort((a, b) => a.guestAddr - b.guestAddr);
    this.byUser = [...this.byGuest].sort((a, b) => a.userAddr - b.userAddr);
    this.generation++;
    return region;
  }

  /**
   * Removes the region matching guestAddr and size (and userAddr when given), as
   * REM_MEM_REG identifies it. Returns the removed region, or null if none matched.
   */
  removeRegion(match: { guestAddr: number; size: number; userAddr?: number }): GuestRegion | null {
    const found = this.byGuest.find((r) => r.guestAddr === match.guestAddr && r.size === match.size &&
      (match.userAddr === undefined || r.userAddr === match.userAddr));
    if (found === undefined) return null;
    this.byGuest = this.byGuest.filter((r) => r !== found);
    this.byUser = this.byUser.filter((r) => r !== found);
    this.generation++;
    return found;
  }

  clear(): void {
    this.byGuest = [];
    this.byUser = [];
    this.generation++;
  }

  /** The region holding guest-physical `addr`, or null. */
  findGuest(addr: number): GuestRegion | null {
    const list = this.byGuest;
    const i = list.length <= 8 ? linearGuest(list, addr) : floorIndex(list, addr, true);
    if (i < 0) return null;
    const r = list[i];
    return addr < r.guestEnd ? r : null;
  }

  /** The region holding front-end virtual `addr`, or null. */
  findUser(addr: number): GuestRegion | null {
    const list = this.byUser;
    const i = list.length <= 8 ? linearUser(list, addr) : floorIndex(list, addr, false);
    if (i < 0) return null;
    const r = list[i];
    return addr < r.userEnd ? r : null;
  }

  /** Front-end virtual address -> guest-physical address, or -1 if unmapped (control path helper). */
  userToGuest(uaddr: number): number {
    const r = this.findUser(uaddr);
    return r === null ? -1 : r.guestAddr + (uaddr - r.userAddr);
  }
}

function linearGuest(list: readonly GuestRegion[], addr: number): number {
  for (let i = 0; i < list.length; i++) {
    const r = list[i];
    if (addr >= r.guestAddr && addr < r.guestEnd) return i;
  }
  return -1;
}

function linearUser(list: readonly GuestRegion[], addr: number): number {
  for (let i = 0; i < list.length; i++) {
    const r = list[i];
    if (addr >= r.userAddr && addr < r.userEnd) return i;
  }
  return -1;
}

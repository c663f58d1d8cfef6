/**
 * The control path's memory table: regions the front-end shared, each with its fd.
 * Validation here is what keeps the data path from ever mapping or touching memory the
 * front-end did not really give us: sizes, overflow, overlap, and the fd's real size
 * (mapping past the end of a memfd would SIGBUS the whole process on first touch).
 */
import type { MemoryRegion } from '../protocol/index.js';
import { closeFd, fdKind } from '../sys/index.js';
import { ADDRESS_LIMIT } from '../iotlb/address.js';
import type { RegionConfig } from '../datapath/contract.js';
import { DeviceError, toSafeNumber } from './errors.js';

export interface ControlRegion {
  guestAddr: number;
  userAddr: number;
  size: number;
  mmapOffset: number;
  fd: number;
  /** ADD_MEM_REGs of this very region not yet removed (see add()). */
  users: number;
}

function overlaps(aStart: number, aSize: number, bStart: number, bSize: number): boolean {
  return aStart < bStart + bSize && bStart < aStart + aSize;
}

export class MemoryTable {
  private list: ControlRegion[] = [];

  constructor(private readonly maxRegions: number) {}

  get regions(): readonly ControlRegion[] {
    return this.list;
  }

  /** The regions as a worker maps them: without the control path's bookkeeping (users). */
  configs(): RegionConfig[] {
    return this.list.map(({ fd, guestAddr, userAddr, size, mmapOffset }) => ({ fd, guestAddr, userAddr, size, mmapOffset }));
  }

  /** Where guest-physical memory ends (0 with no regions): what a dirty log must cover. */
  get guestEnd(): number {
    return Math.max(0, ...this.list.map((r) => r.guestAddr + r.size));
  }

  /** Checks one region from the wire (and its fd) against itself and `others`. */
  static validate(wire: MemoryRegion, fd: number, others: readonly ControlRegion[], label: string): ControlRegion {
    const region: ControlRegion = {
      guestAddr: toSafeNumber(wire.guestAddr, `${label}.guest_phys_addr`),
      userAddr: toSafeNumber(wire.userAddr, `${label}.userspace_addr`),
      size: toSafeNumber(wire.size, `${label}.memory_size`),
      mmapOffset: toSafeNumber(wire.mmapOffset, `${label}.mmap_offset`),
      fd,
      users: 1,
    };
    if (region.size === 0) throw new DeviceError(`${label}.memory_size is 0`);
    for (const [field, start] of [['guest_phys_addr', region.guestAddr], ['userspace_addr', region.userAddr], ['mmap_offset', region.mmapOffset]] as const) {
      if (start + region.size > ADDRESS_LIMIT) {
        throw new DeviceError(`${label}.${field} 0x${start.toString(16)} + size 0x${region.size.toString(16)} overflows`);
      }
    }
    const file = fdKind(fd);
    if (file.kind !== 'memfd' && file.kind !== 'other') {
      throw new DeviceError(`${label}: fd is a ${file.kind}, not shared memory`);
    }
    if (region.mmapOffset + region.size > file.size) {
      throw new DeviceError(`${label}: mmap_offset 0x${region.mmapOffset.toString(16)} + size 0x${region.size.toString(16)} exceeds the fd's size 0x${file.size.toString(16)}`);
    }
    for (const other of others) {
      if (overlaps(region.guestAddr, region.size, other.guestAddr, other.size)) {
        throw new DeviceError(`${label}: guest range 0x${region.guestAddr.toString(16)}+0x${region.size.toString(16)} overlaps another region`);
      }
      if (overlaps(region.userAddr, region.size, other.userAddr, other.size)) {
        throw new DeviceError(`${label}: user range 0x${region.userAddr.toString(16)}+0x${region.size.toString(16)} overlaps another region`);
      }
    }
    return region;
  }

  /** SET_MEM_TABLE: validates the whole table before touching the current one. */
  replace(wire: readonly MemoryRegion[], fds: readonly number[]): void {
    if (wire.length > this.maxRegions) throw new DeviceError(`memory table has ${wire.length} regions, at most ${this.maxRegions} allowed`);
    const next: ControlRegion[] = [];
    wire.forEach((region, i) => next.push(MemoryTable.validate(region, fds[i], next, `region[${i}]`)));
    this.closeAll();
    this.list = next;
  }

  /**
   * ADD_MEM_REG; false if the table did not change. QEMU with several queue pairs runs one
   * vhost device per pair over the same connection, and each adds (and later removes) every
   * region itself: the same region again (same guest and user address, size and offset) is
   * one more user of the mapping we have, its fd closed, never a second mapping.
   */
  add(wire: MemoryRegion, fd: number): boolean {
    const same = this.find(wire);
    if (same && BigInt(same.mmapOffset) === wire.mmapOffset) {
      closeFd(fd);
      same.users++;
      return false;
    }
    if (this.list.length >= this.maxRegions) throw new DeviceError(`ADD_MEM_REG: all ${this.maxRegions} memory slots are in use`);
    this.list = [...this.list, MemoryTable.validate(wire, fd, this.list, 'region')];
    return true;
  }

  /** REM_MEM_REG (by guest address, user address and size); false if other users keep it. */
  remove(wire: MemoryRegion): boolean {
    const region = this.find(wire);
    if (!region) throw new DeviceError(`REM_MEM_REG: no region at guest 0x${wire.guestAddr.toString(16)} size 0x${wire.size.toString(16)}`);
    if (--region.users > 0) return false;
    closeFd(region.fd);
    this.list = this.list.filter((r) => r !== region);
    return true;
  }

  private find(wire: MemoryRegion): ControlRegion | undefined {
    return this.list.find((r) => BigInt(r.guestAddr) === wire.guestAddr && BigInt(r.userAddr) === wire.userAddr && BigInt(r.size) === wire.size);
  }

  closeAll(): void {
    for (const region of this.list) closeFd(region.fd);
    this.list = [];
  }
}

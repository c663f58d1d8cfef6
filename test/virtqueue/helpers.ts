/** Shared fixtures for virtqueue tests: ArrayBuffer guest memory, a driver, a device queue. */
import { GuestMemory, type GuestRegion } from '../../src/memory/guest-memory.js';
import { GuestPhysicalSpace, UserAddressSpace, type AddressSpace } from '../../src/memory/address-space.js';
import { SplitQueue, RING_OK } from '../../src/virtqueue/split.js';
import { SplitDriver, layoutRings } from '../../src/frontend/split-driver.js';
import { NetQueue } from '../../src/virtqueue/net.js';
import { PackedQueue } from '../../src/virtqueue/packed.js';
import { PackedDriver, layoutPacked, type PackedLayout } from '../../src/frontend/packed-driver.js';
import type { VirtQueue } from '../../src/virtqueue/queue.js';
import {
  LOOKUP_DENIED, LOOKUP_MISS, emptyStats,
  type IotlbEntry, type IotlbStrategy, type LookupOut,
} from '../../src/iotlb/strategy.js';

export const GPA = 0x100000;
export const UVA = 0x7f0000000000;
export const MEM_SIZE = 0x100000; // 1 MiB

export interface Rig {
  memory: GuestMemory;
  region: GuestRegion;
  bytes: Uint8Array;
  driver: SplitDriver;
  queue: SplitQueue;
  /** Free-for-buffers guest address area starts here. */
  bufBase: number;
}

export function makeMemory(size = MEM_SIZE, gpa = GPA, uva = UVA): { memory: GuestMemory; region: GuestRegion } {
  const memory = new GuestMemory();
  const region = memory.addRegion({ guestAddr: gpa, userAddr: uva, size, mmapOffset: 0, bytes: new Uint8Array(size) });
  return { memory, region };
}

/** One queue of `size` at GPA+ringOffset; rings addressed by front-end VA like SET_VRING_ADDR. */
export function makeRig(opts: { size?: number; eventIdx?: boolean; ringOffset?: number; startIdx?: number; memory?: { memory: GuestMemory; region: GuestRegion } } = {}): Rig {
  const size = opts.size ?? 16;
  const { memory, region } = opts.memory ?? makeMemory();
  const lay = layoutRings(size, GPA + (opts.ringOffset ?? 0));
  const driver = new SplitDriver({
    memory: region.bytes, base: GPA, size, eventIdx: opts.eventIdx ?? false,
    descAddr: lay.descAddr, availAddr: lay.availAddr, usedAddr: lay.usedAddr, startIdx: opts.startIdx,
  });
  const queue = new SplitQueue();
  const toUva = (g: number): number => g - GPA + UVA;
  const st = queue.configure({
    size, descAddr: toUva(lay.descAddr), availAddr: toUva(lay.availAddr), usedAddr: toUva(lay.usedAddr),
    ringSpace: new UserAddressSpace(memory), dataSpace: new GuestPhysicalSpace(memory),
    eventIdx: opts.eventIdx ?? false, lastAvailIdx: opts.startIdx ?? 0,
  });
  if (st !== RING_OK) throw new Error(`configure failed: ${queue.error}`);
  return { memory, region, bytes: region.bytes, driver, queue, bufBase: Math.ceil(lay.end / 4096) * 4096 };
}

export function netq(queue: VirtQueue, headerLength = 12, mergeable = false): NetQueue {
  return new NetQueue(queue, { headerLength, mergeable });
}

/** Writes `data` at guest-physical address `gpa` of the rig's single region. */
export function poke(rig: { bytes: Uint8Array }, gpa: number, data: ArrayLike<number>): void {
  rig.bytes.set(data as Uint8Array, gpa - GPA);
}

export function peek(rig: { bytes: Uint8Array }, gpa: number, len: number): Uint8Array {
  return rig.bytes.slice(gpa - GPA, gpa - GPA + len);
}

export function frame(len: number, seed = 1): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 7 + seed * 13 + 1) & 0xff;
  return f;
}

/** A tiny IOTLB strategy for tests: a list of entries, exact semantics of the interface. */
export class StubIotlb implements IotlbStrategy {
  readonly name = 'stub';
  readonly stats = emptyStats();
  list: IotlbEntry[] = [];
  insert(e: IotlbEntry): void {
    // Replace older entries where they overlap (trim / split them).
    const kept: IotlbEntry[] = [];
    const end = e.iova + e.size;
    for (const o of this.list) {
      const oEnd = o.iova + o.size;
      if (oEnd <= e.iova || end <= o.iova) {
        kept.push(o);
        continue;
      }
      if (o.iova < e.iova) kept.push({ ...o, size: e.iova - o.iova });
      if (oEnd > end) kept.push({ ...o, iova: end, size: oEnd - end, uaddr: o.uaddr + (end - o.iova) });
    }
    this.list = kept;
    this.list.push({ ...e });
    this.list.sort((a, b) => a.iova - b.iova);
    this.stats.inserts++;
    this.stats.entries = this.list.length;
  }
  invalidate(iova: number, size: number): number {
    const before = this.list.length;
    this.list = this.list.filter((e) => e.iova + e.size <= iova || iova + size <= e.iova);
    this.stats.entries = this.list.length;
    return before - this.list.length;
  }
  lookup(iova: number, len: number, access: number, out: LookupOut): number {
    this.stats.lookups++;
    for (const e of this.list) {
      if (iova >= e.iova && iova < e.iova + e.size) {
        if ((e.perm & access) !== access) {
          this.stats.permissionFaults++;
          return LOOKUP_DENIED;
        }
        out.uaddr = e.uaddr + (iova - e.iova);
        this.stats.hits++;
        return Math.min(len, e.iova + e.size - iova);
      }
    }
    this.stats.misses++;
    return LOOKUP_MISS;
  }
  entries(): IotlbEntry[] {
    return this.list.map((e) => ({ ...e }));
  }
  clear(): void {
    this.list = [];
  }
}

export type { AddressSpace };

export interface PackedRig {
  memory: GuestMemory;
  region: GuestRegion;
  bytes: Uint8Array;
  driver: PackedDriver;
  queue: PackedQueue;
  bufBase: number;
  layout: PackedLayout;
}

/** One packed queue of `size` (any size) at GPA+ringOffset; areas addressed by front-end VA. */
export function makePackedRig(opts: { size?: number; eventIdx?: boolean; ringOffset?: number; startPos?: number; startWrap?: number; memory?: { memory: GuestMemory; region: GuestRegion } } = {}): PackedRig {
  const size = opts.size ?? 16;
  const { memory, region } = opts.memory ?? makeMemory();
  const layout = layoutPacked(size, GPA + (opts.ringOffset ?? 0));
  const driver = new PackedDriver({
    memory: region.bytes, base: GPA, size, eventIdx: opts.eventIdx ?? false,
    descAddr: layout.descAddr, driverAddr: layout.driverAddr, deviceAddr: layout.deviceAddr,
    startPos: opts.startPos, startWrap: opts.startWrap,
  });
  const queue = new PackedQueue();
  const toUva = (g: number): number => g - GPA + UVA;
  const st = queue.configure({
    size, descAddr: toUva(layout.descAddr), availAddr: toUva(layout.driverAddr), usedAddr: toUva(layout.deviceAddr),
    ringSpace: new UserAddressSpace(memory), dataSpace: new GuestPhysicalSpace(memory),
    eventIdx: opts.eventIdx ?? false, lastAvailIdx: driver.vringBase(),
  });
  if (st !== RING_OK) throw new Error(`configure failed: ${queue.error}`);
  return { memory, region, bytes: region.bytes, driver, queue, bufBase: Math.ceil(layout.end / 4096) * 4096, layout };
}

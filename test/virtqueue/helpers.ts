/**
 * Shared fixtures for virtqueue tests (split and packed alike): ArrayBuffer guest memory,
 * a driver and a device queue (directly or through an IOTLB), a capturing endpoint, and
 * the scenarios both ring kinds run the same way.
 */
import assert from 'node:assert/strict';
import { GuestMemory, type GuestRegion } from '../../src/memory/guest-memory.js';
import { ACCESS_READ, ACCESS_WRITE, GuestPhysicalSpace, IotlbAddressSpace, UserAddressSpace, type AddressSpace } from '../../src/memory/address-space.js';
import { SplitQueue, RING_OK } from '../../src/virtqueue/split.js';
import { SplitDriver, layoutRings, type RingLayout } from '../support/frontend/split-driver.js';
import { NetQueue, transmitBurst } from '../../src/net/virtio-net.js';
import type { FrameSink } from '../../src/net/endpoint.js';
import { PackedQueue } from '../../src/virtqueue/packed.js';
import { PackedDriver, layoutPacked, type PackedLayout } from '../support/frontend/packed-driver.js';
import type { VirtQueue } from '../../src/virtqueue/queue.js';
import type { ScatterList } from '../../src/virtqueue/scatter.js';
import {
  LOOKUP_DENIED, LOOKUP_MISS, emptyStats,
  type IotlbEntry, type IotlbStrategy, type LookupOut,
} from '../../src/iotlb/strategy.js';

export const GPA = 0x100000;
export const UVA = 0x7f0000000000;
export const MEM_SIZE = 0x100000; // 1 MiB
/** IOMMU rigs: the IOVA of guest-physical GPA (IOVA = GPA + a fixed offset). */
export const IOVA = 0x1_0000_0000;
export const iovaOf = (g: number): number => IOVA + (g - GPA);
/** A 12-byte virtio-net header, as the tests write it. */
export const HDR = new Uint8Array(12).fill(0xee);

export interface RigOptions {
  size?: number;
  eventIdx?: boolean;
  ringOffset?: number;
  memory?: { memory: GuestMemory; region: GuestRegion };
  /**
   * Rings and buffers through this IOTLB (IotlbAddressSpace), ring addresses as IOVAs
   * (iovaOf); configure()'s status is then returned in `st` instead of thrown.
   */
  iotlb?: IotlbStrategy;
  /** With iotlb: map the first 64 KiB (the rings) read-write before configuring (default true). */
  mapRings?: boolean;
}

export interface Rig {
  memory: GuestMemory;
  region: GuestRegion;
  bytes: Uint8Array;
  driver: SplitDriver;
  queue: SplitQueue;
  /** Free-for-buffers guest address area starts here. */
  bufBase: number;
  layout: RingLayout;
  /** configure()'s status (always RING_OK without an IOTLB). */
  st: number;
}

export function makeMemory(size = MEM_SIZE, gpa = GPA, uva = UVA): { memory: GuestMemory; region: GuestRegion } {
  const memory = new GuestMemory();
  const region = memory.addRegion({ guestAddr: gpa, userAddr: uva, size, mmapOffset: 0, bytes: new Uint8Array(size) });
  return { memory, region };
}

/**
 * Configures `queue` (size, EVENT_IDX and ring base from the caller) for rings at
 * guest-physical desc / avail / used: without an IOTLB addressed by front-end VA like
 * SET_VRING_ADDR, buffers by GPA; with one, both by IOVA. Throws on failure without an IOTLB.
 */
function configureQueue(queue: VirtQueue, memory: GuestMemory, opts: RigOptions, size: number, lastAvailIdx: number, desc: number, avail: number, used: number): number {
  const tlb = opts.iotlb;
  let ringSpace: AddressSpace;
  let dataSpace: AddressSpace;
  let toRing: (g: number) => number;
  if (tlb !== undefined) {
    if (opts.mapRings ?? true) tlb.insert({ iova: IOVA, size: 0x10000, uaddr: UVA, perm: ACCESS_READ | ACCESS_WRITE });
    ringSpace = dataSpace = new IotlbAddressSpace(tlb, memory);
    toRing = iovaOf;
  } else {
    ringSpace = new UserAddressSpace(memory);
    dataSpace = new GuestPhysicalSpace(memory);
    toRing = (g) => g - GPA + UVA;
  }
  const st = queue.configure({
    size, descAddr: toRing(desc), availAddr: toRing(avail), usedAddr: toRing(used),
    ringSpace, dataSpace, eventIdx: opts.eventIdx ?? false, lastAvailIdx,
  });
  if (st !== RING_OK && tlb === undefined) throw new Error(`configure failed: ${queue.error}`);
  return st;
}

/** One queue of `size` (default 16) at GPA+ringOffset. */
export function makeRig(opts: RigOptions & { startIdx?: number } = {}): Rig {
  const size = opts.size ?? 16;
  const { memory, region } = opts.memory ?? makeMemory();
  const layout = layoutRings(size, GPA + (opts.ringOffset ?? 0));
  const driver = new SplitDriver({
    memory: region.bytes, base: GPA, size, eventIdx: opts.eventIdx ?? false,
    descAddr: layout.descAddr, availAddr: layout.availAddr, usedAddr: layout.usedAddr, startIdx: opts.startIdx,
  });
  const queue = new SplitQueue();
  const st = configureQueue(queue, memory, opts, size, opts.startIdx ?? 0, layout.descAddr, layout.availAddr, layout.usedAddr);
  return { memory, region, bytes: region.bytes, driver, queue, bufBase: Math.ceil(layout.end / 4096) * 4096, layout, st };
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
  version = 0;
  list: IotlbEntry[] = [];
  insert(e: IotlbEntry): void {
    this.version++;
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
    this.version++;
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
  span(out: LookupOut): void {
    out.spanStart = out.spanEnd = 0; // hands out no spans
  }
  entries(): IotlbEntry[] {
    return this.list.map((e) => ({ ...e }));
  }
  clear(): void {
    this.version++;
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
  /** configure()'s status (always RING_OK without an IOTLB). */
  st: number;
}

/** One packed queue of `size` (any size, default 16) at GPA+ringOffset, at the driver's ring base. */
export function makePackedRig(opts: RigOptions & { startPos?: number; startWrap?: number } = {}): PackedRig {
  const size = opts.size ?? 16;
  const { memory, region } = opts.memory ?? makeMemory();
  const layout = layoutPacked(size, GPA + (opts.ringOffset ?? 0));
  const driver = new PackedDriver({
    memory: region.bytes, base: GPA, size, eventIdx: opts.eventIdx ?? false,
    descAddr: layout.descAddr, driverAddr: layout.driverAddr, deviceAddr: layout.deviceAddr,
    startPos: opts.startPos, startWrap: opts.startWrap,
  });
  const queue = new PackedQueue();
  const st = configureQueue(queue, memory, opts, size, driver.vringBase(), layout.descAddr, layout.driverAddr, layout.deviceAddr);
  return { memory, region, bytes: region.bytes, driver, queue, bufBase: Math.ceil(layout.end / 4096) * 4096, layout, st };
}

/** A FrameSink that records each frame (checked against the length it is given) and its piece count. */
export class Capture implements FrameSink {
  frames: Uint8Array[] = [];
  pieces: number[] = [];
  /** Refuse frames (transmit returns false). */
  refuse = false;
  flushes = 0;
  transmit(sg: ScatterList, first: number, len: number): boolean {
    if (this.refuse) return false;
    const f = sg.gather(first);
    assert.equal(f.length, len);
    this.frames.push(f);
    this.pieces.push(sg.count - first);
    return true;
  }
  flush(): void {
    this.flushes++;
  }
}

type AnyRig = Rig | PackedRig;

/** frame(100) as a chain at bufBase of header | 30 | 70 bytes, added (not published). */
export function addChainedFrame(rig: AnyRig): { f: Uint8Array; head: number } {
  const f = frame(100);
  const b = rig.bufBase;
  poke(rig, b, HDR);
  poke(rig, b + 0x100, f.subarray(0, 30));
  poke(rig, b + 0x200, f.subarray(30));
  return { f, head: rig.driver.addChain([b, b + 0x100, b + 0x200], [12, 30, 70], 3) };
}

/**
 * TX of frame(200, 3) through an indirect table of 4 descriptors at bufBase (header,
 * then 1 + 149 + 50 bytes): delivered exactly. Returns the chain's head / buffer id.
 */
export function txIndirectFrame(rig: AnyRig): number {
  const f = frame(200, 3);
  const b = rig.bufBase;
  poke(rig, b + 0x1000, HDR);
  poke(rig, b + 0x1100, f.subarray(0, 1));
  poke(rig, b + 0x1200, f.subarray(1, 150));
  poke(rig, b + 0x1400, f.subarray(150));
  const head = rig.driver.addIndirect(b, [b + 0x1000, b + 0x1100, b + 0x1200, b + 0x1400], [12, 1, 149, 50], 4);
  rig.driver.publish();
  const cap = new Capture();
  assert.equal(transmitBurst(netq(rig.queue), cap, 32), 1);
  assert.deepEqual(cap.frames[0], f);
  return head;
}

/**
 * IOTLB rigs: TX of a 112-byte buffer 64 bytes before the boundary of two IOTLB entries
 * contiguous in IOVA but not in uaddr, with a decoy where a GPA-contiguous read would
 * land: delivered exactly, in two pieces.
 */
export function txStraddlingBuffer(rig: AnyRig, tlb: IotlbStrategy): void {
  assert.equal(rig.st, RING_OK);
  const bufIova = IOVA + 0x100000 + 0xfc0;
  tlb.insert({ iova: IOVA + 0x100000, size: 0x1000, uaddr: UVA + 0x50000, perm: ACCESS_READ });
  tlb.insert({ iova: IOVA + 0x101000, size: 0x1000, uaddr: UVA + 0x20000, perm: ACCESS_READ });
  const f = frame(100);
  const whole = new Uint8Array(112);
  whole.set(HDR);
  whole.set(f, 12);
  poke(rig, GPA + 0x50fc0, whole.subarray(0, 64));
  poke(rig, GPA + 0x20000, whole.subarray(64));
  poke(rig, GPA + 0x51000, new Uint8Array(64).fill(0x99)); // decoy
  rig.driver.addBuffer(bufIova, 112, false);
  rig.driver.publish();
  const cap = new Capture();
  assert.equal(transmitBurst(netq(rig.queue), cap, 32), 1);
  assert.deepEqual(cap.frames[0], f);
  assert.equal(cap.pieces[0], 2);
}

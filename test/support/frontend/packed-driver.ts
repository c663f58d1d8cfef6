/**
 * The DRIVER side of a packed virtqueue (what a guest's virtio driver does, as Linux
 * virtio_ring.c does it), over the same kind of guest memory the device sees: used by
 * tests and benchmarks. Mirrors SplitDriver (split-driver.ts).
 *
 * `memory` is the host view of guest addresses [base, base + memory.length). Buffer ids
 * are 0..size-1; each id remembers how many ring descriptors its buffer took, which is
 * how far the used position moves when the device returns it.
 *
 * Buffers added are invisible to the device until publish(): their head descriptors'
 * flags (the AVAIL/USED bits) are written then, after the rest of each chain — the
 * head last, with a release store, as the spec requires.
 */
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../../src/virtqueue/split.js';
import {
  PACKED_WRAP_BIT, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, VRING_PACKED_EVENT_FLAG_DESC,
  VRING_PACKED_EVENT_FLAG_DISABLE, VRING_PACKED_EVENT_FLAG_ENABLE, checkPackedQueueSize, offWrap,
} from '../../../src/virtqueue/packed.js';
import { RingDriver, type RingDriverOptions } from './ring-driver.js';

export interface PackedDriverOptions extends RingDriverOptions {
  /** Driver event suppression area (written by the driver). */
  driverAddr: number;
  /** Device event suppression area (written by the device). */
  deviceAddr: number;
  /** Start position (both avail and used) and wrap counter; default 0 and 1. */
  startPos?: number;
  startWrap?: number;
}

export interface PackedLayout {
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
  end: number;
}

/** desc ring at `start`, then the two 4-byte event areas. */
export function layoutPacked(size: number, start: number): PackedLayout {
  const descAddr = start;
  const driverAddr = descAddr + 16 * size;
  const deviceAddr = driverAddr + 4;
  return { descAddr, driverAddr, deviceAddr, end: deviceAddr + 4 };
}

/** freeCount counts free descriptor slots in the ring. */
export class PackedDriver extends RingDriver {
  /** Next descriptor position to fill, and the avail wrap counter there. */
  nextAvail: number;
  availWrap: number;
  /** Next used descriptor position to read, and the used wrap counter there. */
  lastUsed: number;
  usedWrap: number;
  /** Flags of the entry returned by the last popUsed(). */
  lastFlags = 0;
  /** Descriptors made available since the last needsKick(). */
  private added = 0;

  private readonly drv: number; // driver area, u16 units
  private readonly dev: number; // device area, u16 units
  private readonly freeIds: Uint16Array;
  private freeIdCount: number;
  private readonly idCount: Uint16Array;
  /** Heads added and not yet published: position and flags. */
  private readonly pendPos: Uint16Array;
  private readonly pendFlags: Uint16Array;
  private pendN = 0;

  constructor(opts: PackedDriverOptions) {
    super(opts, checkPackedQueueSize(opts.size));
    this.drv = this.areaOffset('driver event area', opts.driverAddr, 4, 4) >> 1;
    this.dev = this.areaOffset('device event area', opts.deviceAddr, 4, 4) >> 1;
    this.freeIds = new Uint16Array(opts.size);
    for (let i = 0; i < opts.size; i++) this.freeIds[i] = opts.size - 1 - i;
    this.freeIdCount = opts.size;
    this.idCount = new Uint16Array(opts.size);
    this.pendPos = new Uint16Array(opts.size);
    this.pendFlags = new Uint16Array(opts.size);
    const pos = opts.startPos ?? 0;
    const wrap = opts.startWrap ?? 1;
    this.nextAvail = pos;
    this.availWrap = wrap;
    this.lastUsed = pos;
    this.usedWrap = wrap;
    // A fresh ring: every descriptor reads as neither available nor used in the first lap.
    for (let i = 0; i < opts.size; i++) this.m32[this.d + 4 * i + 3] = wrap ? 0 : (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) << 16;
    this.m16[this.drv] = 0;
    this.m16[this.drv + 1] = VRING_PACKED_EVENT_FLAG_ENABLE;
    this.m16[this.dev] = 0;
    this.m16[this.dev + 1] = VRING_PACKED_EVENT_FLAG_ENABLE;
  }

  /** The avail base this ring's state corresponds to, as SET_VRING_BASE carries it. */
  vringBase(): number {
    return (offWrap(this.nextAvail, this.availWrap) | (offWrap(this.nextAvail, this.availWrap) << 16)) >>> 0;
  }

  /** Flags that make a descriptor available in the current lap. */
  availFlags(): number {
    return this.availWrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
  }

  /** Writes descriptor slot `pos` raw (tests build malformed rings with it). */
  writeDesc(pos: number, addr: number, len: number, id: number, flags: number): void {
    this.putDesc(this.d + (pos << 2), addr, len, ((id & 0xffff) | ((flags & 0xffff) << 16)) >>> 0);
  }

  /** Packed table entries are read in order: flags << 16, id 0 (NEXT set between entries, as DPDK does; the device ignores it). */
  protected tableWord3(flags: number): number {
    return (flags << 16) >>> 0;
  }

  /** Reads back slot `pos`: [addr, len, id, flags]. */
  readDesc(pos: number): [number, number, number, number] {
    const w = this.d + (pos << 2);
    const w3 = this.m32[w + 3];
    return [this.m32[w + 1] * 4294967296 + this.m32[w], this.m32[w + 2], w3 & 0xffff, w3 >>> 16];
  }

  private advance(): void {
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap ^= 1;
    }
  }

  /**
   * Places `count` descriptors for one buffer id at nextAvail; the head's flags are
   * deferred to publish(). `flagsOf(k)` gives descriptor k's own flags (WRITE/INDIRECT).
   */
  private place(count: number, addrs: ArrayLike<number>, lens: ArrayLike<number>, flagsOf: (k: number) => number): number {
    if (count < 1 || this.freeCount < count || this.freeIdCount === 0) return -1;
    const id = this.freeIds[--this.freeIdCount];
    this.idCount[id] = count;
    this.freeCount -= count;
    let headPos = -1;
    let headFlags = 0;
    for (let k = 0; k < count; k++) {
      const flags = flagsOf(k) | (k + 1 < count ? VRING_DESC_F_NEXT : 0) | this.availFlags();
      if (k === 0) {
        headPos = this.nextAvail;
        headFlags = flags;
        // Write all but the flags now: the old flags keep it unavailable.
        const w = this.d + (headPos << 2);
        this.m32[w] = addrs[k] >>> 0;
        this.m32[w + 1] = Math.floor(addrs[k] / 4294967296) >>> 0;
        this.m32[w + 2] = lens[k] >>> 0;
        this.m16[(w + 3) << 1] = id;
      } else {
        this.writeDesc(this.nextAvail, addrs[k], lens[k], id, flags);
      }
      this.advance();
    }
    this.pendPos[this.pendN] = headPos;
    this.pendFlags[this.pendN] = headFlags;
    this.pendN++;
    this.added += count;
    return id;
  }

  /** One-descriptor buffer. Returns its id, or -1 if the ring is full. */
  addBuffer(addr: number, len: number, writable: boolean): number {
    ONE_ADDR[0] = addr;
    ONE_LEN[0] = len;
    return this.place(1, ONE_ADDR, ONE_LEN, writable ? WRITABLE : READABLE);
  }

  /** A chain of `count` descriptors, the first `readable` device-readable. Returns its id or -1. */
  addChain(addrs: ArrayLike<number>, lens: ArrayLike<number>, readable: number, count = addrs.length): number {
    return this.place(count, addrs, lens, (k) => (k >= readable ? VRING_DESC_F_WRITE : 0));
  }

  /**
   * An indirect buffer: a table of `count` descriptors at tableAddr (inside driver
   * memory), the first `readable` device-readable, posted as one INDIRECT descriptor.
   * `tableDeviceAddr` is what the descriptor carries (an IOVA under an IOMMU).
   */
  addIndirect(tableAddr: number, addrs: ArrayLike<number>, lens: ArrayLike<number>, readable: number, count = addrs.length, tableDeviceAddr = tableAddr): number {
    if (this.freeCount === 0 || count < 1) return -1;
    this.writeTable(tableAddr, addrs, lens, readable, count);
    ONE_ADDR[0] = tableDeviceAddr;
    ONE_LEN[0] = 16 * count;
    return this.place(1, ONE_ADDR, ONE_LEN, INDIRECT);
  }

  /** Makes every added buffer visible: each head's flags, release-stored, in order. Returns how many. */
  publish(): number {
    const n = this.pendN;
    for (let k = 0; k < n; k++) Atomics.store(this.m16, ((this.d + (this.pendPos[k] << 2) + 3) << 1) + 1, this.pendFlags[k]);
    this.pendN = 0;
    return n;
  }

  /** After publish(): should the driver kick? (device event area, as Linux virtqueue_kick_prepare_packed). */
  needsKick(): boolean {
    const added = this.added;
    this.added = 0;
    const flags = Atomics.load(this.m16, this.dev + 1);
    if (!this.eventIdx || flags !== VRING_PACKED_EVENT_FLAG_DESC) return flags !== VRING_PACKED_EVENT_FLAG_DISABLE;
    const ow = this.m16[this.dev];
    let event = ow & 0x7fff;
    if ((ow >>> PACKED_WRAP_BIT) !== this.availWrap) event -= this.size;
    const nw = this.nextAvail;
    const old = nw - added;
    return ((nw - event - 1) & 0xffff) < ((nw - old) & 0xffff);
  }

  private isUsed(pos: number, wrap: number): boolean {
    const flags = Atomics.load(this.m16, ((this.d + (pos << 2) + 3) << 1) + 1);
    const avail = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0 ? 1 : 0;
    const used = (flags & VRING_PACKED_DESC_F_USED) !== 0 ? 1 : 0;
    return avail === used && used === wrap;
  }

  /** How many used buffers are waiting (follows ids through their descriptor counts). */
  usedCount(): number {
    let pos = this.lastUsed;
    let wrap = this.usedWrap;
    let n = 0;
    let walked = 0;
    while (walked < this.size && this.isUsed(pos, wrap)) {
      const id = this.m16[((this.d + (pos << 2) + 3) << 1)];
      const c = id < this.size && this.idCount[id] > 0 ? this.idCount[id] : 1;
      walked += c;
      pos += c;
      if (pos >= this.size) {
        pos -= this.size;
        wrap ^= 1;
      }
      n++;
    }
    return n;
  }

  /** Takes the next used buffer: returns its id (lastLen/lastFlags set) and frees its slots; -1 if none. */
  popUsed(): number {
    if (!this.isUsed(this.lastUsed, this.usedWrap)) return -1;
    return this.takeUsed();
  }

  /** Like popUsed() without the check: the caller knows an entry is there. */
  takeUsed(): number {
    const w = this.d + (this.lastUsed << 2);
    const id = this.m32[w + 3] & 0xffff;
    this.lastLen = this.m32[w + 2];
    this.lastFlags = this.m32[w + 3] >>> 16;
    let c = 1;
    if (id < this.size && this.idCount[id] > 0) {
      c = this.idCount[id];
      this.idCount[id] = 0;
      this.freeIds[this.freeIdCount++] = id;
    }
    this.freeCount += c;
    this.lastUsed += c;
    if (this.lastUsed >= this.size) {
      this.lastUsed -= this.size;
      this.usedWrap ^= 1;
    }
    return id;
  }

  /** Driver event suppression: interrupts ENABLE / DISABLE / DESC at (pos, wrap). */
  setDriverEvent(flags: number, pos = 0, wrap = 0): void {
    this.m16[this.drv] = offWrap(pos, wrap);
    Atomics.store(this.m16, this.drv + 1, flags);
  }

  /** Interrupt me once the used position passes `pos` in lap `wrap` (EVENT_IDX). */
  setUsedEvent(pos: number, wrap: number): void {
    this.setDriverEvent(VRING_PACKED_EVENT_FLAG_DESC, pos, wrap);
  }

  /** Without EVENT_IDX: suppress (true) or allow interrupts. */
  setNoInterrupt(on: boolean): void {
    this.setDriverEvent(on ? VRING_PACKED_EVENT_FLAG_DISABLE : VRING_PACKED_EVENT_FLAG_ENABLE);
  }

  /** The device event area: [off_wrap, flags]. */
  deviceEvent(): [number, number] {
    return [Atomics.load(this.m16, this.dev), Atomics.load(this.m16, this.dev + 1)];
  }
}

const ONE_ADDR = [0];
const ONE_LEN = [0];
const READABLE = (): number => 0;
const WRITABLE = (): number => VRING_DESC_F_WRITE;
const INDIRECT = (): number => VRING_DESC_F_INDIRECT;

/**
 * The DRIVER side of a split virtqueue (what a guest's virtio driver does), over the same
 * kind of guest memory the device sees: used by tests, the test front-end and benchmarks.
 *
 * `memory` is the host view of guest addresses [base, base + memory.length). The driver
 * writes whatever addresses it is given into descriptors (GPAs, or IOVAs under an IOMMU);
 * only the rings themselves (and indirect tables) must live inside `memory`.
 *
 * Hot operations (addBuffer, publish, popUsed) allocate nothing.
 */
import { VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY, checkQueueSize } from '../../../src/virtqueue/split.js';
import { RingDriver, type RingDriverOptions } from './ring-driver.js';

export interface SplitDriverOptions extends RingDriverOptions {
  availAddr: number;
  usedAddr: number;
  /** Initial avail/used index (default 0). */
  startIdx?: number;
}

export interface RingLayout {
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  /** First address after the used ring. */
  end: number;
}

/** Standard legacy-style layout from `start`: desc, avail right after, used at the next `usedAlign` boundary. */
export function layoutRings(size: number, start: number, usedAlign = 4096): RingLayout {
  const descAddr = start;
  const availAddr = descAddr + 16 * size;
  const usedAddr = Math.ceil((availAddr + 6 + 2 * size) / usedAlign) * usedAlign;
  return { descAddr, availAddr, usedAddr, end: usedAddr + 6 + 8 * size };
}

export class SplitDriver extends RingDriver {
  readonly mask: number;
  /** Next avail ring slot to fill (free-running u16), published or not. */
  availShadow: number;
  /** avail->idx as last published. */
  availIdx: number;
  /** Next used entry to read. */
  lastUsedIdx: number;
  /** Chains published since the last needsKick(). */
  private kickOld: number;

  private readonly a: number; // avail base, in u16 units
  private readonly u: number; // used base, in u16 units
  private readonly free: Uint16Array;
  private readonly chainCount: Uint16Array;

  constructor(opts: SplitDriverOptions) {
    super(opts, checkQueueSize(opts.size));
    this.mask = opts.size - 1;
    this.a = this.areaOffset('avail ring', opts.availAddr, 6 + 2 * opts.size, 2) >> 1;
    this.u = this.areaOffset('used ring', opts.usedAddr, 6 + 8 * opts.size, 4) >> 1;
    this.free = new Uint16Array(opts.size);
    this.chainCount = new Uint16Array(opts.size);
    for (let i = 0; i < opts.size; i++) this.free[i] = opts.size - 1 - i;
    const start = (opts.startIdx ?? 0) & 0xffff;
    this.availShadow = start;
    this.availIdx = start;
    this.lastUsedIdx = start;
    this.kickOld = start;
    this.m16[this.a] = 0;
    this.m16[this.a + 1] = start;
    this.m16[this.u] = 0;
    this.m16[this.u + 1] = start;
  }

  /** Writes descriptor i (raw: tests use it to build malformed chains). */
  writeDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    this.putDesc(this.d + (i << 2), addr, len, (flags & 0xffff) | ((next & 0xffff) << 16));
  }

  /** Split table entries link by index: flags | next << 16. */
  protected tableWord3(flags: number, next: number): number {
    return flags | (next << 16);
  }

  /** Puts `head` in the next avail ring slot (not yet published). */
  pushAvail(head: number): void {
    this.m16[this.a + 2 + (this.availShadow & this.mask)] = head;
    this.availShadow = (this.availShadow + 1) & 0xffff;
  }

  private allocDesc(): number {
    return this.free[--this.freeCount];
  }

  /** One-descriptor buffer. Returns its head, or -1 if no descriptor is free. */
  addBuffer(addr: number, len: number, writable: boolean): number {
    if (this.freeCount === 0) return -1;
    const i = this.allocDesc();
    const w = this.d + (i << 2);
    const m = this.m32;
    m[w] = addr >>> 0;
    m[w + 1] = (addr / 4294967296) >>> 0;
    m[w + 2] = len;
    m[w + 3] = writable ? VRING_DESC_F_WRITE : 0;
    this.chainCount[i] = 1;
    this.m16[this.a + 2 + (this.availShadow & this.mask)] = i;
    this.availShadow = (this.availShadow + 1) & 0xffff;
    return i;
  }

  /**
   * A chain of `count` descriptors: the first `readable` are device-readable, the rest
   * device-writable. Returns the head or -1 if not enough descriptors are free.
   */
  addChain(addrs: ArrayLike<number>, lens: ArrayLike<number>, readable: number, count = addrs.length): number {
    if (count < 1 || this.freeCount < count) return -1;
    let head = -1;
    let prev = -1;
    for (let k = 0; k < count; k++) {
      const i = this.allocDesc();
      const flags = k >= readable ? VRING_DESC_F_WRITE : 0;
      this.writeDesc(i, addrs[k], lens[k], flags, 0);
      if (prev >= 0) {
        const pw = this.d + (prev << 2) + 3;
        this.m32[pw] = (this.m32[pw] & 0xffff) | VRING_DESC_F_NEXT | (i << 16);
      } else {
        head = i;
      }
      prev = i;
    }
    this.chainCount[head] = count;
    this.pushAvail(head);
    return head;
  }

  /**
   * An indirect buffer: writes a table of `count` descriptors at guest address tableAddr
   * (inside driver memory), chained 0 -> 1 -> ..., first `readable` device-readable, and
   * posts one descriptor pointing at it. Returns the head or -1. `tableDeviceAddr` is the
   * address the descriptor carries when the device sees the table elsewhere (an IOVA
   * under an IOMMU); it defaults to tableAddr.
   */
  addIndirect(tableAddr: number, addrs: ArrayLike<number>, lens: ArrayLike<number>, readable: number, count = addrs.length, tableDeviceAddr = tableAddr): number {
    if (this.freeCount === 0 || count < 1) return -1;
    this.writeTable(tableAddr, addrs, lens, readable, count);
    const i = this.allocDesc();
    this.writeDesc(i, tableDeviceAddr, 16 * count, VRING_DESC_F_INDIRECT, 0);
    this.chainCount[i] = 1;
    this.pushAvail(i);
    return i;
  }

  /** Makes every added buffer visible: one avail->idx store (release). Returns how many. */
  publish(): number {
    const n = (this.availShadow - this.availIdx) & 0xffff;
    if (n !== 0) {
      Atomics.store(this.m16, this.a + 1, this.availShadow);
      this.availIdx = this.availShadow;
    }
    return n;
  }

  /** After publish(): should the driver kick the device? (avail_event with EVENT_IDX, else used->flags.) */
  needsKick(): boolean {
    const old = this.kickOld;
    const nw = this.availIdx;
    this.kickOld = nw;
    if (this.eventIdx) {
      const ev = Atomics.load(this.m16, this.u + 2 + 4 * this.size);
      return ((nw - ev - 1) & 0xffff) < ((nw - old) & 0xffff);
    }
    return (Atomics.load(this.m16, this.u) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  /** How many used entries are waiting (acquire load of used->idx). */
  usedCount(): number {
    return (Atomics.load(this.m16, this.u + 1) - this.lastUsedIdx) & 0xffff;
  }

  /**
   * Takes the next used entry: returns its head (and sets lastLen) and frees its
   * descriptors; -1 if none is waiting. Call usedCount() first when draining in a loop
   * (popUsed re-reads used->idx each time).
   */
  popUsed(): number {
    if (this.lastUsedIdx === Atomics.load(this.m16, this.u + 1)) return -1;
    return this.takeUsed();
  }

  /** Like popUsed() but without re-reading used->idx: the caller knows an entry is there. */
  takeUsed(): number {
    const e = (this.u + 2) >> 1; // used ring base in u32 units (used is 4-aligned)
    const slot = e + ((this.lastUsedIdx & this.mask) << 1);
    const head = this.m32[slot];
    this.lastLen = this.m32[slot + 1];
    this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
    if (head < this.size) {
      let i = head;
      let n = this.chainCount[head];
      while (n-- > 0) {
        this.free[this.freeCount++] = i;
        i = this.m32[this.d + (i << 2) + 3] >>> 16;
      }
    }
    return head;
  }

  /** EVENT_IDX: interrupt me once the used index passes `idx`. */
  setUsedEvent(idx: number): void {
    Atomics.store(this.m16, this.a + 2 + this.size, idx & 0xffff);
  }

  /** Without EVENT_IDX: suppress (true) or allow interrupts. */
  setNoInterrupt(on: boolean): void {
    Atomics.store(this.m16, this.a, on ? VRING_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** The device's avail_event (EVENT_IDX). */
  availEvent(): number {
    return Atomics.load(this.m16, this.u + 2 + 4 * this.size);
  }

  /** The device's used->flags. */
  usedFlags(): number {
    return Atomics.load(this.m16, this.u);
  }

  /** Raw used->idx. */
  usedIdx(): number {
    return Atomics.load(this.m16, this.u + 1);
  }
}

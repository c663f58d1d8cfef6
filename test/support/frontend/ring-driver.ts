/**
 * What the split and packed DRIVER sides (split-driver.ts, packed-driver.ts) share: the
 * host view of driver memory, the checks placing the ring areas in it, and writing
 * descriptors and indirect tables (16 bytes each: u64 addr; u32 len; then a word whose
 * layout is the ring kind's — split: flags | next << 16, packed: id | flags << 16).
 */
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../../src/virtqueue/split.js';

export interface RingDriverOptions {
  memory: Uint8Array;
  /** Guest address of memory[0]. */
  base: number;
  size: number;
  descAddr: number;
  eventIdx?: boolean;
}

export abstract class RingDriver {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly memory: Uint8Array;
  readonly base: number;
  /** Free descriptor count. */
  freeCount: number;
  /** Length of the entry returned by the last popUsed(). */
  lastLen = 0;

  protected readonly m16: Uint16Array;
  protected readonly m32: Uint32Array;
  /** desc ring base, in u32 units. */
  protected readonly d: number;

  /** `sizeError`: null if opts.size is valid for the ring kind, else why not (thrown). */
  constructor(opts: RingDriverOptions, sizeError: string | null) {
    if (sizeError !== null) throw new Error(sizeError);
    this.size = opts.size;
    this.eventIdx = opts.eventIdx ?? false;
    this.memory = opts.memory;
    this.base = opts.base;
    const mem = opts.memory;
    if ((mem.byteOffset & 3) !== 0) throw new Error('driver memory must be 4-byte aligned');
    this.m16 = new Uint16Array(mem.buffer, mem.byteOffset, mem.length >> 1);
    this.m32 = new Uint32Array(mem.buffer, mem.byteOffset, mem.length >> 2);
    this.d = this.areaOffset('desc ring', opts.descAddr, 16 * opts.size, 16) >> 2;
    this.freeCount = opts.size;
  }

  /** Byte offset in memory of a ring area of len bytes at guest address addr; throws if outside or misaligned. */
  protected areaOffset(label: string, addr: number, len: number, align: number): number {
    const off = addr - this.base;
    if (off < 0 || off + len > this.memory.length) throw new Error(`${label} 0x${addr.toString(16)} outside driver memory`);
    if (off % align !== 0) throw new Error(`${label} 0x${addr.toString(16)} misaligned`);
    return off;
  }

  /** Writes the 16 bytes of a descriptor at word index w; `word3` is its last word, in the kind's layout. */
  protected putDesc(w: number, addr: number, len: number, word3: number): void {
    const m = this.m32;
    m[w] = addr >>> 0;
    m[w + 1] = Math.floor(addr / 4294967296) >>> 0;
    m[w + 2] = len >>> 0;
    m[w + 3] = word3;
  }

  /** The last word of indirect table entry `k`: `flags` (WRITE, NEXT) and next entry `next`. */
  protected abstract tableWord3(flags: number, next: number): number;

  /** Writes a raw 64-bit address (hi, lo) into descriptor slot i (for addresses >= 2^53). */
  writeDescAddrRaw(i: number, hi: number, lo: number): void {
    const w = this.d + (i << 2);
    this.m32[w] = lo >>> 0;
    this.m32[w + 1] = hi >>> 0;
  }

  /**
   * Writes an indirect table of `count` descriptors at tableAddr (inside driver memory),
   * linked 0 -> 1 -> ... by NEXT, the first `readable` device-readable.
   */
  writeTable(tableAddr: number, addrs: ArrayLike<number>, lens: ArrayLike<number>, readable: number, count = addrs.length): void {
    const off = tableAddr - this.base;
    if (off < 0 || off + 16 * count > this.memory.length || (off & 3) !== 0) {
      throw new Error(`indirect table 0x${tableAddr.toString(16)} outside driver memory or misaligned`);
    }
    const t = off >> 2;
    for (let k = 0; k < count; k++) {
      const flags = (k >= readable ? VRING_DESC_F_WRITE : 0) | (k + 1 < count ? VRING_DESC_F_NEXT : 0);
      this.putDesc(t + 4 * k, addrs[k], lens[k], this.tableWord3(flags, k + 1 < count ? k + 1 : 0));
    }
  }
}

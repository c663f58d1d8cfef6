/**
 * The dirty-page log of a live migration (vhost-user SET_LOG_BASE, VHOST_F_LOG_ALL): a
 * bitmap in memory the front-end shares, one bit per 4 KiB page of guest-physical memory
 * (bit p % 8 of byte p / 8, which is also QEMU's layout of 64-bit chunks on little-endian
 * hosts). Every byte the back-end writes into guest memory while the log is on must have
 * its page marked after the write, or the destination keeps the page's old contents.
 *
 * The data path knows where it wrote as host bytes (a region's Uint8Array and an offset),
 * whatever the address it was given (guest-physical, front-end virtual or an IOVA through
 * the IOTLB), so marking goes host bytes -> region -> guest-physical, the one translation
 * that is right in all three cases (DPDK needs translate_log_addr for the IOVA case).
 *
 * Marks are atomic ORs (the front-end reads and clears the bitmap while workers mark it), one
 * per distinct bitmap byte per burst, as DPDK's log cache does: markGuest() gathers them, and
 * flush() applies them once the burst's writes are done (the worker calls it after every step
 * and before it stops a ring or drops the log). Marking after the write is what matters: a
 * bit the front-end clears in between is set again by the flush and the page copied later.
 */
import type { GuestMemory } from './guest-memory.js';

/** Bytes of guest memory per bit (VHOST_LOG_PAGE). */
export const LOG_PAGE = 4096;

const EMPTY = new Uint8Array(0);

/** Bitmap bytes needed to log guest-physical memory below `guestEnd`. */
export function logBytesFor(guestEnd: number): number {
  return Math.ceil(Math.ceil(guestEnd / LOG_PAGE) / 8);
}

/** Distinct bitmap bytes gathered before flush() must run. */
const PENDING = 64;

export class DirtyLog {
  /** Pages marked, counting a page once per write that touched it (for inspect). */
  marks = 0;
  // Marks not applied yet: bitmap byte index and bits, consecutive pages of one byte merged.
  private readonly pendingByte = new Float64Array(PENDING);
  private readonly pendingBits = new Uint8Array(PENDING);
  private pending = 0;
  /** Writes the log could not record: past the end of the bitmap, or in no region. */
  outside = 0;
  // The region of the last markHost(): its bytes and guest-physical start.
  private lastBytes: Uint8Array = EMPTY;
  private lastGuest = 0;
  private lastGen = -1;

  constructor(private readonly bits: Uint8Array, private readonly memory: GuestMemory) {}

  /** Marks the pages of `len` bytes written at bytes[offset] (bytes: a guest region's). */
  markHost(bytes: Uint8Array, offset: number, len: number): void {
    if (bytes !== this.lastBytes || this.lastGen !== this.memory.generation) {
      const region = this.memory.regions.find((r) => r.bytes === bytes);
      if (region === undefined) {
        this.outside++;
        return;
      }
      this.lastBytes = bytes;
      this.lastGuest = region.guestAddr;
      this.lastGen = this.memory.generation;
    }
    this.markGuest(this.lastGuest + offset, len);
  }

  /** Marks the pages of [gpa, gpa + len). */
  markGuest(gpa: number, len: number): void {
    if (len <= 0) return;
    const bits = this.bits;
    const last = Math.floor((gpa + len - 1) / LOG_PAGE);
    for (let page = Math.floor(gpa / LOG_PAGE); page <= last; page++) {
      const bit = page % 8;
      const byte = (page - bit) / 8;
      if (byte >= bits.length) {
        this.outside++;
        return;
      }
      const n = this.pending;
      if (n > 0 && this.pendingByte[n - 1] === byte) {
        this.pendingBits[n - 1] |= 1 << bit;
      } else {
        if (n === PENDING) this.flush();
        const k = this.pending;
        this.pendingByte[k] = byte;
        this.pendingBits[k] = 1 << bit;
        this.pending = k + 1;
      }
      this.marks++;
    }
  }

  /** Applies the gathered marks to the bitmap. */
  flush(): void {
    const bits = this.bits;
    for (let i = 0; i < this.pending; i++) Atomics.or(bits, this.pendingByte[i]!, this.pendingBits[i]!);
    this.pending = 0;
  }
}

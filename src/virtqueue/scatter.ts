/**
 * A preallocated scatter list: the host pieces of one (or, for mergeable RX, several)
 * descriptor chains, as parallel arrays so that walking a chain allocates nothing.
 *
 * Piece i is bytes[i][offset[i] .. offset[i] + len[i]]. Nothing else is kept per piece: each
 * store here is on the per-descriptor path (the walker knows guest addresses for its
 * messages). `bytes` holds references to region byte arrays (assigning a reference is not
 * an allocation, and every element is a Uint8Array, so reads stay monomorphic).
 * Offsets are < 2^32 (a Uint8Array is at most 4 GiB), so Uint32Array is exact.
 */
import { NO_WIDE, type WideView } from '../memory/wide-view.js';

const EMPTY = new Uint8Array(0);

/** Default capacity: DPDK uses BUF_VECTOR_MAX = 256; mergeable RX of a 64 KiB frame into 4 KiB buffers needs 17. */
export const DEFAULT_SG_CAPACITY = 1024;

export class ScatterList {
  count = 0;
  readonly bytes: Uint8Array[];
  /** Wide views of each piece's bytes (same start), or NO_WIDE. */
  readonly wide: WideView[];
  readonly offset: Uint32Array;
  readonly len: Uint32Array;

  constructor(readonly capacity: number = DEFAULT_SG_CAPACITY) {
    this.bytes = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.wide = new Array<WideView>(capacity).fill(NO_WIDE);
    this.offset = new Uint32Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  reset(): void {
    this.count = 0;
  }

  /**
   * Appends one piece (frames outside guest memory, e.g. a source's template). Pass
   * `wide` (wideOf(bytes), made once) to enable wide copies. Returns false when full.
   */
  push(bytes: Uint8Array, offset: number, len: number, wide: WideView = NO_WIDE): boolean {
    const k = this.count;
    if (k >= this.capacity) return false;
    this.bytes[k] = bytes;
    this.wide[k] = wide;
    this.offset[k] = offset;
    this.len[k] = len;
    this.count = k + 1;
    return true;
  }

  /** Total bytes in pieces [first, count). */
  total(first = 0): number {
    let t = 0;
    for (let i = first; i < this.count; i++) t += this.len[i];
    return t;
  }

  /** Copies pieces [first, count) out into a fresh array (tests and debugging only; allocates). */
  gather(first = 0): Uint8Array {
    const out = new Uint8Array(this.total(first));
    let o = 0;
    for (let i = first; i < this.count; i++) {
      const off = this.offset[i];
      out.set(this.bytes[i].subarray(off, off + this.len[i]), o);
      o += this.len[i];
    }
    return out;
  }
}

/**
 * Above this many bytes a builtin (memcpy) wins; below it a loop does (measured on Node 20 /
 * x86-64: set(subarray) costs ~50 ns flat, the 4-byte word loop ~0.3 ns/byte).
 */
export const BUILTIN_COPY_MIN = 160;

/**
 * Copies n bytes from src[s..] to dst[d..]; dv / sv are the wide views of dst / src (or
 * NO_WIDE). Small copies whose two sides share their alignment modulo 4 run 4 bytes at a
 * time, and 8 at a time where they share it modulo 8 (wide-view.ts says why the width
 * matters); large ones use copyWithin when source and destination are the same array (no
 * allocation), otherwise set(subarray): one short-lived view per copy of >= BUILTIN_COPY_MIN bytes.
 */
export function copyPiece(dst: Uint8Array, dv: WideView, d: number, src: Uint8Array, sv: WideView, s: number, n: number): void {
  // The common case first, small enough for V8 to inline into the callers: both sides
  // 8-byte aligned (a frame against DPDK's mbuf layout), a short copy.
  if (((d | s) & 7) === 0 && n < BUILTIN_COPY_MIN) {
    const df = dv.f64;
    const sf = sv.f64;
    if (df.length !== 0 && sf.length !== 0) {
      const fd = d >>> 3;
      const fs = s >>> 3;
      const nf = n >>> 3;
      for (let i = 0; i < nf; i++) df[fd + i] = sf[fs + i];
      const done = nf << 3;
      if (done === n) return;
      d += done;
      s += done;
      n -= done;
    }
  }
  copyPieceGeneral(dst, dv, d, src, sv, s, n);
}

/**
 * copyPiece() for everything but the aligned short copy: large copies, and short ones
 * brought to 8-byte alignment (then handed back to copyPiece's 8-byte loop) or copied
 * 4 bytes at a time where only their alignment modulo 4 matches.
 */
function copyPieceGeneral(dst: Uint8Array, dv: WideView, d: number, src: Uint8Array, sv: WideView, s: number, n: number): void {
  if (n >= BUILTIN_COPY_MIN) {
    if (dst === src) dst.copyWithin(d, s, s + n);
    else dst.set(src.subarray(s, s + n), d);
    return;
  }
  if (((d ^ s) & 3) === 0 && n >= 4) {
    const dw = dv.i32;
    const sw = sv.i32;
    if (dw.length !== 0 && sw.length !== 0) {
      while ((d & 3) !== 0) {
        dst[d++] = src[s++];
        n--;
      }
      if (((d ^ s) & 7) === 0 && n >= 16 && dv.f64.length !== 0 && sv.f64.length !== 0) {
        if ((d & 4) !== 0) {
          dw[d >>> 2] = sw[s >>> 2];
          d += 4;
          s += 4;
          n -= 4;
        }
        copyPiece(dst, dv, d, src, sv, s, n); // both sides 8-byte aligned now
        return;
      }
      const wd = d >>> 2;
      const ws = s >>> 2;
      const nw = n >>> 2;
      for (let i = 0; i < nw; i++) dw[wd + i] = sw[ws + i];
      const done = nw << 2;
      d += done;
      s += done;
      n -= done;
    }
  }
  for (let i = 0; i < n; i++) dst[d + i] = src[s + i];
}

/** copyPiece without wide views (byte loop below BUILTIN_COPY_MIN, builtin above). */
export function copyBytes(dst: Uint8Array, d: number, src: Uint8Array, s: number, n: number): void {
  copyPiece(dst, NO_WIDE, d, src, NO_WIDE, s, n);
}

/**
 * A preallocated scatter list: the host pieces of one (or, for mergeable RX, several)
 * descriptor chains, as parallel arrays so that walking a chain allocates nothing.
 *
 * Piece i is bytes[i][offset[i] .. offset[i] + len[i]), the host view of guest address
 * addr[i]. `bytes` holds references to region byte arrays (assigning a reference is not
 * an allocation, and every element is a Uint8Array, so reads stay monomorphic).
 * Offsets are < 2^32 (a Uint8Array is at most 4 GiB), so Uint32Array is exact.
 */
const EMPTY = new Uint8Array(0);
/** "No word view": copies touching such a piece go byte-wise or through a builtin. */
export const NO_WORDS = new Int32Array(0);

/** Default capacity: DPDK uses BUF_VECTOR_MAX = 256; mergeable RX of a 64 KiB frame into 4 KiB buffers needs 17. */
export const DEFAULT_SG_CAPACITY = 1024;

export class ScatterList {
  count = 0;
  readonly bytes: Uint8Array[];
  /** Word view of each piece's bytes (same start), or NO_WORDS. */
  readonly words: Int32Array[];
  readonly offset: Uint32Array;
  readonly len: Uint32Array;
  /** Guest address (GPA or IOVA) of each piece, for diagnostics and traces. */
  readonly addr: Float64Array;
  /** 1 if the piece came from a device-writable descriptor. */
  readonly writable: Uint8Array;

  constructor(readonly capacity: number = DEFAULT_SG_CAPACITY) {
    this.bytes = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.words = new Array<Int32Array>(capacity).fill(NO_WORDS);
    this.offset = new Uint32Array(capacity);
    this.len = new Uint32Array(capacity);
    this.addr = new Float64Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  reset(): void {
    this.count = 0;
  }

  /**
   * Appends one piece (frames outside guest memory, e.g. a source's template). Pass
   * `words` (wordsOf(bytes), made once) to enable word copies. Returns false when full.
   */
  push(bytes: Uint8Array, offset: number, len: number, words: Int32Array = NO_WORDS): boolean {
    const k = this.count;
    if (k >= this.capacity) return false;
    this.bytes[k] = bytes;
    this.words[k] = words;
    this.offset[k] = offset;
    this.len[k] = len;
    this.addr[k] = 0;
    this.writable[k] = 0;
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
 * Above this many bytes a builtin (memcpy) wins; below it a word loop does (measured on
 * Node 20 / x86-64: set(subarray) costs ~50 ns flat, the word loop ~0.3 ns/byte).
 */
export const BUILTIN_COPY_MIN = 160;

/**
 * Copies n bytes from src[s..] to dst[d..]; dw/sw are the word views of dst/src (or
 * NO_WORDS). Small copies with equal alignment run 4 bytes at a time; large ones use
 * copyWithin when source and destination are the same array (no allocation), otherwise
 * set(subarray): one short-lived view object per copy of >= BUILTIN_COPY_MIN bytes.
 */
export function copyPiece(dst: Uint8Array, dw: Int32Array, d: number, src: Uint8Array, sw: Int32Array, s: number, n: number): void {
  if (n >= BUILTIN_COPY_MIN) {
    if (dst === src) dst.copyWithin(d, s, s + n);
    else dst.set(src.subarray(s, s + n), d);
    return;
  }
  if (((d ^ s) & 3) === 0 && n >= 8 && dw.length !== 0 && sw.length !== 0) {
    while ((d & 3) !== 0) {
      dst[d++] = src[s++];
      n--;
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
  for (let i = 0; i < n; i++) dst[d + i] = src[s + i];
}

/** copyPiece without word views (byte loop below BUILTIN_COPY_MIN, builtin above). */
export function copyBytes(dst: Uint8Array, d: number, src: Uint8Array, s: number, n: number): void {
  copyPiece(dst, NO_WORDS, d, src, NO_WORDS, s, n);
}

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

/** Default capacity: DPDK uses BUF_VECTOR_MAX = 256; mergeable RX of a 64 KiB frame into 4 KiB buffers needs 17. */
export const DEFAULT_SG_CAPACITY = 1024;

export class ScatterList {
  count = 0;
  readonly bytes: Uint8Array[];
  readonly offset: Uint32Array;
  readonly len: Uint32Array;
  /** Guest address (GPA or IOVA) of each piece, for diagnostics and traces. */
  readonly addr: Float64Array;
  /** 1 if the piece came from a device-writable descriptor. */
  readonly writable: Uint8Array;

  constructor(readonly capacity: number = DEFAULT_SG_CAPACITY) {
    this.bytes = new Array<Uint8Array>(capacity).fill(EMPTY);
    this.offset = new Uint32Array(capacity);
    this.len = new Uint32Array(capacity);
    this.addr = new Float64Array(capacity);
    this.writable = new Uint8Array(capacity);
  }

  reset(): void {
    this.count = 0;
  }

  /** Appends one piece (for building frames outside guest memory, e.g. a source's template). Returns false when full. */
  push(bytes: Uint8Array, offset: number, len: number): boolean {
    const k = this.count;
    if (k >= this.capacity) return false;
    this.bytes[k] = bytes;
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

/** Below this many bytes a plain loop beats a builtin call (measured: see bench/virtqueue-split.ts). */
const LOOP_COPY_MAX = 128;

/**
 * Copies n bytes from src[s..] to dst[d..]. Small copies are an inline loop; larger ones
 * use copyWithin when source and destination are the same region array (no allocation),
 * and otherwise set(subarray) — one short-lived view object per large copy, amortised over
 * at least LOOP_COPY_MAX bytes.
 */
export function copyBytes(dst: Uint8Array, d: number, src: Uint8Array, s: number, n: number): void {
  if (n <= LOOP_COPY_MAX) {
    for (let i = 0; i < n; i++) dst[d + i] = src[s + i];
  } else if (dst === src) {
    dst.copyWithin(d, s, s + n);
  } else {
    dst.set(src.subarray(s, s + n), d);
  }
}

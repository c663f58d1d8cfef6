/**
 * Wide views of one byte array (same start), so copies move 4 or 8 bytes per access.
 *
 * Why 8: a frame copied into a guest buffer lands in cache lines the front-end's core
 * owns, and every store waits in the store buffer behind those lines' ownership
 * transfers. Fewer, wider stores let more frames' transfers overlap: from one thread into
 * buffers another thread reads, a 64-byte frame moves at ~37 M frames/s with 4-byte
 * stores and ~54 M/s with 8-byte ones (this machine; bench/copy-cross-core.ts).
 *
 * Float64Array is used as a raw 8-byte mover. That is exact only if the engine never
 * rewrites NaN bit patterns on a typed-array load or store; V8 on x86-64 and arm64 does
 * not, in any tier (test/memory/wide-view.test.ts checks interpreted and optimized code).
 * The self-test below checks the running engine once at load and, should it ever
 * canonicalize, wideOf() hands out no 8-byte views and copies fall back to 4-byte words.
 */
export class WideView {
  constructor(
    /** bytes as 32-bit words (i32[k] is bytes[4k..4k+3]); empty when not 4-byte aligned. */
    readonly i32: Int32Array,
    /** bytes as 8-byte units (f64[k] is bytes[8k..8k+7]); empty when not 8-byte aligned. */
    readonly f64: Float64Array,
  ) {}
}

const NO_I32 = new Int32Array(0);
const NO_F64 = new Float64Array(0);

/** No wide views: copies touching such bytes go byte-wise or through a builtin. */
export const NO_WIDE = new WideView(NO_I32, NO_F64);

/** Does a Float64Array copy keep every bit of signalling / quiet NaNs with payloads? */
function float64CopyIsExact(): boolean {
  const src = new Uint32Array([
    0x00000001, 0x7ff00000, // signalling NaN, payload 1
    0xfff7ffff, 0xfff7ffff, // V8's "hole" NaN pattern
    0x12345678, 0x7ff4abcd, // signalling NaN with payload
    0x00000000, 0xfff80001, // negative quiet NaN with payload
    0x00000000, 0x80000000, // -0
    0x00000001, 0x00000000, // smallest denormal
  ]);
  const dst = new Uint32Array(src.length);
  const s = new Float64Array(src.buffer);
  const d = new Float64Array(dst.buffer);
  for (let i = 0; i < s.length; i++) d[i] = s[i];
  for (let i = 0; i < src.length; i++) if (src[i] !== dst[i]) return false;
  return true;
}

/** False if this engine rewrites NaNs on typed-array copies (then no 8-byte views). */
export const FLOAT64_COPY_EXACT = float64CopyIsExact();

/** Wide views over `bytes` (same start); each is empty when `bytes` is not aligned for it. */
export function wideOf(bytes: Uint8Array): WideView {
  const off = bytes.byteOffset;
  const i32 = (off & 3) === 0 ? new Int32Array(bytes.buffer, off, bytes.length >>> 2) : NO_I32;
  const f64 = FLOAT64_COPY_EXACT && (off & 7) === 0 ? new Float64Array(bytes.buffer, off, bytes.length >>> 3) : NO_F64;
  return i32.length === 0 && f64.length === 0 ? NO_WIDE : new WideView(i32, f64);
}

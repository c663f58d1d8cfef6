// 8-byte copies through Float64Array must move every bit pattern exactly, NaNs with
// payloads and signalling NaNs included, in interpreted and in optimized code alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FLOAT64_COPY_EXACT, NO_WIDE, wideOf } from '../../src/memory/wide-view.js';
import { copyPiece } from '../../src/virtqueue/scatter.js';

/** 4096 doubles' worth of awkward bit patterns: every NaN class, -0, denormals, pseudo-random words. */
function patterns(): Uint8Array {
  const words = new Uint32Array(2 * 4096);
  const highs = [0x7ff00000, 0x7ff7ffff, 0x7ff80000, 0xfff00000, 0xfff7ffff, 0xfff80000, 0x7ff40000, 0x80000000, 0, 0x7fefffff];
  const lows = [0, 1, 0xfff7ffff, 0xffffffff, 0x12345678];
  let k = 0;
  for (const hi of highs) {
    for (const lo of lows) {
      words[k++] = lo;
      words[k++] = hi;
    }
  }
  let r = 1;
  while (k < words.length) {
    r = (Math.imul(r, 1103515245) + 12345) >>> 0;
    words[k] = r;
    r = (Math.imul(r, 1103515245) + 12345) >>> 0;
    words[k + 1] = (k & 2) !== 0 ? r | 0x7ff00000 : r; // half of them NaNs or infinities
    k += 2;
  }
  return new Uint8Array(words.buffer);
}

test('wide views: Float64Array copies are exact on this engine (the load-time self-test agrees)', () => {
  assert.equal(FLOAT64_COPY_EXACT, true, 'this engine rewrites NaN bits: copies fall back to 4-byte words (slower, still exact)');
});

test('copyPiece moves every bit pattern exactly at every alignment, before and after V8 optimizes it', () => {
  const src = patterns();
  const dst = new Uint8Array(src.length + 16);
  const sv = wideOf(src);
  const dv = wideOf(dst);
  // 150 bytes stays under BUILTIN_COPY_MIN, so the word / 8-byte loops do the work. Enough
  // rounds that copyPiece runs optimized for most of them; every round is checked.
  for (let round = 0; round < 20000; round++) {
    const s = (round * 8 + (round & 7)) % (src.length - 160);
    const d = (round * 24 + ((round >>> 3) & 7)) % (dst.length - 160);
    const n = 150 - (round % 9);
    copyPiece(dst, dv, d, src, sv, s, n);
    for (let i = 0; i < n; i++) {
      if (dst[d + i] !== src[s + i]) assert.fail(`round ${round}: byte ${i} of a copy ${s} -> ${d} (${n} bytes) is ${dst[d + i]}, not ${src[s + i]}`);
    }
  }
});

test('wide views are empty where the bytes are not aligned for them; copies still exact', () => {
  const buf = new ArrayBuffer(64);
  assert.equal(wideOf(new Uint8Array(buf, 4, 32)).f64.length, 0);
  assert.equal(wideOf(new Uint8Array(buf, 4, 32)).i32.length, 8);
  assert.equal(wideOf(new Uint8Array(buf, 1, 32)), NO_WIDE);
  const src = patterns().subarray(0, 100);
  const dst = new Uint8Array(buf, 1, 60);
  copyPiece(dst, wideOf(dst), 3, src, wideOf(src), 5, 50);
  assert.deepEqual(dst.subarray(3, 53), src.subarray(5, 55));
});

/**
 * Writing received frames into a run of buffers (VirtQueue.reserveRun, buffer-run.ts): a
 * virtio-net header, then the frame, into each buffer; the used length of each goes into
 * run.used for VirtQueue.completeRun().
 *
 * Where the time goes: every buffer is a line or two the driver's core last touched, so
 * each header load and each frame store waits for a transfer between cores, and the core
 * keeps only so many of those in flight: its store buffer holds a few dozen stores, and
 * JavaScript's widest store is 8 bytes (a 64-byte frame is 8 stores, where DPDK's vhost
 * needs 2). What serve can do is issue as little else as possible between them: each pass
 * here is a short loop over the whole run with its arrays in locals, so the frames' stores
 * are not queued behind stack spills and per-frame bookkeeping.
 */
import { BUILTIN_COPY_MIN, copyPiece, type ScatterList } from '../virtqueue/scatter.js';
import type { BufferRun } from '../virtqueue/buffer-run.js';
import { stampHeaders } from './rx-header.js';

/**
 * Headers and frames[first .. first + k) into the run's first k buffers (each holds
 * hdrLen + its frame); returns the frames' bytes.
 */
export function fillRun(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number): number {
  // The headers of the whole run first: each header's compare loads a line the driver's
  // core last held, and with nothing between them those loads miss together instead of
  // one after another behind each frame's stores.
  stampHeaders(run.bytes, run.wide, run.offsets, k, hdrLen);
  const bytes = copyUniformFrames(run, frames, first, k, hdrLen);
  return bytes >= 0 ? bytes : copyFrames(run, frames, first, k, hdrLen);
}

/**
 * The frames when they are alike, as a source's are: one length, at least 64 bytes and
 * below BUILTIN_COPY_MIN, from one array, and 8-byte aligned on both sides. Checked in one
 * pass; then each frame's first 64 bytes in a loop whose only stores are the frames' (a
 * whole 64-byte frame: against copyFrames() doing checks, copy and bookkeeping per frame,
 * 1.06-1.16x, median 1.12x, serve-ab back-end -> guest with 4 packed pairs on one worker,
 * five rounds; a block loop inside it measured 0.92-1.01x of this straight one), and the
 * rest of longer frames in a second pass. Returns -1, having written nothing, when they
 * are not alike.
 */
function copyUniformFrames(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number): number {
  const lens = frames.len;
  const len = lens[first];
  if (len < 64 || len >= BUILTIN_COPY_MIN) return -1;
  const f = run.wide.f64;
  const views = frames.wide;
  const view = views[first];
  const sf = view.f64;
  if (f.length === 0 || sf.length === 0) return -1;
  const offsets = run.offsets;
  const starts = frames.offset;
  let misaligned = 0;
  for (let j = 0; j < k; j++) {
    const i = first + j;
    misaligned |= (offsets[j] + hdrLen) | starts[i];
    if (views[i] !== view || lens[i] !== len) return -1;
  }
  if ((misaligned & 7) !== 0) return -1;
  for (let j = 0; j < k; j++) {
    const d = (offsets[j] + hdrLen) >>> 3;
    const s = starts[first + j] >>> 3;
    // Loads before stores: in straight-line code V8 checks each array (map, length, data
    // pointer) once per block, where it re-checked both on every pass of a word loop.
    const w0 = sf[s], w1 = sf[s + 1], w2 = sf[s + 2], w3 = sf[s + 3];
    const w4 = sf[s + 4], w5 = sf[s + 5], w6 = sf[s + 6], w7 = sf[s + 7];
    f[d] = w0; f[d + 1] = w1; f[d + 2] = w2; f[d + 3] = w3;
    f[d + 4] = w4; f[d + 5] = w5; f[d + 6] = w6; f[d + 7] = w7;
  }
  if (len > 64) {
    const b = run.bytes;
    const wide = run.wide;
    for (let j = 0; j < k; j++) {
      const i = first + j;
      copyPiece(b, wide, offsets[j] + hdrLen + 64, frames.bytes[i], view, starts[i] + 64, len - 64);
    }
  }
  const used = run.used;
  const u = hdrLen + len;
  for (let j = 0; j < k; j++) used[j] = u;
  return len * k;
}

/** Any frames, one at a time: 8 bytes at a time where both sides allow, else copyPiece(). */
function copyFrames(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number): number {
  const b = run.bytes;
  const wide = run.wide;
  const f = wide.f64;
  const offsets = run.offsets;
  const used = run.used;
  const lens = frames.len;
  let bytes = 0;
  for (let j = 0; j < k; j++) {
    const i = first + j;
    const len = lens[i];
    const d = offsets[j] + hdrLen;
    const s = frames.offset[i];
    const sf = frames.wide[i].f64;
    if (((d | s | len) & 7) === 0 && len < BUILTIN_COPY_MIN && f.length !== 0 && sf.length !== 0) {
      const fd = d >>> 3;
      const fs = s >>> 3;
      const nf = len >>> 3;
      let q = 0;
      for (; q + 8 <= nf; q += 8) {
        const c = fs + q;
        const w0 = sf[c], w1 = sf[c + 1], w2 = sf[c + 2], w3 = sf[c + 3];
        const w4 = sf[c + 4], w5 = sf[c + 5], w6 = sf[c + 6], w7 = sf[c + 7];
        const a = fd + q;
        f[a] = w0; f[a + 1] = w1; f[a + 2] = w2; f[a + 3] = w3;
        f[a + 4] = w4; f[a + 5] = w5; f[a + 6] = w6; f[a + 7] = w7;
      }
      for (; q < nf; q++) f[fd + q] = sf[fs + q];
    } else {
      copyPiece(b, wide, d, frames.bytes[i], frames.wide[i], s, len);
    }
    used[j] = hdrLen + len;
    bytes += len;
  }
  return bytes;
}

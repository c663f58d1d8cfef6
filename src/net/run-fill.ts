/**
 * Writing received frames into a run of buffers (VirtQueue.reserveRun, buffer-run.ts), in
 * two steps around VirtQueue.completeRun(): prepareRun() writes each buffer's virtio-net
 * header and sets its used length in run.used, copyRun() then writes the frames.
 *
 * Where the time goes: every buffer is a line or two the driver's core last touched, so
 * each header load and each frame store waits for a transfer between cores, and the core
 * keeps only so many of those in flight: its store buffer holds a few dozen stores, and
 * JavaScript's widest store is 8 bytes (a 64-byte frame is 8 stores, where DPDK's vhost
 * needs 2). What serve can do is issue as little else as possible between them: each pass
 * here is a short loop over the whole run with its arrays in locals, so the frames' stores
 * are not queued behind stack spills and per-frame bookkeeping, and the ring's used entries
 * are written before the frames rather than queued behind them.
 */
import { BUILTIN_COPY_MIN, copyPiece, type ScatterList } from '../virtqueue/scatter.js';
import type { BufferRun } from '../virtqueue/buffer-run.js';
import { stampHeaders } from './rx-header.js';

/**
 * The headers of frames[first .. first + k) into the run's first k buffers, and their used
 * lengths (header + frame) into run.used. Returns whether the frames are alike, as a
 * source's are: one length, at least 64 bytes and below BUILTIN_COPY_MIN, from one array,
 * 8-byte aligned on both sides of every copy (copyRun then takes its fastest loop).
 */
export function prepareRun(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number): boolean {
  // The headers of the whole run first: each header's compare loads a line the driver's
  // core last held, and with nothing between them those loads miss together instead of
  // one after another behind each frame's stores.
  stampHeaders(run.bytes, run.wide, run.offsets, k, hdrLen);
  const lens = frames.len;
  const len = lens[first];
  const views = frames.wide;
  const view = views[first];
  let alike = len >= 64 && len < BUILTIN_COPY_MIN && run.wide.f64.length !== 0 && view.f64.length !== 0;
  const offsets = run.offsets;
  const starts = frames.offset;
  const used = run.used;
  let misaligned = 0;
  for (let j = 0; j < k; j++) {
    const i = first + j;
    const n = lens[i];
    used[j] = hdrLen + n;
    misaligned |= (offsets[j] + hdrLen) | starts[i];
    if (n !== len || views[i] !== view) alike = false;
  }
  return alike && (misaligned & 7) === 0;
}

/** frames[first .. first + k) into the run's buffers after their headers (prepareRun first); returns their bytes. */
export function copyRun(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number, alike: boolean): number {
  return alike ? copyAlikeFrames(run, frames, first, k, hdrLen) : copyFrames(run, frames, first, k, hdrLen);
}

/**
 * Frames prepareRun() found alike: each frame's first 64 bytes in a loop whose only stores
 * are the frames' (a whole 64-byte frame: against a loop doing checks, copy and
 * bookkeeping per frame, 1.06-1.16x, median 1.12x, serve-ab back-end -> guest with 4 packed
 * pairs on one worker, five rounds; a block loop inside it measured 0.85-1.03x of this
 * straight one, median 0.95x over twelve rounds), then the rest of longer frames in a
 * second pass.
 */
function copyAlikeFrames(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number): number {
  const f = run.wide.f64;
  const view = frames.wide[first];
  const sf = view.f64;
  const offsets = run.offsets;
  const starts = frames.offset;
  const len = frames.len[first];
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
  return len * k;
}

/**
 * Any frames, one at a time: 64 bytes and then 8 at a time where both sides allow, else
 * copyPiece(). The aligned copy is written out rather than left to copyPiece(): where V8
 * did not inline that call, one call per frame halved a worker's rate (back-end -> guest,
 * packed, decided per process at warm-up).
 */
function copyFrames(run: BufferRun, frames: ScatterList, first: number, k: number, hdrLen: number): number {
  const b = run.bytes;
  const wide = run.wide;
  const f = wide.f64;
  const offsets = run.offsets;
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
    bytes += len;
  }
  return bytes;
}

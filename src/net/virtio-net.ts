/**
 * virtio-net on top of a VirtQueue (SplitQueue or PackedQueue, queue.ts): TX (guest -> device) and RX (device -> guest) bursts.
 *
 * Header: struct virtio_net_hdr_mrg_rxbuf, 12 bytes with VERSION_1 or MRG_RXBUF
 * (num_buffers at offset 10), 10 bytes for legacy devices without MRG_RXBUF.
 *
 * TX hands frames to the endpoint as pieces of the TX scatter list (zero-copy): the
 * header is skipped by trimming the pieces in place, and the endpoint reads guest memory
 * directly. That is the fastest choice here: a sink touches no payload byte at all, and
 * the loopback copies each byte exactly once, TX buffer -> RX buffer, as a bounce buffer
 * would double it. An endpoint that needs the frame after returning (tap) copies it.
 *
 * RX maps (translates) every buffer a frame needs before writing a byte, so a MISS or a
 * fault never leaves a half-written frame, and nothing is consumed unless the frame is
 * delivered.
 *
 * Counters live in a Float64Array (the lead's shared-memory counter block can be passed
 * in); indices match src/datapath/stats.ts RingCounter.
 */
import type { DirtyLog } from '../memory/dirty-log.js';
import { WALK_MISS, WALK_OK, SINGLE_REST } from '../virtqueue/chain.js';
import { ACCESS_WRITE } from '../memory/address-space.js';
import { NO_WIDE, type WideView } from '../memory/wide-view.js';
import type { VirtQueue } from '../virtqueue/queue.js';
import { ScatterList, copyBytes, copyPiece, DEFAULT_SG_CAPACITY } from '../virtqueue/scatter.js';
import { BufferRun } from '../virtqueue/buffer-run.js';
import type { FrameSink } from './endpoint.js';
import { txHeaderProblem } from './offloads.js';
import { VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_MRG_LEN, writeHeader } from './rx-header.js';
import { prepareRun, copyRun } from './run-fill.js';

export { VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_MRG_LEN };

export const NetCounter = {
  packets: 0,
  bytes: 1,
  drops: 2,
  /** Bumped by the caller (it owns the kick eventfd). */
  kicks: 3,
  /** Interrupts the queue asked for (the caller writes the call eventfd). */
  interrupts: 4,
  /** Walks stopped by an IOTLB miss (the caller counts misses actually sent). */
  misses: 5,
  /** Malformed frames (e.g. TX chain shorter than the header + Ethernet header). */
  errors: 6,
  /** TX bursts stopped because the endpoint refused a frame (Endpoint.whyHeld): the chain waits. */
  held: 7,
} as const;
/** Counter slots per ring: NetCounter's, and one the worker keeps (datapath/stats.ts RingCounter.missesSent). */
export const NET_COUNTERS = 9;

/** Frames shorter than an Ethernet header are dropped and counted as errors. */
export const MIN_FRAME = 14;

/** receiveFrame() results. */
export const RX_DONE = 0;
/** No (or not enough) RX buffers: nothing consumed; try again after the driver adds some. */
export const RX_NO_ROOM = 1;
/** The frame could not fit (no MRG_RXBUF, or more chains than the scatter list holds): dropped, counted, nothing consumed. */
export const RX_DROPPED = 2;
/** IOTLB miss on the RX queue (queue.missPending): nothing consumed. */
export const RX_MISS = 3;
/** The RX queue is broken (queue.brokenReason). */
export const RX_BROKEN = 4;

/**
 * Chains receiveBurst() reserves at a time: a source's whole burst (source.ts), so each
 * pass of run-fill.ts runs over it in one go. Against 64: serve-ab back-end -> guest 1.02-1.09x
 * with 4 packed pairs on one worker (eight rounds), 1.07x with one packed pair (three),
 * split 1.02-1.04x with 4 pairs and level with one.
 */
const RUN_CAPACITY = 128;

export interface NetQueueOptions {
  /** 12 with VERSION_1 or MRG_RXBUF, else 10. */
  headerLength: number;
  /** VIRTIO_NET_F_MRG_RXBUF negotiated (RX only). */
  mergeable: boolean;
  /** Counter block (NET_COUNTERS slots); a private one when omitted. */
  counters?: Float64Array;
  /** TX: offloads.ts TxOffload bits the guest negotiated (checked in every header a sink takes). */
  txOffloads?: number;
  sgCapacity?: number;
}

export class NetQueue {
  readonly queue: VirtQueue;
  readonly sg: ScatterList;
  readonly hdrLen: number;
  readonly mergeable: boolean;
  readonly counters: Float64Array;
  /** Set when a flush decided the driver must be interrupted; the caller signals and clears it. */
  interruptPending = false;
  /** Per-frame chain bookkeeping for RX. */
  readonly heads: Uint16Array;
  readonly lens: Uint32Array;
  /** Scratch for a MAC swap that straddles pieces. */
  readonly mac = new Uint8Array(12);
  /** TX: the current frame's virtio-net header, for endpoints that take it (FrameSink.takesHeader). */
  readonly header = new Uint8Array(VIRTIO_NET_HDR_MRG_LEN);
  readonly txOffloads: number;
  /**
   * RX: the virtio-net header to give the next frame (its first 10 bytes; num_buffers is
   * ours), set by an endpoint whose frames come with one (a tap with receive offloads), so a
   * partial checksum or a 64 KiB segment reaches the guest as the kernel left it. null: zeros.
   */
  rxHeader: Uint8Array | null = null;
  /** RX bursts: the buffers receiveBurst() fills in one go (buffer-run.ts says why). */
  readonly run = new BufferRun(RUN_CAPACITY);

  constructor(queue: VirtQueue, opts: NetQueueOptions) {
    if (opts.headerLength !== VIRTIO_NET_HDR_LEN && opts.headerLength !== VIRTIO_NET_HDR_MRG_LEN) {
      throw new Error(`virtio-net header length must be 10 or 12, got ${opts.headerLength}`);
    }
    if (opts.mergeable && opts.headerLength !== VIRTIO_NET_HDR_MRG_LEN) {
      throw new Error('MRG_RXBUF needs the 12-byte virtio-net header');
    }
    this.queue = queue;
    this.hdrLen = opts.headerLength;
    this.mergeable = opts.mergeable;
    this.txOffloads = opts.txOffloads ?? 0;
    this.counters = opts.counters ?? new Float64Array(NET_COUNTERS);
    this.sg = new ScatterList(opts.sgCapacity ?? DEFAULT_SG_CAPACITY);
    this.heads = new Uint16Array(this.sg.capacity);
    this.lens = new Uint32Array(this.sg.capacity);
  }

  /** Publishes staged used entries (one used->idx store) and decides on an interrupt. */
  finish(): void {
    const q = this.queue;
    if (q.flushUsed() !== 0 && q.needsInterrupt()) {
      this.interruptPending = true;
      this.counters[NetCounter.interrupts]++;
    }
  }

  /** Returns and clears interruptPending. */
  takeInterrupt(): boolean {
    const p = this.interruptPending;
    this.interruptPending = false;
    return p;
  }
}

/**
 * Guest -> device: up to `max` chains from txq to the endpoint. Returns how many chains
 * were consumed. Stops early on backpressure, an IOTLB miss (txq.queue.missPending), or
 * a broken queue.
 */
export function transmitBurst(txq: NetQueue, endpoint: FrameSink, max: number): number {
  const q = txq.queue;
  if (!q.ready) return 0;
  // Chains an earlier scan found are enough for a burst: no look at the ring's frontier,
  // where the driver may be writing the same line (serve-ab guest -> back-end packed
  // 1.01-1.06x with 4 pairs, 1.06-1.14x with one, split level).
  let avail = q.knownAvailable();
  if (avail < max) avail = q.availableCount();
  if (avail === 0) return 0;
  if (avail > max) avail = max;
  const sg = txq.sg;
  const hdrLen = txq.hdrLen;
  const c = txq.counters;
  const header = endpoint.takesHeader === true ? txq.header : null;
  let done = 0;
  let delivered = 0;
  while (done < avail) {
    sg.count = 0;
    const st = q.walkChain(0, sg);
    if (st !== WALK_OK) {
      if (st === WALK_MISS) c[NetCounter.misses]++;
      break;
    }
    if (q.chainWriteLen !== 0) {
      q.fail(`TX chain at head ${q.chainHead} has ${q.chainWriteLen} device-writable bytes`);
      break;
    }
    const total = q.chainReadLen;
    if (total < hdrLen + MIN_FRAME) {
      // Malformed: give the chain back unread, count it.
      dropChain(q, c);
      done++;
      continue;
    }
    if (header !== null) {
      gatherHeader(sg, hdrLen, header);
      if (txHeaderProblem(header, total - hdrLen, txq.txOffloads) !== '') {
        // Never handed on: the kernel would act on offsets and sizes the guest chose.
        dropChain(q, c);
        done++;
        continue;
      }
    }
    // Skip the header, which may span pieces (pieces are never empty).
    let p = 0;
    if (sg.len[0] > hdrLen) {
      sg.offset[0] += hdrLen;
      sg.len[0] -= hdrLen;
    } else {
      p = skipHeader(sg, hdrLen);
    }
    const flen = total - hdrLen;
    if (!endpoint.transmit(sg, p, flen, header)) {
      c[NetCounter.held]++;
      break;
    }
    q.pushUsed(q.chainHead, 0);
    q.consume(1);
    done++;
    delivered++;
    c[NetCounter.packets]++;
    c[NetCounter.bytes] += flen;
  }
  if (delivered !== 0) endpoint.flush();
  if (done !== 0) txq.finish();
  return done;
}

/** A TX chain refused: back to the driver unread, counted as an error and a drop. */
function dropChain(q: VirtQueue, c: Float64Array): void {
  c[NetCounter.errors]++;
  c[NetCounter.drops]++;
  q.pushUsed(q.chainHead, 0);
  q.consume(1);
}

/** Copies the header, which may span pieces, into `out` (a 10-byte one leaves num_buffers 0). */
function gatherHeader(sg: ScatterList, hdrLen: number, out: Uint8Array): void {
  out.fill(0);
  for (let p = 0, at = 0; at < hdrLen; p++) {
    const n = Math.min(sg.len[p]!, hdrLen - at);
    copyBytes(out, at, sg.bytes[p]!, sg.offset[p]!, n);
    at += n;
  }
}

function skipHeader(sg: ScatterList, hdrLen: number): number {
  let p = 0;
  let skip = hdrLen;
  while (skip >= sg.len[p]) {
    skip -= sg.len[p];
    p++;
  }
  sg.offset[p] += skip;
  sg.len[p] -= skip;
  return p;
}

/**
 * Device -> guest: one frame, pieces src[first..] totalling `len` bytes, into rxq
 * (header + frame). Used entries are staged; call rxq.finish() at the end of the burst.
 * swapMacs exchanges the destination and source MAC addresses on the way (loopback).
 *
 * The common case (the next chain is one buffer big enough for header and frame) goes
 * through mapSingle() and writes straight into the mapped buffer: no scatter list, no
 * per-chain bookkeeping, and as few stores as the bytes allow (wide-view.ts says why
 * stores are what counts here). Everything else takes receiveChains().
 */
export function receiveFrame(rxq: NetQueue, src: ScatterList, first: number, len: number, swapMacs: boolean): number {
  const q = rxq.queue;
  // Not ready (rings unmapped by an invalidate, or broken): the ring views are empty.
  if (!q.ready || (q.knownAvailable() === 0 && q.availableCount() === 0)) return q.broken ? RX_BROKEN : RX_NO_ROOM;
  const hdrLen = rxq.hdrLen;
  const need = hdrLen + len;
  const single = q.mapSingle(0, ACCESS_WRITE, need);
  if (single <= 0) return receiveChains(rxq, src, first, len, swapMacs, single);
  const space = q.dataSpace!;
  const b = space.bytes;
  const wide = space.wide ?? NO_WIDE;
  const o = space.offset;
  writeHeader(b, wide, o, hdrLen, 1);
  if (rxq.rxHeader !== null) copyBytes(b, o, rxq.rxHeader, 0, 10);
  const d = o + hdrLen;
  if (src.len[first] >= len) {
    const sb = src.bytes[first];
    const sw = src.wide[first];
    const s0 = src.offset[first];
    if (swapMacs && len >= 12) {
      swapMacsInto(b, wide, d, sb, sw, s0);
      copyPiece(b, wide, d + 12, sb, sw, s0 + 12, len - 12);
    } else {
      copyPiece(b, wide, d, sb, sw, s0, len);
    }
  } else {
    let at = d;
    let rest = len;
    for (let p = first; rest > 0; p++) {
      const n = src.len[p] < rest ? src.len[p] : rest;
      copyPiece(b, wide, at, src.bytes[p], src.wide[p], src.offset[p], n);
      at += n;
      rest -= n;
    }
    if (swapMacs && len >= 12) swapMacsInPlace(b, d, rxq.mac);
  }
  if (q.log !== null) q.log.markHost(b, o, need);
  q.pushUsed(q.chainHead, need);
  q.consume(1);
  const c = rxq.counters;
  c[NetCounter.packets]++;
  c[NetCounter.bytes] += len;
  return RX_DONE;
}

/** The 12 MAC bytes of src[s..] into b[d..] with destination and source swapped: 3 word stores when aligned. */
function swapMacsInto(b: Uint8Array, wide: WideView, d: number, sb: Uint8Array, sw: WideView, s: number): void {
  const dw = wide.i32;
  const si = sw.i32;
  if (((d | s) & 3) === 0 && dw.length !== 0 && si.length !== 0) {
    // Little-endian words: [d0 d1 d2 d3] [d4 d5 s0 s1] [s2 s3 s4 s5] -> [s0 s1 s2 s3] [s4 s5 d0 d1] [d2 d3 d4 d5].
    const k = s >>> 2;
    const w0 = si[k];
    const w1 = si[k + 1];
    const w2 = si[k + 2];
    const j = d >>> 2;
    dw[j] = (w1 >>> 16) | (w2 << 16);
    dw[j + 1] = (w2 >>> 16) | (w0 << 16);
    dw[j + 2] = (w0 >>> 16) | (w1 << 16);
    return;
  }
  for (let i = 0; i < 6; i++) {
    b[d + i] = sb[s + 6 + i];
    b[d + 6 + i] = sb[s + i];
  }
}

/** Swaps the two MAC addresses at b[d..d+12) in place. */
function swapMacsInPlace(b: Uint8Array, d: number, scratch: Uint8Array): void {
  for (let i = 0; i < 12; i++) scratch[i] = b[d + i];
  for (let i = 0; i < 6; i++) {
    b[d + i] = scratch[6 + i];
    b[d + 6 + i] = scratch[i];
  }
}

/**
 * receiveFrame()'s general path: reserves every chain the frame needs (walking, i.e.
 * translating, all of them) before writing a byte, so a MISS or a fault never leaves a
 * half-written frame, and nothing is consumed unless the frame is delivered. `single` is
 * mapSingle()'s answer for chain 0 (SINGLE_REST: walkSingle() continues from its map()).
 */
function receiveChains(rxq: NetQueue, src: ScatterList, first: number, len: number, swapMacs: boolean, single: number): number {
  const q = rxq.queue;
  const hdrLen = rxq.hdrLen;
  const need = hdrLen + len;
  const sg = rxq.sg;
  const heads = rxq.heads;
  const lens = rxq.lens;
  const maxChains = rxq.mergeable ? heads.length : 1;
  sg.count = 0;
  let avail = q.knownAvailable();
  let chains = 0;
  let got = 0;
  while (got < need) {
    if (chains >= avail) {
      avail = q.availableCount();
      if (chains >= avail) return q.broken ? RX_BROKEN : RX_NO_ROOM;
    }
    if (chains >= maxChains) {
      rxq.counters[NetCounter.drops]++;
      return RX_DROPPED;
    }
    const st = chains === 0 && single === SINGLE_REST ? q.walkSingle(sg) : q.walkChain(chains, sg);
    if (st !== WALK_OK) {
      if (st === WALK_MISS) {
        rxq.counters[NetCounter.misses]++;
        return RX_MISS;
      }
      return RX_BROKEN;
    }
    if (q.chainReadLen !== 0) {
      q.fail(`RX chain at head ${q.chainHead} has ${q.chainReadLen} device-readable bytes`);
      return RX_BROKEN;
    }
    const cap = q.chainWriteLen;
    const rest = need - got;
    if (!rxq.mergeable && cap < rest) {
      rxq.counters[NetCounter.drops]++;
      return RX_DROPPED;
    }
    const take = cap < rest ? cap : rest;
    heads[chains] = q.chainHead;
    lens[chains] = take;
    chains++;
    got += take;
  }

  // Header, which may span pieces (pieces are never empty).
  let dp = 0;
  let doff = 0;
  if (sg.len[0] >= hdrLen) {
    writeHeader(sg.bytes[0], sg.wide[0], sg.offset[0], hdrLen, chains);
    if (rxq.rxHeader !== null) copyBytes(sg.bytes[0], sg.offset[0], rxq.rxHeader, 0, 10);
    doff = hdrLen;
  } else {
    for (let i = 0; i < hdrLen; i++) {
      while (doff >= sg.len[dp]) {
        doff = 0;
        dp++;
      }
      sg.bytes[dp][sg.offset[dp] + doff] = i === 10 ? chains & 0xff : i === 11 ? chains >>> 8 : rxq.rxHeader !== null ? rxq.rxHeader[i]! : 0;
      doff++;
    }
  }
  if (doff === sg.len[dp]) {
    dp++;
    doff = 0;
  }
  sgCopy(sg, dp, doff, src, first, 0, len);
  if (swapMacs && len >= 12) swapMacsSlow(rxq, hdrLen);

  if (q.log !== null) logPieces(q.log, sg, need);
  for (let i = 0; i < chains; i++) q.pushUsed(heads[i], lens[i]);
  q.consume(chains);
  const c = rxq.counters;
  c[NetCounter.packets]++;
  c[NetCounter.bytes] += len;
  return RX_DONE;
}

/**
 * Device -> guest: every piece of `frames` from index 0 to `count` (default frames.count)
 * is one whole frame. Returns how many frames were taken (delivered or dropped); stops at
 * the first one that found no room, missed or broke the queue. Publishes used entries at
 * the end. Frames go into runs of plain buffers (receiveRun) while the ring offers them;
 * from the first chain that is not one, the rest of the burst goes frame by frame
 * (receiveFrame), so a ring or address space that never has runs pays one attempt per burst.
 */
export function receiveBurst(rxq: NetQueue, frames: ScatterList, count: number = frames.count): number {
  const flens = frames.len;
  let longest = 0;
  for (let i = 0; i < count; i++) if (flens[i] > longest) longest = flens[i];
  let i = 0;
  let runs = true;
  while (i < count) {
    if (runs) {
      const k = receiveRun(rxq, frames, i, count - i, rxq.hdrLen + longest);
      if (k === 0) runs = false;
      i += k;
      continue;
    }
    const r = receiveFrame(rxq, frames, i, flens[i], false);
    if (r !== RX_DONE && r !== RX_DROPPED) break;
    i++;
  }
  rxq.finish();
  return i;
}

/**
 * receiveFrame()'s common case for many frames at once: reserves a run of one-descriptor
 * buffers of at least minLen bytes for frames[first .. first + max) (VirtQueue.reserveRun)
 * and writes header and frame into each with no per-frame call or field store
 * (run-fill.ts). Returns how many frames it delivered (0: the next one needs receiveFrame()).
 */
function receiveRun(rxq: NetQueue, frames: ScatterList, first: number, max: number, minLen: number): number {
  const run = rxq.run;
  const q = rxq.queue;
  const k = q.reserveRun(max, ACCESS_WRITE, minLen, run);
  if (k === 0) return 0;
  const alike = prepareRun(run, frames, first, k, rxq.hdrLen);
  // Completed before the frames are copied: the used entries go to lines the driver's core
  // holds too, and written now they wait alongside the headers' loads instead of behind
  // every frame's stores (serve-ab back-end -> guest against completing after the copy:
  // 4 packed pairs on one worker 0.98-1.03x, median 1.02x over five rounds; 4 split pairs
  // 1.02x in three; one packed pair 1.02-1.09x). The driver sees none of it until finish().
  q.completeRun(run, k);
  const bytes = copyRun(run, frames, first, k, rxq.hdrLen, alike);
  const log = q.log;
  if (log !== null) for (let j = 0; j < k; j++) log.markHost(run.bytes, run.offsets[j], run.used[j]);
  const c = rxq.counters;
  c[NetCounter.packets] += k;
  c[NetCounter.bytes] += bytes;
  return k;
}

/** Marks the first `len` bytes of sg's pieces (a frame just written) in the dirty log. */
function logPieces(log: DirtyLog, sg: ScatterList, len: number): void {
  for (let p = 0; len > 0; p++) {
    const n = sg.len[p] < len ? sg.len[p] : len;
    log.markHost(sg.bytes[p], sg.offset[p], n);
    len -= n;
  }
}

/** Copies len bytes from src (piece sp, offset soff within it) to dst (piece dp, offset doff). */
export function sgCopy(dst: ScatterList, dp: number, doff: number, src: ScatterList, sp: number, soff: number, len: number): void {
  while (len > 0) {
    // Skip exhausted pieces (a source may start exactly at a piece end).
    while (soff >= src.len[sp]) {
      soff -= src.len[sp];
      sp++;
    }
    const dl = dst.len[dp] - doff;
    const sl = src.len[sp] - soff;
    let n = dl < sl ? dl : sl;
    if (n > len) n = len;
    copyPiece(dst.bytes[dp], dst.wide[dp], dst.offset[dp] + doff, src.bytes[sp], src.wide[sp], src.offset[sp] + soff, n);
    len -= n;
    doff += n;
    soff += n;
    if (doff === dst.len[dp]) {
      dp++;
      doff = 0;
    }
  }
}

/** MAC swap when the 12 bytes straddle pieces (rare): gather, then scatter back swapped. */
function swapMacsSlow(rxq: NetQueue, start: number): void {
  const sg = rxq.sg;
  const mac = rxq.mac;
  let p = 0;
  let o = start;
  while (o >= sg.len[p]) {
    o -= sg.len[p];
    p++;
  }
  let p2 = p;
  let o2 = o;
  for (let i = 0; i < 12; i++) {
    if (o2 >= sg.len[p2]) {
      o2 = 0;
      p2++;
    }
    mac[i] = sg.bytes[p2][sg.offset[p2] + o2];
    o2++;
  }
  for (let i = 0; i < 12; i++) {
    if (o >= sg.len[p]) {
      o = 0;
      p++;
    }
    sg.bytes[p][sg.offset[p] + o] = i < 6 ? mac[i + 6] : mac[i - 6];
    o++;
  }
}

/**
 * The device side of a virtio 1.2 packed virtqueue (spec 2.8), over guest memory reached
 * through an AddressSpace. Same contract as SplitQueue (split.ts) — availableCount /
 * walkChain(ahead) / consume / pushUsed / flushUsed / needsInterrupt, the same miss and
 * broken semantics — so the virtio-net layer (net/virtio-net.ts) drives either kind unchanged.
 *
 * Layout (little-endian):
 *   desc    16 * size  { u64 addr; u32 len; u16 id; u16 flags }               align 16
 *   driver  4          { u16 off_wrap; u16 flags }  driver event suppression  align 4
 *   device  4          { u16 off_wrap; u16 flags }  device event suppression  align 4
 * vhost-user SET_VRING_ADDR carries them as desc / avail / used addresses. The desc ring
 * is written by the device too (used descriptors), so it is mapped read-write.
 *
 * Available and used: descriptor flags bit 7 (AVAIL) and 15 (USED). A descriptor at the
 * device's avail position is available when AVAIL == avail wrap counter != USED; the
 * device marks a buffer used by writing one descriptor with AVAIL == USED == its used
 * wrap counter. Both counters start at 1 and flip each time their position passes the
 * end of the ring. A chain is consecutive descriptors linked by NEXT; its buffer id is in
 * the last one. An INDIRECT descriptor points at a table of len/16 descriptors, read in
 * order (only WRITE counts there: NEXT, ids and the rest are ignored, spec 2.8.19).
 *
 * Chains are found by a scan (availableCount) that records where each available chain
 * starts and how many ring descriptors it has, incrementally from a frontier, so
 * walkChain(ahead) is O(chain) and each ring descriptor's flags are loaded once by the
 * scan. walkChain re-checks the NEXT flags it reads against the scan (a driver that
 * rewrites available descriptors breaks the queue rather than desynchronising it).
 *
 * Completion is in order (net/virtio-net.ts pushes used entries in the order it consumed chains),
 * so the used descriptor of chain k lands exactly at chain k's first position, and the
 * used position advances by the chain's descriptor count. Chains completed one at a time
 * (pushUsed) form a batch: its first used descriptor (the head) is only noted, every later
 * one is written whole at once (id and flags in one 32-bit store), and flushUsed() writes
 * the head last, its length and then its id and flags with Atomics.store (seq_cst: a
 * release), as DPDK does for its shadow used batch. A driver reads used descriptors in
 * order, so it cannot see any entry of a batch before the head's flags. A run of buffers
 * (completeRun) is a batch the same way, so the driver finds the run whole, as it finds a
 * split ring's burst behind one used index, instead of taking its first frames while the
 * device still writes the rest: back-end -> guest with one worker serving 4 pairs that took
 * 1.03-1.20x, median 1.08x (one pair 0.91-1.13x, median 1.03x) against writing each
 * descriptor visible at once, as DPDK's batch enqueue does. Keeping no staging list
 * means no store per chain outside the ring (the stores are what costs, buffer-run.ts).
 *
 * Memory ordering on the avail side: the head descriptor's id|flags word is read with an
 * acquire load (ordering.ts: a plain load on x86-64, Atomics.load elsewhere); the driver
 * writes the head's flags last (after the rest of the chain, with a release), so
 * everything read after it is at least as new.
 */
import { ACCESS_READ, ACCESS_WRITE } from '../memory/address-space.js';
import type { ScatterList } from './scatter.js';
import type { BufferRun } from './buffer-run.js';
import { ChainWalker, EMPTY16, EMPTY32, WALK_OK, RING_OK, SINGLE_NO, writableSpan, type RingAreas } from './chain.js';
import type { VirtQueue, VirtQueueConfig } from './queue.js';
import { PLAIN_LOAD_IS_ACQUIRE } from './ordering.js';
import { MAX_QUEUE_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from './split.js';

export { WALK_OK, WALK_MISS, WALK_BROKEN, RING_OK, RING_MISS, RING_FAULT } from './chain.js';

export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
export const VRING_PACKED_DESC_F_USED = 1 << 15;
/** Event suppression flags (driver and device areas). */
export const VRING_PACKED_EVENT_FLAG_ENABLE = 0;
export const VRING_PACKED_EVENT_FLAG_DISABLE = 1;
/** Only with VIRTIO_F_EVENT_IDX: notify when the position in off_wrap is reached. */
export const VRING_PACKED_EVENT_FLAG_DESC = 2;
/** Bit 15 of an off_wrap or a vhost-user ring base: the wrap counter. */
export const PACKED_WRAP_BIT = 15;
export const PACKED_DESC_SIZE = 16;
export const PACKED_EVENT_SIZE = 4;

// Flag bits as they sit in the upper half of descriptor word 3 (id | flags << 16).
const W_NEXT = VRING_DESC_F_NEXT << 16;
const W_INDIRECT = VRING_DESC_F_INDIRECT << 16;
const W_AVAIL = VRING_PACKED_DESC_F_AVAIL << 16;
const W_USED = (VRING_PACKED_DESC_F_USED << 16) | 0; // bit 31: compare as int32

/**
 * availAddr / usedAddr are the driver / device event suppression areas (vhost-user's
 * avail / used addresses). lastAvailIdx is the vhost-user ring base: bits 0-14 next avail
 * position, bit 15 avail wrap counter, bits 16-30 next used position, bit 31 used wrap
 * counter. Upper half 0 (DPDK virtio-user sends 0x8000 for a fresh ring) means "used = avail".
 */
export type PackedQueueConfig = VirtQueueConfig;

/** null if `size` is a valid packed queue size (any size in 1..32768), else why not. */
export function checkPackedQueueSize(size: number): string | null {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE) return `queue size ${size} is not in 1..${MAX_QUEUE_SIZE}`;
  return null;
}

/** A used descriptor's flags: AVAIL and USED both equal to the used wrap counter, WRITE when it wrote bytes. */
function usedFlags(wrap: number, len: number): number {
  return (wrap !== 0 ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0) | (len !== 0 ? VRING_DESC_F_WRITE : 0);
}

/** Packs a position and wrap counter the way off_wrap and ring bases do. */
export function offWrap(pos: number, wrap: number): number {
  return (pos | (wrap << PACKED_WRAP_BIT)) & 0xffff;
}

/** vring_need_event(): should crossing from old to new (u16 arithmetic) notify for event? */
function needEvent(event: number, nw: number, old: number): boolean {
  return ((nw - event - 1) & 0xffff) < ((nw - old) & 0xffff);
}

/**
 * desc 16 * size (align 16; read-write: used descriptors are written back), driver and
 * device event areas 4 bytes each (align 4).
 */
const PACKED_AREAS: RingAreas = {
  desc: { name: 'desc', label: 'desc ring', fixed: 0, perEntry: PACKED_DESC_SIZE, align: 16, hostAlign: 4, access: ACCESS_READ | ACCESS_WRITE },
  avail: { name: 'driver event', label: 'driver event area', fixed: PACKED_EVENT_SIZE, perEntry: 0, align: 4, hostAlign: 2, access: ACCESS_READ },
  used: { name: 'device event', label: 'device event area', fixed: PACKED_EVENT_SIZE, perEntry: 0, align: 4, hostAlign: 2, access: ACCESS_READ | ACCESS_WRITE },
};

export class PackedQueue extends ChainWalker implements VirtQueue {
  readonly layout = 'packed';
  /** Packed rings resume from the base they are given (no used index to check it against). */
  resumedAt = null;
  // Avail side.
  private availPos = 0;
  private availWrap = 1;
  /** Chains consumed (free-running); chain seq numbers index chainPos/chainCnt. */
  private headSeq = 0;
  private scanSeq = 0;
  private scanPos = 0;
  private scanWrap = 1;
  /** Ring descriptors between availPos and the scan frontier. */
  private scanDescs = 0;
  private chainPos: Uint16Array = EMPTY16;
  private chainCnt: Uint16Array = EMPTY16;
  private cmask = 0;

  // Used side: published position and the staging position after pending pushUsed()s.
  private usedPos = 0;
  private usedWrap = 1;
  private shadowPos = 0;
  private shadowWrap = 1;
  private usedSeq = 0;
  /** Used descriptors written since the last flush behind a batch head (not yet visible). */
  private pending = 0;
  /**
   * The batch head (while pending > 0): kept here and written whole by flushUsed(), after
   * every later one, which is written whole at once: the driver reads used descriptors in
   * order and cannot pass the head. The driver polls the head's line meanwhile, so writing
   * its id and length early would take that line from the driver's core once more per burst.
   */
  private headPos = 0;
  private headId = 0;
  private headLen = 0;
  private headFlags = 0;

  // Interrupt decision (EVENT_IDX): used position at the last decision.
  private signalledPos = 0;
  private signalledValid = false;
  private publishedSince = 0;

  // Ring views.
  private desc32: Uint32Array = EMPTY32;
  private driver16: Uint16Array = EMPTY16;
  private device16: Uint16Array = EMPTY16;

  constructor() {
    super(PACKED_AREAS);
  }

  /** Sets up the queue and maps its rings. Never throws; returns RING_OK, RING_MISS or RING_FAULT. */
  configure(cfg: PackedQueueConfig): number {
    const st = this.configureCommon(cfg, checkPackedQueueSize(cfg.size));
    if (st !== RING_OK) return st;
    const size = cfg.size;
    const base = cfg.lastAvailIdx >>> 0;
    const avail = base & 0xffff;
    const used = (base >>> 16) === 0 ? avail : base >>> 16;
    if ((avail & 0x7fff) >= size) return this.ringFault(`ring base: avail index ${avail & 0x7fff} is not below queue size ${size}`);
    if ((used & 0x7fff) >= size) return this.ringFault(`ring base: used index ${used & 0x7fff} is not below queue size ${size}`);
    let cap = 1;
    while (cap < size) cap <<= 1;
    if (this.chainPos.length !== cap) {
      this.chainPos = new Uint16Array(cap);
      this.chainCnt = new Uint16Array(cap);
    }
    this.cmask = cap - 1;
    this.availPos = avail & 0x7fff;
    this.availWrap = avail >>> PACKED_WRAP_BIT;
    this.headSeq = 0;
    this.scanSeq = 0;
    this.scanPos = this.availPos;
    this.scanWrap = this.availWrap;
    this.scanDescs = 0;
    this.usedPos = used & 0x7fff;
    this.usedWrap = used >>> PACKED_WRAP_BIT;
    this.shadowPos = this.usedPos;
    this.shadowWrap = this.usedWrap;
    this.usedSeq = 0;
    this.pending = 0;
    this.signalledValid = false;
    this.publishedSince = 0;
    this.syncIndices();
    return this.mapRings();
  }

  private syncIndices(): void {
    this.lastAvailIdx = offWrap(this.availPos, this.availWrap);
    this.availIdx = offWrap(this.scanPos, this.scanWrap);
    this.usedIdx = offWrap(this.usedPos, this.usedWrap);
  }

  protected setViews(dBuf: ArrayBufferLike, dOff: number, aBuf: ArrayBufferLike, aOff: number, uBuf: ArrayBufferLike, uOff: number): void {
    this.desc32 = new Uint32Array(dBuf, dOff, 4 * this.size);
    this.driver16 = new Uint16Array(aBuf, aOff, 2);
    this.device16 = new Uint16Array(uBuf, uOff, 2);
  }

  protected dropViews(): void {
    this.desc32 = EMPTY32;
    this.driver16 = EMPTY16;
    this.device16 = EMPTY16;
  }

  /**
   * Scans for newly available chains from the frontier (acquire load of each head's
   * flags) and returns how many chains are available beyond the consumed ones. 0 when not
   * ready or broken. A chain running past `size` descriptors breaks the queue.
   */
  availableCount(): number {
    if (!this.ready) return 0;
    const size = this.size;
    const d = this.desc32;
    let pos = this.scanPos;
    let wrap = this.scanWrap;
    let descs = this.scanDescs;
    let seq = this.scanSeq;
    const availBit = wrap !== 0 ? W_AVAIL : 0;
    const usedBit = wrap !== 0 ? W_USED : 0;
    let aBit = availBit;
    let uBit = usedBit;
    while (descs < size) {
      const w = PLAIN_LOAD_IS_ACQUIRE ? d[(pos << 2) + 3] : Atomics.load(d, (pos << 2) + 3);
      if ((w & W_AVAIL) !== aBit || (w & W_USED) === uBit) break;
      const start = pos;
      let c = 1;
      let f = w;
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
        aBit ^= W_AVAIL;
        uBit ^= W_USED;
      }
      while ((f & W_NEXT) !== 0) {
        if (descs + c >= size) {
          this.failChainLen(start, c, descs);
          return 0;
        }
        f = d[(pos << 2) + 3];
        c++;
        if (++pos === size) {
          pos = 0;
          wrap ^= 1;
          aBit ^= W_AVAIL;
          uBit ^= W_USED;
        }
      }
      const slot = seq & this.cmask;
      this.chainPos[slot] = start;
      this.chainCnt[slot] = c;
      seq = (seq + 1) >>> 0;
      descs += c;
    }
    if (seq !== this.scanSeq) {
      this.scanPos = pos;
      this.scanWrap = wrap;
      this.scanDescs = descs;
      this.scanSeq = seq;
      this.availIdx = offWrap(pos, wrap);
    }
    return (seq - this.headSeq) >>> 0;
  }

  /** Chains found by the last availableCount() and not consumed yet. */
  knownAvailable(): number {
    return (this.scanSeq - this.headSeq) >>> 0;
  }

  /** What GET_VRING_BASE reports: avail position|wrap<<15, used position|wrap<<31 (vhost-user.rst). */
  vringBase(): number {
    return (offWrap(this.availPos, this.availWrap) | (offWrap(this.usedPos, this.usedWrap) << 16)) >>> 0;
  }

  /**
   * Walks the chain `ahead` chains past the next one to consume (ahead < availableCount())
   * and appends its host pieces to sg from sg.count. chainHead is its buffer id. Consumes
   * nothing. On WALK_MISS / WALK_BROKEN sg.count is left as it was.
   */
  walkChain(ahead: number, sg: ScatterList): number {
    const start = sg.count;
    this.chainFirst = start;
    if (ahead >= ((this.scanSeq - this.headSeq) >>> 0)) return this.failAhead(ahead);
    const slot = (this.headSeq + ahead) & this.cmask;
    let pos = this.chainPos[slot];
    const cnt = this.chainCnt[slot];
    const size = this.size;
    const d = this.desc32;
    this.beginWalk(start);
    let st = WALK_OK;
    let descs = 0;
    let w3 = 0;
    for (let i = 1; i <= cnt; i++) {
      const w = pos << 2;
      const lo = d[w];
      const hi = d[w + 1];
      const len = d[w + 2];
      w3 = d[w + 3];
      if (((w3 & W_NEXT) !== 0) !== (i < cnt)) {
        st = this.failChanged(pos);
        break;
      }
      if ((w3 & W_INDIRECT) !== 0) {
        // An indirect descriptor ends its chain (spec: INDIRECT and NEXT never both).
        if (i < cnt) {
          st = this.failIndNext(pos);
          break;
        }
        st = this.walkIndirect(pos, lo, hi, len, sg);
        descs += this.chainDescs;
        break;
      }
      descs++;
      if (len !== 0) {
        st = this.addDesc(lo, hi, len, (w3 >>> 16) & VRING_DESC_F_WRITE, sg, pos, -1);
        if (st !== WALK_OK) break;
      }
      if (++pos === size) pos = 0;
    }
    this.chainHead = w3 & 0xffff;
    return this.endWalk(st, sg, start, descs);
  }

  /** As SplitQueue.mapSingle(): one direct descriptor of the given access and size, mapped (ChainWalker.mapDirect), without a scatter list. */
  mapSingle(ahead: number, access: number, minLen: number): number {
    if (ahead >= ((this.scanSeq - this.headSeq) >>> 0)) return SINGLE_NO;
    const slot = (this.headSeq + ahead) & this.cmask;
    if (this.chainCnt[slot] !== 1) return SINGLE_NO;
    const pos = this.chainPos[slot];
    const w = pos << 2;
    const d = this.desc32;
    const w3 = d[w + 3];
    const write = (w3 >>> 16) & VRING_DESC_F_WRITE;
    if ((w3 & (W_NEXT | W_INDIRECT)) !== 0 || (write !== 0) !== (access === ACCESS_WRITE)) return SINGLE_NO;
    this.chainHead = w3 & 0xffff;
    return this.mapDirect(pos, d[w], d[w + 1], d[w + 2], write, minLen);
  }

  /** A packed indirect table: its len/16 descriptors in order, only WRITE significant. */
  private walkIndirect(idx: number, lo: number, hi: number, len: number, sg: ScatterList): number {
    const mt = this.mapTable(idx, lo, hi, len);
    if (mt !== WALK_OK) return mt;
    const tw = this.tblWords;
    const tb = this.tblBase;
    const nr = len >>> 4;
    for (let j = 0; j < nr; j++) {
      const w = tb + (j << 2);
      const dlen = tw[w + 2] >>> 0;
      if (dlen !== 0) {
        const st = this.addDesc(tw[w] >>> 0, tw[w + 1] >>> 0, dlen, (tw[w + 3] >>> 16) & VRING_DESC_F_WRITE, sg, j, idx);
        if (st !== WALK_OK) {
          this.chainDescs = j + 1;
          return st;
        }
      }
    }
    this.chainDescs = nr;
    return WALK_OK;
  }

  private failAhead(ahead: number): number {
    return this.fail(`walk of chain ${ahead} ahead, but only ${(this.scanSeq - this.headSeq) >>> 0} are available`);
  }
  private failChainLen(start: number, c: number, before: number): number {
    return this.fail(`descriptor chain at desc[${start}] has NEXT set on ${c} descriptors, more than the ${this.size - before} the ring has left (loop)`);
  }
  private failIndNext(pos: number): number {
    return this.fail(`desc[${pos}] has both INDIRECT and NEXT set`);
  }
  private failChanged(pos: number): number {
    return this.fail(`desc[${pos}].flags NEXT changed while the descriptor was available (driver rewrote an available chain)`);
  }

  /** Marks n chains as taken. */
  consume(n: number): void {
    const size = this.size;
    let pos = this.availPos;
    let wrap = this.availWrap;
    let descs = 0;
    for (let k = 0; k < n; k++) {
      const c = this.chainCnt[(this.headSeq + k) & this.cmask];
      descs += c;
      pos += c;
      if (pos >= size) {
        pos -= size;
        wrap ^= 1;
      }
    }
    this.availPos = pos;
    this.availWrap = wrap;
    this.scanDescs -= descs;
    this.headSeq = (this.headSeq + n) >>> 0;
    this.lastAvailIdx = offWrap(pos, wrap);
  }

  /**
   * Reads the ring straight from the avail position (each descriptor's flags with an
   * acquire load, as availableCount() does), so nothing is recorded per chain: chains the
   * scan already recorded are read again, and the run may go past the scan's frontier.
   * completeRun() consumes the recorded ones the usual way and moves the avail and scan
   * positions together over the rest.
   */
  reserveRun(max: number, access: number, minLen: number, run: BufferRun): number {
    if (!this.runStart()) return 0;
    const size = this.size;
    let n = max < run.capacity ? max : run.capacity;
    if (n > size) n = size;
    const d = this.desc32;
    const space = this.dataSpace!;
    const want = access === ACCESS_WRITE ? VRING_DESC_F_WRITE : 0;
    const ids = run.ids;
    const offsets = run.offsets;
    let winBase = 0;
    let winStart = 0;
    let winEnd = 0;
    let pos = this.availPos;
    let aBit = this.availWrap !== 0 ? W_AVAIL : 0;
    let uBit = this.availWrap !== 0 ? W_USED : 0;
    let k = 0;
    for (; k < n; k++) {
      const w = pos << 2;
      const w3 = PLAIN_LOAD_IS_ACQUIRE ? d[w + 3] : Atomics.load(d, w + 3);
      if ((w3 & W_AVAIL) !== aBit || (w3 & W_USED) === uBit) break;
      if ((w3 & (W_NEXT | W_INDIRECT)) !== 0 || ((w3 >>> 16) & VRING_DESC_F_WRITE) !== want) break;
      const len = d[w + 2];
      const hi = d[w + 1];
      if (len < minLen || len === 0 || hi >= 0x200000) break;
      const addr = hi * 4294967296 + d[w];
      const span = want !== 0 ? writableSpan(space, len, minLen) : len;
      if (addr < winStart || addr + span > winEnd) {
        if (!this.runWindow(addr, span, access, run, k)) break;
        winBase = run.winBase;
        winStart = run.winStart;
        winEnd = run.winEnd;
      }
      ids[k] = w3 & 0xffff;
      offsets[k] = addr - winBase;
      if (++pos === size) {
        pos = 0;
        aBit ^= W_AVAIL;
        uBit ^= W_USED;
      }
    }
    return k;
  }

  /**
   * pushUsed() for each chain of the run, then consumes them, with the positions in locals.
   * Every chain of a run is one descriptor, so each used position is the next one.
   */
  completeRun(run: BufferRun, k: number): void {
    this.runTranslated(k);
    if (k === 0) return;
    const d32 = this.desc32;
    const size = this.size;
    const ids = run.ids;
    const used = run.used;
    let p = this.shadowPos;
    let wrap = this.shadowWrap;
    let j = 0;
    if (this.pending === 0) {
      // The run starts a batch: its first descriptor is the head, written by flushUsed().
      this.stageHead(p, wrap, ids[0], used[0]);
      j = 1;
      if (++p === size) {
        p = 0;
        wrap ^= 1;
      }
    }
    // Behind the head nothing shows until flushUsed(): plain stores.
    for (; j < k; j++) {
      const len = used[j];
      const w = p << 2;
      d32[w + 2] = len;
      d32[w + 3] = ids[j] | (usedFlags(wrap, len) << 16);
      if (++p === size) {
        p = 0;
        wrap ^= 1;
      }
    }
    this.pending += k;
    this.shadowPos = p;
    this.shadowWrap = wrap;
    this.usedSeq = (this.usedSeq + k) >>> 0;
    const recorded = (this.scanSeq - this.headSeq) >>> 0;
    if (k <= recorded) {
      this.consume(k);
      return;
    }
    if (recorded !== 0) this.consume(recorded);
    // The rest lay past the scan's frontier (nothing recorded): avail and scan move together.
    const rest = k - recorded;
    let pos = this.availPos + rest;
    let awrap = this.availWrap;
    if (pos >= size) {
      pos -= size;
      awrap ^= 1;
    }
    this.availPos = pos;
    this.availWrap = awrap;
    this.scanPos = pos;
    this.scanWrap = awrap;
    this.headSeq = (this.headSeq + rest) >>> 0;
    this.scanSeq = this.headSeq;
    this.lastAvailIdx = offWrap(pos, awrap);
    this.availIdx = this.lastAvailIdx;
  }

  /**
   * Writes the used descriptor of the next chain in consumption order (in-order
   * completion): whole, or without its flags when it heads a new batch (flushUsed()).
   */
  pushUsed(id: number, len: number): void {
    const p = this.shadowPos;
    const wrap = this.shadowWrap;
    if (this.pending === 0) {
      this.stageHead(p, wrap, id, len);
    } else {
      const w = p << 2;
      this.desc32[w + 2] = len;
      this.desc32[w + 3] = id | (usedFlags(wrap, len) << 16);
    }
    this.pending++;
    let np = p + this.chainCnt[this.usedSeq & this.cmask];
    this.usedSeq = (this.usedSeq + 1) >>> 0;
    if (np >= this.size) {
      np -= this.size;
      this.shadowWrap = wrap ^ 1;
    }
    this.shadowPos = np;
  }

  private stageHead(p: number, wrap: number, id: number, len: number): void {
    this.headPos = p;
    this.headId = id;
    this.headLen = len;
    this.headFlags = usedFlags(wrap, len);
  }

  /**
   * Publishes the used descriptors written since the last flush: the batch's head last, its
   * id and flags in one seq_cst store after its length.
   */
  flushUsed(): number {
    const n = this.pending;
    if (n === 0) return 0;
    // Not after unmapRings() (the views are empty then and the entries are lost with the mapping).
    if (this.desc32.length !== 0) {
      const w = this.headPos << 2;
      this.desc32[w + 2] = this.headLen;
      // seq_cst: a release for the batch, and the fence before the interrupt decision (ordering.ts).
      Atomics.store(this.desc32, w + 3, (this.headId | (this.headFlags << 16)) >>> 0);
      if (this.log !== null) this.logRingWrites();
    }
    this.pending = 0;
    this.usedPos = this.shadowPos;
    this.usedWrap = this.shadowWrap;
    this.usedIdx = offWrap(this.usedPos, this.usedWrap);
    this.publishedSince += n;
    return n;
  }

  /**
   * After flushUsed(): must the driver be interrupted? Driver event flags DISABLE: no;
   * ENABLE: yes; DESC (EVENT_IDX): when the used position crossed off_wrap since the
   * last decision. False when nothing was published since the last call.
   */
  needsInterrupt(): boolean {
    if (this.driver16.length === 0 || this.publishedSince === 0) return false;
    const since = this.publishedSince;
    this.publishedSince = 0;
    const nw = this.usedPos;
    let old = this.signalledPos;
    const valid = this.signalledValid;
    this.signalledPos = nw;
    this.signalledValid = true;
    const flags = Atomics.load(this.driver16, 1);
    if (!this.eventIdx || flags !== VRING_PACKED_EVENT_FLAG_DESC) return flags !== VRING_PACKED_EVENT_FLAG_DISABLE;
    if (!valid || since >= this.size) return true;
    const ow = Atomics.load(this.driver16, 0);
    let off = ow & 0x7fff;
    if (nw <= old) old -= this.size;
    if ((ow >>> PACKED_WRAP_BIT) !== this.usedWrap) off -= this.size;
    return needEvent(off, nw, old);
  }

  /** Ask the driver not to kick (polling). */
  disableNotifications(): void {
    if (!this.ready) return;
    Atomics.store(this.device16, 1, VRING_PACKED_EVENT_FLAG_DISABLE);
    if (this.log !== null) this.logRingWrites();
  }

  /**
   * Ask the driver to kick for new buffers (before sleeping): ENABLE, or with EVENT_IDX
   * DESC at the scan frontier; then rescan to close the race with a driver that added
   * buffers meanwhile. Returns how many chains are available (non-zero: do not sleep).
   */
  enableNotifications(): number {
    if (!this.ready) return 0;
    this.availableCount();
    if (this.eventIdx) {
      this.device16[0] = offWrap(this.scanPos, this.scanWrap);
      Atomics.store(this.device16, 1, VRING_PACKED_EVENT_FLAG_DESC);
    } else {
      Atomics.store(this.device16, 1, VRING_PACKED_EVENT_FLAG_ENABLE);
    }
    if (this.log !== null) this.logRingWrites();
    return this.availableCount();
  }

  /** For inspect: the driver's event suppression word (off_wrap | flags << 16). */
  readUsedEvent(): number {
    return this.ready ? this.driver16[0] | (this.driver16[1] << 16) : 0;
  }
}

/**
 * The device side of a virtio 1.2 split virtqueue (spec 2.7), over guest memory reached
 * through an AddressSpace. Used inside data-path workers: nothing on the per-descriptor
 * path allocates, throws, or takes a closure.
 *
 * Layout (little-endian; the host is checked to be little-endian at load):
 *   desc   16 * size     { u64 addr; u32 len; u16 flags; u16 next }          align 16
 *   avail  6 + 2 * size  { u16 flags; u16 idx; u16 ring[size]; u16 used_event } align 2
 *   used   6 + 8 * size  { u16 flags; u16 idx; {u32 id; u32 len} ring[size]; u16 avail_event } align 4
 *
 * Each ring area must map contiguously into one region's bytes; configure() then keeps
 * exactly-sized typed-array views over them, so ring accesses are plain indexed loads
 * that can never leave the ring. Descriptor *buffers* are translated per access and may
 * be split into several pieces (region or IOTLB-entry boundaries).
 *
 * Memory ordering (the driver runs concurrently on another CPU):
 *  - avail->idx is read with Atomics.load. That is an acquire load (x86: plain mov, which
 *    TSO never reorders with later loads; arm64: ldar) and a compiler barrier in V8, so
 *    ring entries and descriptors read afterwards are at least as new as the index.
 *  - used ring entries are written with plain stores, then used->idx with one
 *    Atomics.store per burst. A seq_cst store is a release (x86: xchg; arm64: stlr), so
 *    the guest never sees the new index before the entries. On x86 plain stores are
 *    already ordered (TSO), so the only thing the atomic buys for ordering the entries is
 *    that V8 cannot sink or reorder them past it — which is why no extra fence is needed.
 *  - Deciding whether to interrupt reads used_event / avail->flags AFTER publishing
 *    used->idx: a store->load order that x86 TSO does NOT give for free (DPDK issues a
 *    seq_cst fence in vhost_vring_call_split). Atomics.store is seq_cst (xchg is a full
 *    barrier on x86; stlr+ldar are ordered on arm64), and the load is an Atomics.load, so
 *    the pair is ordered. The same holds for enableNotifications(): avail_event / flags
 *    store, then the re-read of avail->idx.
 * Atomics work on integer arrays over plain ArrayBuffers (tests) and SharedArrayBuffers alike.
 */
import { ACCESS_READ, ACCESS_WRITE } from '../memory/address-space.js';
import type { ScatterList } from './scatter.js';
import type { BufferRun } from './buffer-run.js';
import { ChainWalker, EMPTY16, EMPTY32, WALK_OK, RING_OK, SINGLE_NO, writableSpan, type RingAreas } from './chain.js';
import type { VirtQueue, VirtQueueConfig } from './queue.js';

export { WALK_OK, WALK_MISS, WALK_BROKEN, RING_OK, RING_MISS, RING_FAULT, SINGLE_NO, SINGLE_REST } from './chain.js';

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('vhost-iotlb data path requires a little-endian host');
}

export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const VRING_USED_F_NO_NOTIFY = 1;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const MAX_QUEUE_SIZE = 32768;
export const DESC_SIZE = 16;

export interface SplitQueueConfig extends VirtQueueConfig {
  /** Defaults to lastAvailIdx (what SET_VRING_BASE means for a split ring). */
  lastUsedIdx?: number;
}

/** desc 16 * size (align 16), avail 6 + 2 * size (align 2), used 6 + 8 * size (align 4). */
const SPLIT_AREAS: RingAreas = {
  desc: { name: 'desc', label: 'desc ring', fixed: 0, perEntry: DESC_SIZE, align: 16, hostAlign: 4, access: ACCESS_READ },
  avail: { name: 'avail', label: 'avail ring', fixed: 6, perEntry: 2, align: 2, hostAlign: 2, access: ACCESS_READ },
  used: { name: 'used', label: 'used ring', fixed: 6, perEntry: 8, align: 4, hostAlign: 4, access: ACCESS_READ | ACCESS_WRITE },
};

/** null if `size` is a valid split queue size, else why not. */
export function checkQueueSize(size: number): string | null {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
    return `queue size ${size} is not a power of 2 in 1..${MAX_QUEUE_SIZE}`;
  }
  return null;
}

export class SplitQueue extends ChainWalker implements VirtQueue {
  readonly layout = 'split';
  // lastAvailIdx (next avail ring position to consume), availIdx (avail->idx as last read
  // by availableCount()) and usedIdx (used->idx as last published) are free-running u16s.
  mask = 0;
  /** used->idx including entries staged by pushUsed() but not yet flushed. */
  usedShadow = 0;

  // Ring views, each exactly the ring's size.
  private desc32: Uint32Array = EMPTY32;
  private avail16: Uint16Array = EMPTY16;
  private used16: Uint16Array = EMPTY16;
  private used32: Uint32Array = EMPTY32;
  private usedEventIdx = 0;
  private availEventIdx = 0;
  private usedFlags = 0;
  private signalledUsed = 0;
  private signalledValid = false;

  constructor() {
    super(SPLIT_AREAS);
  }

  /** Sets up the queue and maps its rings. Never throws; returns RING_OK, RING_MISS or RING_FAULT. */
  configure(cfg: SplitQueueConfig): number {
    const st = this.configureCommon(cfg, checkQueueSize(cfg.size));
    if (st !== RING_OK) return st;
    this.mask = cfg.size - 1;
    this.lastAvailIdx = cfg.lastAvailIdx & 0xffff;
    this.availIdx = this.lastAvailIdx;
    this.usedIdx = (cfg.lastUsedIdx ?? cfg.lastAvailIdx) & 0xffff;
    this.usedShadow = this.usedIdx;
    this.signalledValid = false;
    this.usedFlags = 0;
    this.resumeChecked = false;
    return this.mapRings();
  }

  /**
   * Set when the ring's first mapping after configure() found used->idx in guest memory
   * other than the base it was given (SET_VRING_BASE): the indices it resumed from instead,
   * for the caller to report. Null otherwise.
   */
  resumedAt: { given: number; used: number } | null = null;
  private resumeChecked = false;

  /**
   * A ring resumes where the guest's used index says, as DPDK's vhost does: the base the
   * front-end gives (the last avail index the previous back-end reported, e.g. across a
   * migration) assumes every chain taken before it was returned. If used->idx disagrees,
   * chains between them are taken again (RX buffers refilled, TX frames sent twice) rather
   * than used entries written where the guest does not expect them.
   */
  private checkResume(): void {
    this.resumeChecked = true;
    const used = Atomics.load(this.used16, 1);
    if (used === this.lastAvailIdx) return;
    this.resumedAt = { given: this.lastAvailIdx, used };
    this.lastAvailIdx = this.availIdx = this.usedIdx = this.usedShadow = used;
  }

  protected setViews(dBuf: ArrayBufferLike, dOff: number, aBuf: ArrayBufferLike, aOff: number, uBuf: ArrayBufferLike, uOff: number): void {
    const size = this.size;
    this.desc32 = new Uint32Array(dBuf, dOff, 4 * size);
    this.avail16 = new Uint16Array(aBuf, aOff, 3 + size);
    this.used16 = new Uint16Array(uBuf, uOff, 3 + 4 * size);
    this.used32 = new Uint32Array(uBuf, uOff + 4, 2 * size);
    this.usedEventIdx = 2 + size;
    this.availEventIdx = 2 + 4 * size;
    if (!this.resumeChecked) this.checkResume();
  }

  protected dropViews(): void {
    this.desc32 = EMPTY32;
    this.avail16 = EMPTY16;
    this.used16 = EMPTY16;
    this.used32 = EMPTY32;
  }

  /**
   * Reads avail->idx (acquire) and returns how many chains are available beyond
   * lastAvailIdx. 0 when not ready or broken. A driver claiming more than `size`
   * breaks the queue.
   */
  availableCount(): number {
    if (!this.ready) return 0;
    const a = Atomics.load(this.avail16, 1);
    const n = (a - this.lastAvailIdx) & 0xffff;
    if (n > this.size) {
      this.fail(`avail.idx=${a} is ${n} entries past last_avail_idx=${this.lastAvailIdx}, more than queue size ${this.size}`);
      return 0;
    }
    this.availIdx = a;
    return n;
  }

  /** Chains known to be available (as of the last availableCount()) beyond lastAvailIdx, without reading the ring. */
  knownAvailable(): number {
    return (this.availIdx - this.lastAvailIdx) & 0xffff;
  }

  /** What GET_VRING_BASE reports: the next avail index to process. */
  vringBase(): number {
    return this.lastAvailIdx;
  }

  /**
   * Walks the chain whose head is at avail ring position lastAvailIdx + ahead (the caller
   * has checked ahead < availableCount()) and appends its host pieces to sg, starting at
   * sg.count. Readable and writable descriptors are mapped for read and write access
   * respectively. Consumes nothing: call consume() once the chain is used.
   * On WALK_MISS / WALK_BROKEN sg.count is left as it was.
   */
  walkChain(ahead: number, sg: ScatterList): number {
    const size = this.size;
    const pos = (this.lastAvailIdx + ahead) & this.mask;
    const head = this.avail16[2 + pos];
    const start = sg.count;
    this.chainFirst = start;
    this.chainHead = head;
    if (head >= size) return this.failHead(pos, head);
    this.beginWalk(start);
    const d = this.desc32;
    let idx = head;
    let count = 0;
    let st = WALK_OK;
    for (;;) {
      if (++count > size) {
        st = this.failLoop(head);
        break;
      }
      const w = idx << 2;
      const lo = d[w];
      const hi = d[w + 1];
      const len = d[w + 2];
      const fn = d[w + 3];
      if ((fn & VRING_DESC_F_INDIRECT) !== 0) {
        st = this.walkIndirect(idx, lo, hi, len, sg);
        count += this.chainDescs;
        break;
      }
      if (len !== 0) {
        st = this.addDesc(lo, hi, len, fn & VRING_DESC_F_WRITE, sg, idx, -1);
        if (st !== WALK_OK) break;
      }
      if ((fn & VRING_DESC_F_NEXT) === 0) break;
      const next = fn >>> 16;
      if (next >= size) {
        st = this.failNext(idx, next);
        break;
      }
      idx = next;
    }
    return this.endWalk(st, sg, start, count);
  }

  /**
   * The common chain without a scatter list: if the chain at lastAvailIdx + ahead is one
   * direct descriptor (no NEXT, no INDIRECT) with the given access and at least minLen
   * bytes, maps it (whole, or its first minLen bytes if writable through an IOTLB: writableSpan)
   * and returns the length mapped: chainHead is set and the buffer is at
   * dataSpace.bytes / wide / offset. SINGLE_NO: anything else, nothing mapped (walkChain
   * handles and reports it). SINGLE_REST: the buffer mapped only in part, missed or
   * faulted: walkSingle() finishes as walkChain would. Consumes nothing.
   */
  mapSingle(ahead: number, access: number, minLen: number): number {
    const head = this.avail16[2 + ((this.lastAvailIdx + ahead) & this.mask)];
    if (head >= this.size) return SINGLE_NO;
    const w = head << 2;
    const d = this.desc32;
    const fn = d[w + 3];
    const write = fn & VRING_DESC_F_WRITE;
    if ((fn & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) !== 0 || (write !== 0) !== (access === ACCESS_WRITE)) return SINGLE_NO;
    this.chainHead = head;
    return this.mapDirect(head, d[w], d[w + 1], d[w + 2], write, minLen);
  }

  // Cold paths: message building kept out of the hot functions so they stay small.
  private failHead(pos: number, head: number): number {
    return this.fail(`avail.ring[${pos}]=${head} is not below queue size ${this.size}`);
  }
  private failLoop(head: number): number {
    return this.fail(`descriptor chain from head ${head} has more than queue size ${this.size} descriptors (loop)`);
  }
  private failNext(idx: number, next: number): number {
    return this.fail(`desc[${idx}].next=${next} is not below queue size ${this.size}`);
  }

  /** A split indirect table: a chain linked by NEXT / next from entry 0. */
  private walkIndirect(idx: number, lo: number, hi: number, len: number, sg: ScatterList): number {
    const mt = this.mapTable(idx, lo, hi, len);
    if (mt !== WALK_OK) return mt;
    const tw = this.tblWords;
    const tb = this.tblBase;
    const nr = len >>> 4;
    let j = 0;
    let count = 0;
    for (;;) {
      if (++count > nr) {
        this.chainDescs = count;
        return this.failIndLoop(idx, nr);
      }
      const w = tb + (j << 2);
      const dlen = tw[w + 2] >>> 0;
      const fn = tw[w + 3];
      if ((fn & VRING_DESC_F_INDIRECT) !== 0) {
        this.chainDescs = count;
        return this.failNested(j, idx);
      }
      if (dlen !== 0) {
        const st = this.addDesc(tw[w] >>> 0, tw[w + 1] >>> 0, dlen, fn & VRING_DESC_F_WRITE, sg, j, idx);
        if (st !== WALK_OK) {
          this.chainDescs = count;
          return st;
        }
      }
      if ((fn & VRING_DESC_F_NEXT) === 0) break;
      const next = fn >>> 16;
      if (next >= nr) {
        this.chainDescs = count;
        return this.failIndNext(j, next, idx, nr);
      }
      j = next;
    }
    this.chainDescs = count;
    return WALK_OK;
  }

  private failIndLoop(idx: number, nr: number): number {
    return this.fail(`INDIRECT table of desc[${idx}] has a loop (more than ${nr} descriptors)`);
  }
  private failNested(j: number, idx: number): number {
    return this.fail(`indirect desc[${j}] of desc[${idx}] is INDIRECT too (nested indirect)`);
  }
  private failIndNext(j: number, next: number, idx: number, nr: number): number {
    return this.fail(`indirect desc[${j}].next=${next} of desc[${idx}] is not below table length ${nr}`);
  }

  /** Marks n chains as taken (lastAvailIdx += n). */
  consume(n: number): void {
    this.lastAvailIdx = (this.lastAvailIdx + n) & 0xffff;
  }

  reserveRun(max: number, access: number, minLen: number, run: BufferRun): number {
    const n = this.runLimit(max, run);
    const a = this.avail16;
    const d = this.desc32;
    const space = this.dataSpace!;
    const mask = this.mask;
    const size = this.size;
    const want = access === ACCESS_WRITE ? VRING_DESC_F_WRITE : 0;
    const ids = run.ids;
    const offsets = run.offsets;
    let winBase = 0;
    let winStart = 0;
    let winEnd = 0;
    let pos = this.lastAvailIdx;
    let k = 0;
    for (; k < n; k++, pos++) {
      const head = a[2 + (pos & mask)];
      if (head >= size) break;
      const w = head << 2;
      if ((d[w + 3] & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT | VRING_DESC_F_WRITE)) !== want) break;
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
      ids[k] = head;
      offsets[k] = addr - winBase;
    }
    return k;
  }

  completeRun(run: BufferRun, k: number): void {
    this.runTranslated(k);
    const u = this.used32;
    const mask = this.mask;
    const ids = run.ids;
    const used = run.used;
    let s = this.usedShadow;
    for (let j = 0; j < k; j++) {
      const i = (s & mask) << 1;
      u[i] = ids[j];
      u[i + 1] = used[j];
      s = (s + 1) & 0xffff;
    }
    this.usedShadow = s;
    this.consume(k);
  }

  /** Stages one used entry; nothing is visible to the driver until flushUsed(). */
  pushUsed(head: number, len: number): void {
    const i = (this.usedShadow & this.mask) << 1;
    const u = this.used32;
    u[i] = head;
    u[i + 1] = len;
    this.usedShadow = (this.usedShadow + 1) & 0xffff;
  }

  /** Publishes staged used entries with one used->idx store. Returns how many were published. */
  flushUsed(): number {
    const n = (this.usedShadow - this.usedIdx) & 0xffff;
    // Still published when the queue just broke: those chains were completed. Not after
    // unmapRings() (the views are empty then and the entries are lost with the mapping).
    if (n !== 0 && this.used16.length !== 0) {
      Atomics.store(this.used16, 1, this.usedShadow);
      this.usedIdx = this.usedShadow;
      if (this.log !== null) this.logRingWrites();
    }
    return n;
  }

  /**
   * After flushUsed(): must the driver be interrupted? With EVENT_IDX, vring_need_event(
   * used_event, new, old) where old is the used index at the last interrupt decision;
   * without it, unless avail->flags has NO_INTERRUPT. False when nothing was published
   * since the last call.
   */
  needsInterrupt(): boolean {
    if (this.used16.length === 0) return false;
    const nw = this.usedIdx;
    const old = this.signalledUsed;
    const valid = this.signalledValid;
    if (valid && nw === old) return false;
    this.signalledUsed = nw;
    this.signalledValid = true;
    if (this.eventIdx) {
      if (!valid) return true;
      const ev = Atomics.load(this.avail16, this.usedEventIdx);
      return ((nw - ev - 1) & 0xffff) < ((nw - old) & 0xffff);
    }
    return (Atomics.load(this.avail16, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /** Ask the driver not to kick (polling). With EVENT_IDX this is a no-op, as in Linux vhost. */
  disableNotifications(): void {
    if (!this.ready || this.eventIdx) return;
    this.usedFlags |= VRING_USED_F_NO_NOTIFY;
    this.used16[0] = this.usedFlags;
    if (this.log !== null) this.logRingWrites();
  }

  /**
   * Ask the driver to kick for new buffers (before sleeping), then re-read avail->idx to
   * close the race with a driver that added buffers while notifications were off.
   * Returns how many chains are available beyond lastAvailIdx: if non-zero, do not sleep
   * (disable notifications again and process them).
   */
  enableNotifications(): number {
    if (!this.ready) return 0;
    if (this.eventIdx) {
      Atomics.store(this.used16, this.availEventIdx, this.availIdx);
    } else {
      this.usedFlags &= ~VRING_USED_F_NO_NOTIFY;
      Atomics.store(this.used16, 0, this.usedFlags);
    }
    if (this.log !== null) this.logRingWrites();
    return this.availableCount();
  }

  /** For inspect/snapshots: the driver's used_event (EVENT_IDX) or avail flags. */
  readUsedEvent(): number {
    return this.ready ? this.avail16[this.usedEventIdx] : 0;
  }
}


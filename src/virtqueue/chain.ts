/**
 * What split and packed virtqueues share on the device side: the queue's configuration,
 * broken / miss / ring-fault state, the mapping of its three ring areas (described per
 * kind by a RingAreas table), the start and end of a chain walk, the checks and mapping
 * of an indirect table (mapTable), and the mapping of one descriptor's buffer into
 * scatter-list pieces (the per-descriptor hot path, `addDesc`).
 *
 * SplitQueue and PackedQueue extend ChainWalker. A data-path worker only ever builds one
 * of them (the ring layout is negotiated per device), so every call site in it stays
 * monomorphic; the methods here are inlined into each subclass's walker exactly as if
 * they were its own.
 */
import { ACCESS_READ, ACCESS_WRITE, FAULT_DENIED, MAP_MISS, type AddressSpace } from '../memory/address-space.js';
import type { ScatterList } from './scatter.js';
import { NO_WIDE } from '../memory/wide-view.js';
import { PAGE_SIZE } from '../iotlb/address.js';
import type { VirtQueueConfig } from './queue.js';
import type { BufferRun } from './buffer-run.js';
import type { DirtyLog } from '../memory/dirty-log.js';

/** walkChain() results. */
export const WALK_OK = 0;
/** IOTLB miss: nothing consumed; missAddr/missLen/missAccess say what to ask for. */
export const WALK_MISS = 1;
/** The queue is now broken (brokenReason); stop using it until reset. */
export const WALK_BROKEN = 2;

/** configure() / mapRings() results. */
export const RING_OK = 0;
/** A ring area is not in the IOTLB yet: send a miss for missAddr, call mapRings() after the update. */
export const RING_MISS = 1;
/** Bad size, misaligned or unmappable ring: `error` says which; the queue stays unusable. */
export const RING_FAULT = 2;

/** addDescSlow(): the fast path did not call map(). */
const NOT_MAPPED = -2;

/** mapSingle(): not one direct descriptor of the wanted access and size; nothing mapped (use walkChain). */
export const SINGLE_NO = 0;
/** mapSingle(): the buffer mapped only in part, missed or faulted; walkSingle() finishes the walk. */
export const SINGLE_REST = -1;

/**
 * How much of a device-writable buffer of `len` bytes the device translates through `space`
 * when it will write at most `minLen` (> 0) of them: only those if the space translates on
 * demand (an IOTLB), else the whole buffer (AddressSpace.translatesOnDemand). A receive
 * buffer is usually far larger than a small frame (a Linux guest's mergeable buffers are
 * ~1.5-4 KiB carved from pages, each mapped at its own IOVA page), and translating the rest
 * cost a second IOTLB miss round trip for every buffer that crossed a page boundary (a fifth
 * of them with 64-byte frames) for bytes never written. DPDK's vhost translates whole
 * descriptors.
 */
export function writableSpan(space: AddressSpace, len: number, minLen: number): number {
  return space.translatesOnDemand && minLen > 0 && minLen < len ? minLen : len;
}

export function hex(n: number): string {
  return '0x' + n.toString(16);
}

/** "desc[3]" or "indirect desc[1] of desc[3]", for broken-queue reasons. */
export function where(idx: number, table: number): string {
  return table < 0 ? `desc[${idx}]` : `indirect desc[${idx}] of desc[${table}]`;
}

/** One ring area of a queue kind: `fixed + perEntry * size` bytes at a guest address. */
export interface RingArea {
  /** As in "avail ring at 0x...: ..." (mapping failures). */
  name: string;
  /** As in "avail ring address 0x... is not 2-byte aligned". */
  label: string;
  fixed: number;
  perEntry: number;
  /** Alignment of the guest address (spec), and of its host mapping (the typed views over it). */
  align: number;
  hostAlign: number;
  access: number;
}

/** A queue kind's three ring areas, at descAddr / availAddr / usedAddr. */
export interface RingAreas {
  desc: RingArea;
  avail: RingArea;
  used: RingArea;
}

function areaLen(a: RingArea, size: number): number {
  return a.fixed + a.perEntry * size;
}

/** Piece k of sg: len bytes where the space's last map() placed them. */
function putPiece(sg: ScatterList, k: number, space: AddressSpace, len: number): void {
  sg.bytes[k] = space.bytes;
  sg.wide[k] = space.wide ?? NO_WIDE;
  sg.offset[k] = space.offset;
  sg.len[k] = len;
}

const EMPTY8 = new Uint8Array(0);
const EMPTY_I32 = new Int32Array(0);
export const EMPTY16 = new Uint16Array(0);
export const EMPTY32 = new Uint32Array(0);

export abstract class ChainWalker {
  size = 0;
  eventIdx = false;
  descAddr = 0;
  /** Split: avail ring. Packed: driver event suppression area. */
  availAddr = 0;
  /** Split: used ring. Packed: device event suppression area. */
  usedAddr = 0;
  ringSpace: AddressSpace | null = null;
  dataSpace: AddressSpace | null = null;

  // For inspect (packed: positions with the wrap counter in bit 15).
  /** Next chain to consume. */
  lastAvailIdx = 0;
  /** Split: avail->idx as last read. Packed: scan frontier, the first descriptor not (yet) seen available. */
  availIdx = 0;
  /** Split: used->idx as last published. Packed: next used descriptor position after the last flush. */
  usedIdx = 0;

  /** Rings mapped and the queue usable. */
  ready = false;
  /** Set when a ring could not be mapped (RING_FAULT), for the log. */
  error = '';

  /** NEEDS_RESET: the driver broke the ring contract. The caller stops using the queue. */
  broken = false;
  brokenReason = '';
  /** When the IOTLB refused an access (ACCESS_FAIL to report): the IOVA and access, else -1. */
  deniedAddr = -1;
  deniedAccess = 0;

  /** Set by a MISS (walk or ring mapping); the caller sends one IOTLB miss and clears it. */
  missPending = false;
  /**
   * Set only while a walk looks for misses (MissPolicy's probe): a device-readable buffer
   * that misses is handed here and the walk goes on at the next IOMMU page, so every page
   * of a chain the device must read is asked for at once (a guest's 64 KiB TCP segment is
   * ~17 pages, each mapped on its own by a strict IOMMU: one round trip instead of 17).
   * False stops the walk there (WALK_MISS, as without a sink). A device-writable buffer
   * stops at its first miss: a frame may never reach its later pages (writableSpan).
   */
  missSink: ((addr: number, access: number) => boolean) | null = null;
  missAddr = 0;
  missLen = 0;
  missAccess = 0;

  // Chain walker results (valid after WALK_OK).
  /** The chain's id: head descriptor index (split) or buffer id (packed). */
  chainHead = 0;
  /** Bytes in device-readable descriptors. */
  chainReadLen = 0;
  /** Bytes in device-writable descriptors. */
  chainWriteLen = 0;
  /** Descriptors visited (including an indirect table's entries). */
  chainDescs = 0;
  /** Scatter-list index of the chain's first piece. */
  chainFirst = 0;

  // Walk state.
  protected wk = 0;
  protected wRead = 0;
  protected wWrite = 0;
  /** Indirect tables that are not contiguous in host memory are copied here. */
  protected indScratch: Uint8Array = EMPTY8;
  protected indWords: Int32Array = EMPTY_I32;
  /** The indirect table mapTable() found: its words, and its first entry's index in them. */
  protected tblWords: Int32Array = EMPTY_I32;
  protected tblBase = 0;
  // mapSingle() -> walkSingle(): the descriptor whose map() fell short, and that result.
  private sLo = 0;
  private sHi = 0;
  private sLen = 0;
  private sWrite = 0;
  private sIdx = 0;
  private sFirst = 0;
  // Ring area mapping result.
  protected areaBytes: Uint8Array = EMPTY8;
  protected areaOffset = 0;

  /** The dirty-page log while a migration is under way (dirty-log.ts), else null. */
  log: DirtyLog | null = null;
  // The (at most two) ring areas the device writes, as mapRings() found them, for the log.
  private logBytes0: Uint8Array = EMPTY8;
  private logOffset0 = 0;
  private logLen0 = 0;
  private logBytes1: Uint8Array = EMPTY8;
  private logOffset1 = 0;
  private logLen1 = 0;

  /** @param areas the kind's ring layout (mapRings, ringsOverlap). */
  constructor(private readonly areas: RingAreas) {}

  /**
   * configure()'s common part: clears the broken / miss / error state, then (size valid:
   * `sizeError` null) takes the addresses, spaces and EVENT_IDX. RING_OK or RING_FAULT.
   */
  protected configureCommon(cfg: VirtQueueConfig, sizeError: string | null): number {
    this.ready = false;
    this.broken = false;
    this.brokenReason = '';
    this.deniedAddr = -1;
    this.error = '';
    this.missPending = false;
    if (sizeError !== null) return this.ringFault(sizeError);
    this.size = cfg.size;
    this.descAddr = cfg.descAddr;
    this.availAddr = cfg.availAddr;
    this.usedAddr = cfg.usedAddr;
    this.ringSpace = cfg.ringSpace;
    this.dataSpace = cfg.dataSpace;
    this.eventIdx = cfg.eventIdx;
    return RING_OK;
  }

  /**
   * (Re)translates the three ring areas, e.g. after the IOTLB update answering a ring
   * miss, or after an invalidation hit a ring (call unmapRings() first). Each must map
   * contiguously; setViews() then gets each area's bytes and byte offset in their buffer.
   */
  mapRings(): number {
    this.ready = false;
    this.missPending = false;
    const space = this.ringSpace;
    if (space === null) return this.ringFault('queue not configured');
    const size = this.size;
    const { desc, avail, used } = this.areas;
    if (this.descAddr % desc.align !== 0) return this.alignFault(desc, this.descAddr);
    if (this.availAddr % avail.align !== 0) return this.alignFault(avail, this.availAddr);
    if (this.usedAddr % used.align !== 0) return this.alignFault(used, this.usedAddr);
    let st = this.mapArea(space, this.descAddr, areaLen(desc, size), desc.access, desc.name);
    if (st !== RING_OK) return st;
    const dBytes = this.areaBytes;
    const dOff = dBytes.byteOffset + this.areaOffset;
    st = this.mapArea(space, this.availAddr, areaLen(avail, size), avail.access, avail.name);
    if (st !== RING_OK) return st;
    const aBytes = this.areaBytes;
    const aOff = aBytes.byteOffset + this.areaOffset;
    st = this.mapArea(space, this.usedAddr, areaLen(used, size), used.access, used.name);
    if (st !== RING_OK) return st;
    const uBytes = this.areaBytes;
    const uOff = uBytes.byteOffset + this.areaOffset;
    this.keepWrittenAreas(dBytes, dOff - dBytes.byteOffset, aBytes, aOff - aBytes.byteOffset, uBytes, uOff - uBytes.byteOffset);
    if (dOff % desc.hostAlign !== 0 || aOff % avail.hostAlign !== 0 || uOff % used.hostAlign !== 0) {
      return this.ringFault('ring host mapping is not aligned (region bytes misaligned)');
    }
    this.setViews(dBytes.buffer, dOff, aBytes.buffer, aOff, uBytes.buffer, uOff);
    this.ready = true;
    return RING_OK;
  }

  /** Remembers where the areas the device writes (access WRITE) are, for logRingWrites(). */
  private keepWrittenAreas(dBytes: Uint8Array, dOff: number, aBytes: Uint8Array, aOff: number, uBytes: Uint8Array, uOff: number): void {
    const { desc, avail, used } = this.areas;
    this.logLen0 = this.logLen1 = 0;
    const keep = (area: RingArea, bytes: Uint8Array, off: number): void => {
      if ((area.access & ACCESS_WRITE) === 0) return;
      const len = areaLen(area, this.size);
      if (this.logLen0 === 0) {
        this.logBytes0 = bytes;
        this.logOffset0 = off;
        this.logLen0 = len;
      } else {
        this.logBytes1 = bytes;
        this.logOffset1 = off;
        this.logLen1 = len;
      }
    };
    keep(desc, dBytes, dOff);
    keep(avail, aBytes, aOff);
    keep(used, uBytes, uOff);
  }

  /**
   * Marks the ring areas the device writes (split: used ring; packed: descriptor ring and
   * device event area) in the dirty log, whole: a ring is a page or two, so marking all of
   * it after a publish costs a few ORs and never misses an entry or flag. Call with log set.
   */
  protected logRingWrites(): void {
    const log = this.log!;
    if (this.logLen0 !== 0) log.markHost(this.logBytes0, this.logOffset0, this.logLen0);
    if (this.logLen1 !== 0) log.markHost(this.logBytes1, this.logOffset1, this.logLen1);
  }

  /** Drops the ring views (an IOTLB invalidation covered a ring). mapRings() restores them. */
  unmapRings(): void {
    this.ready = false;
    this.logLen0 = this.logLen1 = 0;
    this.dropViews();
  }

  /** Points every ring view at an empty array. */
  protected abstract dropViews(): void;

  /** Builds the kind's typed views over the mapped ring areas (byte offsets into each buffer). */
  protected abstract setViews(dBuf: ArrayBufferLike, dOff: number, aBuf: ArrayBufferLike, aOff: number, uBuf: ArrayBufferLike, uOff: number): void;

  /** Is [addr, addr+len) overlapping one of this queue's ring areas? (for invalidations). */
  ringsOverlap(addr: number, len: number): boolean {
    const end = addr + len;
    const s = this.size;
    const { desc, avail, used } = this.areas;
    return (addr < this.descAddr + areaLen(desc, s) && this.descAddr < end) ||
      (addr < this.availAddr + areaLen(avail, s) && this.availAddr < end) ||
      (addr < this.usedAddr + areaLen(used, s) && this.usedAddr < end);
  }

  private alignFault(area: RingArea, addr: number): number {
    return this.ringFault(`${area.label} address ${hex(addr)} is not ${area.align}-byte aligned`);
  }

  /** A walk's start: chain pieces go to sg from `start`, totals from 0. */
  protected beginWalk(start: number): void {
    this.wk = start;
    this.wRead = 0;
    this.wWrite = 0;
  }

  /**
   * A walk's end: on WALK_OK commits the pieces to sg and sets the chain totals (`descs`
   * descriptors visited); otherwise leaves sg.count at `start` and returns `st`.
   */
  protected endWalk(st: number, sg: ScatterList, start: number, descs: number): number {
    if (st !== WALK_OK) {
      sg.count = start;
      return st;
    }
    sg.count = this.wk;
    this.chainReadLen = this.wRead;
    this.chainWriteLen = this.wWrite;
    this.chainDescs = descs;
    return WALK_OK;
  }

  /**
   * desc[idx] is INDIRECT with a table of len bytes at (hi, lo): checks and maps the
   * table. On WALK_OK its len/16 entries (4 words each) are at tblWords[tblBase...]: the
   * space's own words when contiguous and word-aligned (the normal case: the spec asks
   * for 16-byte alignment), else the scratch copy. Sets chainDescs to 0.
   *
   * Each kind's walkIndirect() calls this and walks the entries itself: the table loop
   * then stays one function with addDesc inlined, called once per indirect chain (a
   * shared walkIndirect calling back into the kind's loop was inlined into walkChain and
   * blew V8's inlining budget, leaving addDesc a call per table entry: 5% slower).
   */
  protected mapTable(idx: number, lo: number, hi: number, len: number): number {
    this.chainDescs = 0;
    if (len === 0 || (len & 15) !== 0) return this.failIndLen(idx, len);
    const nr = len >>> 4;
    if (nr > this.size) return this.failIndSize(idx, nr);
    if (hi >= 0x200000) return this.failBig(idx, -1, hi, lo);
    const addr = hi * 4294967296 + lo;
    const space = this.dataSpace!;
    const n = space.map(addr, len, ACCESS_READ);
    const words = (space.wide ?? NO_WIDE).i32;
    if (n === len && words.length !== 0 && (space.offset & 3) === 0) {
      this.tblWords = words;
      this.tblBase = space.offset >>> 2;
      return WALK_OK;
    }
    const st = this.snapshotTable(space, n, idx, addr, len);
    this.tblWords = this.indWords;
    this.tblBase = 0;
    return st;
  }

  protected mapArea(space: AddressSpace, addr: number, len: number, access: number, name: string): number {
    let n = space.map(addr, len, access);
    if (n <= 0) return this.areaFail(space, n, addr, len, access, name, addr);
    const bytes = space.bytes;
    const off = space.offset;
    let got = n;
    while (got < len) {
      n = space.map(addr + got, len - got, access);
      if (n <= 0) return this.areaFail(space, n, addr, len - got, access, name, addr + got);
      if (space.bytes !== bytes || space.offset !== off + got) {
        return this.ringFault(`${name} ring at ${hex(addr)} (${len} bytes) is not contiguous in host memory at +${got}`);
      }
      got += n;
    }
    this.areaBytes = bytes;
    this.areaOffset = off;
    return RING_OK;
  }

  protected areaFail(space: AddressSpace, n: number, addr: number, len: number, access: number, name: string, at: number): number {
    if (n === MAP_MISS) {
      this.setMiss(space.missAddr, len, access);
      return RING_MISS;
    }
    const why = space.faultKind === FAULT_DENIED ? 'access denied by the IOTLB' : 'outside guest memory';
    return this.ringFault(`${name} ring at ${hex(addr)}: address ${hex(at)} ${why}`);
  }

  protected ringFault(msg: string): number {
    this.error = msg;
    this.ready = false;
    return RING_FAULT;
  }

  protected setMiss(addr: number, len: number, access: number): void {
    this.missPending = true;
    this.missAddr = addr;
    this.missLen = len;
    this.missAccess = access;
  }

  clearMiss(): void {
    this.missPending = false;
  }

  private setDenied(addr: number, access: number): void {
    if (this.broken) return;
    this.deniedAddr = addr;
    this.deniedAccess = access;
  }

  /** Puts the queue in the broken (NEEDS_RESET) state; returns WALK_BROKEN. */
  fail(reason: string): number {
    if (!this.broken) {
      this.broken = true;
      this.brokenReason = reason;
    }
    this.ready = false;
    return WALK_BROKEN;
  }

  abstract knownAvailable(): number;
  abstract availableCount(): number;

  /**
   * reserveRun()'s start: false when the queue is not usable. (The run's window fields need
   * no reset: reserveRun keeps the window in locals starting empty, and reads the run's
   * only after runWindow() set them.)
   */
  protected runStart(): boolean {
    return this.ready && this.dataSpace !== null;
  }

  /** runStart(), then how many chains reserveRun() may look at: available ones, at most max and the run's capacity. */
  protected runLimit(max: number, run: BufferRun): number {
    if (!this.runStart()) return 0;
    let n = this.knownAvailable();
    if (n < max) n = this.availableCount();
    if (n > max) n = max;
    return n < run.capacity ? n : run.capacity;
  }

  /**
   * reserveRun()'s way out of the run's window for chain k's buffer: the data space's
   * window around it (AddressSpace.window: a region, or an IOTLB span an earlier lookup
   * vouched for). False when there is none, or it lies in another region than the run's
   * earlier buffers (the run ends there). Each reserveRun keeps the window in locals, so a
   * buffer inside it costs two compares (reading it from `run` per buffer measured ~20%
   * slower per frame).
   */
  protected runWindow(addr: number, len: number, access: number, run: BufferRun, k: number): boolean {
    const space = this.dataSpace!;
    if (!space.window(addr, len, access) || (k !== 0 && space.bytes !== run.bytes)) return false;
    run.bytes = space.bytes;
    run.wide = space.wide ?? NO_WIDE;
    run.winBase = space.windowBase;
    run.winStart = space.windowStart;
    run.winEnd = space.windowEnd;
    return true;
  }

  /** completeRun()'s start: the k translations used go into the data space's statistics. */
  protected runTranslated(k: number): void {
    if (k !== 0) this.dataSpace!.countWindowed(k);
  }

  /**
   * mapSingle()'s common part, for a direct descriptor without NEXT whose WRITE flag
   * matches the access, if it is at least minLen bytes: mapped whole, or only its first
   * minLen bytes if writable through an IOTLB (writableSpan). Only the fall-short case
   * stores anything (for walkSingle), so the common case costs a map().
   */
  protected mapDirect(idx: number, lo: number, hi: number, len: number, writable: number, minLen: number): number {
    if (len < minLen || len === 0 || hi >= 0x200000) return SINGLE_NO;
    const space = this.dataSpace!;
    const span = writable !== 0 ? writableSpan(space, len, minLen) : len;
    const n = space.map(hi * 4294967296 + lo, span, writable !== 0 ? ACCESS_WRITE : ACCESS_READ);
    if (n === span) return span;
    this.sLo = lo;
    this.sHi = hi;
    this.sLen = span;
    this.sWrite = writable;
    this.sIdx = idx;
    this.sFirst = n;
    return SINGLE_REST;
  }

  /**
   * After mapSingle() returned SINGLE_REST: what walkChain() would have returned for that
   * chain (pieces appended to sg, or the miss / broken state), without a second lookup of
   * its start, so IOTLB statistics and traces see each translation once.
   */
  walkSingle(sg: ScatterList): number {
    const start = sg.count;
    this.chainFirst = start;
    this.beginWalk(start);
    const st = this.addDescSlow(this.sLo, this.sHi, this.sLen, this.sWrite, sg, this.sIdx, -1, this.sFirst);
    return this.endWalk(st, sg, start, 1);
  }

  /**
   * Maps one descriptor buffer into pieces. `table` is -1 for the descriptor table, else
   * the index of the descriptor holding the indirect table (for messages only). The
   * common case — in range, in order, mapped in one piece — stays small enough to inline.
   */
  protected addDesc(lo: number, hi: number, len: number, writable: number, sg: ScatterList, idx: number, table: number): number {
    const k = this.wk;
    let n = NOT_MAPPED;
    if (hi < 0x200000 && k < sg.capacity && (writable !== 0 || this.wWrite === 0)) {
      const addr = hi * 4294967296 + lo;
      const space = this.dataSpace!;
      n = space.map(addr, len, writable !== 0 ? ACCESS_WRITE : ACCESS_READ);
      if (n === len) {
        if (writable !== 0) this.wWrite += len;
        else this.wRead += len;
        if (this.wRead + this.wWrite > 0xffffffff) return this.failTotal(idx, table, len);
        putPiece(sg, k, space, len);
        this.wk = k + 1;
        return WALK_OK;
      }
    }
    return this.addDescSlow(lo, hi, len, writable, sg, idx, table, n);
  }

  /**
   * The general path: split mappings, misses, faults, and every check. `first` is the
   * result of the fast path's map() of the whole buffer (its bytes/offset/miss fields are
   * still in the space), so a lookup is never repeated; NOT_MAPPED if it did not map.
   */
  protected addDescSlow(lo: number, hi: number, len: number, writable: number, sg: ScatterList, idx: number, table: number, first: number): number {
    if (hi >= 0x200000) return this.failBig(idx, table, hi, lo);
    const addr = hi * 4294967296 + lo;
    let access: number;
    if (writable !== 0) {
      access = ACCESS_WRITE;
      this.wWrite += len;
    } else {
      if (this.wWrite !== 0) return this.failOrder(idx, table);
      access = ACCESS_READ;
      this.wRead += len;
    }
    if (this.wRead + this.wWrite > 0xffffffff) return this.failTotal(idx, table, len);
    const space = this.dataSpace!;
    let k = this.wk;
    let a = addr;
    let rem = len;
    let n = first;
    while (rem > 0) {
      if (n === NOT_MAPPED) n = space.map(a, rem, access);
      if (n <= 0) {
        if (n === MAP_MISS) {
          if (access === ACCESS_READ && this.missSink !== null && this.missSink(space.missAddr, access)) {
            // Probing only: this page gets no piece, the walk goes on at the next one.
            const skip = PAGE_SIZE - (a % PAGE_SIZE);
            a += skip;
            rem -= skip;
            n = NOT_MAPPED;
            continue;
          }
          this.setMiss(space.missAddr, rem, access);
          return WALK_MISS;
        }
        if (space.faultKind === FAULT_DENIED) this.setDenied(a, access);
        return this.fail(this.faultText(space, idx, table, addr, len, a, access));
      }
      if (k >= sg.capacity) return this.failPieces(sg.capacity);
      putPiece(sg, k, space, n);
      k++;
      a += n;
      rem -= n;
      n = NOT_MAPPED;
    }
    this.wk = k;
    return WALK_OK;
  }

  protected failBig(idx: number, table: number, hi: number, lo: number): number {
    return this.fail(`${where(idx, table)}.addr=${hex(hi)}${lo.toString(16).padStart(8, '0')} is beyond 2^53`);
  }

  protected failOrder(idx: number, table: number): number {
    return this.fail(`${where(idx, table)} is device-readable but follows a device-writable descriptor`);
  }

  protected failTotal(idx: number, table: number, len: number): number {
    return this.fail(`${where(idx, table)}.len=${len} makes the chain longer than 2^32-1 bytes`);
  }

  protected failPieces(cap: number): number {
    return this.fail(`descriptor chain from head ${this.chainHead} needs more than ${cap} pieces (chain too long)`);
  }

  protected faultText(space: AddressSpace, idx: number, table: number, addr: number, len: number, at: number, access: number): string {
    const w = where(idx, table);
    if (space.faultKind === FAULT_DENIED) {
      return `${w} (addr=${hex(addr)} len=${len}): IOTLB denies ${access === ACCESS_WRITE ? 'write' : 'read'} access at ${hex(at)}`;
    }
    if (at === addr) return `${w}.addr=${hex(addr)} (len=${len}) is outside guest memory`;
    return `${w}.len=${len} overflows guest memory: addr=${hex(addr)} + len runs past ${hex(at)}`;
  }

  /**
   * Copies an indirect table that is split across mappings (or misaligned) into the
   * scratch table. `n` is the result of mapping its start. Grows the scratch once.
   */
  protected snapshotTable(space: AddressSpace, n: number, idx: number, addr: number, len: number): number {
    if (n <= 0) return this.tableFail(space, n, idx, addr, len, addr);
    if (this.indScratch.length < len) {
      this.indScratch = new Uint8Array(Math.max(len, 256));
      this.indWords = new Int32Array(this.indScratch.buffer);
    }
    const scratch = this.indScratch;
    let got = 0;
    for (;;) {
      const b = space.bytes;
      const o = space.offset;
      for (let i = 0; i < n; i++) scratch[got + i] = b[o + i];
      got += n;
      if (got >= len) return WALK_OK;
      n = space.map(addr + got, len - got, ACCESS_READ);
      if (n <= 0) return this.tableFail(space, n, idx, addr, len - got, addr + got);
    }
  }

  protected failIndLen(idx: number, len: number): number {
    return this.fail(`desc[${idx}] is INDIRECT with len=${len}, not a non-zero multiple of 16`);
  }

  protected failIndSize(idx: number, nr: number): number {
    return this.fail(`desc[${idx}] INDIRECT table has ${nr} descriptors, more than queue size ${this.size}`);
  }

  protected tableFail(space: AddressSpace, n: number, idx: number, addr: number, len: number, at: number): number {
    if (n === MAP_MISS) {
      this.setMiss(space.missAddr, len, ACCESS_READ);
      return WALK_MISS;
    }
    if (space.faultKind === FAULT_DENIED) {
      this.setDenied(at, ACCESS_READ);
      return this.fail(`desc[${idx}] INDIRECT table at ${hex(addr)}: IOTLB denies read access at ${hex(at)}`);
    }
    if (at === addr) return this.fail(`desc[${idx}].addr=${hex(addr)} (INDIRECT table) is outside guest memory`);
    return this.fail(`desc[${idx}].len=${len} (INDIRECT table at ${hex(addr)}) runs past guest memory at ${hex(at)}`);
  }
}

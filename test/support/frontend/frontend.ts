/**
 * A vhost-user-net FRONT-END for tests and benchmarks: what QEMU plus a guest driver do,
 * in one process, against a real back-end (serve, or DPDK's vhost PMD).
 *
 *  - Guest memory: one memfd mapped here, shared with SET_MEM_TABLE as guest-physical
 *    [0, size) at a fake front-end virtual address (uaddrBase).
 *  - Negotiation like QEMU: GET_FEATURES, GET/SET_PROTOCOL_FEATURES (REPLY_ACK,
 *    BACKEND_REQ), SET_OWNER, SET_BACKEND_REQ_FD, SET_FEATURES, SET_MEM_TABLE, per ring
 *    NUM/BASE/ADDR/KICK/CALL, (with an IOMMU) a miss on each used ring, SET_VRING_ENABLE.
 *    With REPLY_ACK every request after SET_PROTOCOL_FEATURES asks for an ack and waits.
 *  - An emulated IOMMU (iommu.ts): 'static' maps rings and buffer pools once with 4K, 2M or
 *    1G pages (a DPDK guest with VFIO); 'dynamic' maps each buffer before posting it and
 *    unmaps it (INVALIDATE, waiting for the ack) when the device is done (a Linux guest
 *    with a strict IOMMU), with IOVAs from Linux's top-down allocator. Device-IOTLB misses
 *    are answered like QEMU: one UPDATE for the IOMMU page holding the address, clamped to
 *    the memory region, with the page's permission.
 *  - Two split rings (split-driver.ts): RX = vring 0, TX = vring 1.
 *  - Canary: all guest memory starts as a position-dependent pattern; a buffer goes back to
 *    the pattern when the device returns it, after checking it (TX: unchanged; RX: nothing
 *    written past the used length). verifyCanary() checks every byte outside the rings.
 *
 * The data path (txPost / poll) allocates nothing; in 'static' mode it makes no syscall
 * except kicks the device asks for and a periodic non-blocking read of the back-end channel.
 */
import {
  FrontendRequest, IotlbPerm, IotlbType, NetFeature, ProtocolFeature, VirtioFeature, BackendRequest,
  featureMask, hasFeature, type Body, type VhostMessage,
} from '../../../src/protocol/index.js';
import { closeFd, eventfdCreate, eventfdWrite, mapFd, memfdCreate, socketPair, unmap } from '../../../src/sys/index.js';
import { VRING_NOFD_FLAG } from '../../../src/protocol/index.js';
import { SplitDriver, layoutRings, type RingLayout } from './split-driver.js';
import { VhostUserConnection } from './connection.js';
import { EmulatedIommu, PAGE_1G, PAGE_2M, PAGE_4K, type IommuTranslation } from './iommu.js';

export type IommuMode = 'off' | 'static' | 'dynamic';

export interface FrontendOptions {
  socket: string;
  /** 'off' (no ACCESS_PLATFORM), 'static' or 'dynamic' mappings. Default 'off'. */
  iommu?: IommuMode;
  /** IOMMU page size for static mappings: 4096, 2 MiB or 1 GiB. Dynamic always uses 4 KiB. */
  pageSize?: number;
  /** Guest memory bytes (default 64 MiB). */
  memoryBytes?: number;
  /** Ring size (default 256). */
  queueSize?: number;
  /** TX / RX buffer pools, in slots (default 4 x queue size). Slots are used round-robin. */
  txSlots?: number;
  rxSlots?: number;
  /** Bytes per slot (default 2048); a slot holds header + frame. Non-multiples of 4096 make buffers straddle pages. */
  slotSize?: number;
  /** Negotiate VIRTIO_NET_F_MRG_RXBUF (default true). */
  mergeableRx?: boolean;
  /** Negotiate VIRTIO_F_EVENT_IDX (default false). */
  eventIdx?: boolean;
  /** Canary-fill guest memory and check buffers as they come back (default true). */
  canary?: boolean;
  /** IOMMU permission of RX buffers (default RW: DPDK's vhost asks RW for RX buffers). */
  rxPerm?: number;
  /** IOMMU permission of TX buffers (default RO). */
  txPerm?: number;
  /** Kicks through eventfds (default) or none (NOFD: the back-end must poll). */
  kicks?: 'eventfd' | 'none';
  /** Fake front-end virtual address of guest-physical 0 (default 0x7f0000000000). */
  uaddrBase?: number;
  /** Like QEMU's vhost_dev_start: send an UPDATE for each used ring before enabling (default true). */
  primeUsedRings?: boolean;
  /**
   * Static 4K mappings: 'rw' maps the rings read-write (default; dma_alloc_coherent, and
   * DPDK's vhost asks RW for every ring part), 'split' maps desc + avail read-only.
   */
  ringPerms?: 'rw' | 'split';
  /** Post RX pool buffers automatically (start() and every poll()); default true. */
  rxAutoRefill?: boolean;
  /** Static mappings: IOVA of guest-physical 0 (default 0x4000000000, 1 GiB aligned). */
  staticIovaBase?: number;
  /**
   * How misses that arrive together are answered: 'serial' (default) sends one UPDATE and
   * waits for its ack before the next, as QEMU 7.2's backend-channel handler does;
   * 'pipelined' sends the UPDATEs for every miss read in one go back to back and then
   * collects the acks — what a front-end can do for a back-end that batches its misses.
   */
  missReplies?: 'serial' | 'pipelined';
  connectTimeoutMs?: number;
}

export const RX_VRING = 0;
export const TX_VRING = 1;
const HDR = 12;
/** poll() reads the back-end channel every 64 polls while misses come, every 4096 at most when quiet (masks). */
const BACKEND_POLL_MIN = 63;
const BACKEND_POLL_MAX = 4095;
const DEFAULT_UADDR = 0x7f0000000000;
const DEFAULT_STATIC_IOVA = 0x4000000000;

export interface CanaryViolation {
  gpa: number;
  expected: number;
  actual: number;
  where: string;
}

export interface FrontendStats {
  txPosted: number;
  txCompleted: number;
  rxPosted: number;
  rxFrames: number;
  rxBuffers: number;
  kicks: number;
  missesReceived: number;
  updatesSent: number;
  missesDeferred: number;
  invalidatesSent: number;
  accessFails: number;
  backendPolls: number;
}

/** Canary pattern byte of guest-physical address a. */
export function canaryByte(a: number): number {
  return ((a * 131) ^ (a >>> 7) ^ (a >>> 15) ^ 0x5a) & 0xff;
}

class DriverRing {
  driver!: SplitDriver;
  layout!: RingLayout;
  /** Device-visible ring addresses (uaddr or IOVA). */
  descDev = 0;
  availDev = 0;
  usedDev = 0;
  /** Dynamic mode: the ring's own IOVA allocation. */
  ringIova = 0;
  ringPages = 0;
  kickFd = -1;
  callFd = -1;
  /** head -> slot, and dynamic-mode IOVA allocation per head. */
  headSlot!: Int32Array;
  headIova!: Float64Array;
  headPages!: Int32Array;
  headLen!: Int32Array;
  /** FIFO of free slots. */
  free!: Int32Array;
  freeHead = 0;
  freeCount = 0;
  slots = 0;
  poolGpa = 0;
  poolBytes = 0;
  constructor(readonly index: number) {}

  takeSlot(): number {
    if (this.freeCount === 0) return -1;
    const s = this.free[this.freeHead];
    this.freeHead = this.freeHead + 1 === this.slots ? 0 : this.freeHead + 1;
    this.freeCount--;
    return s;
  }

  putSlot(s: number): void {
    let tail = this.freeHead + this.freeCount;
    if (tail >= this.slots) tail -= this.slots;
    this.free[tail] = s;
    this.freeCount++;
  }
}

export class VhostUserFrontend {
  readonly opts: Required<Omit<FrontendOptions, 'socket'>> & { socket: string };
  readonly conn: VhostUserConnection;
  readonly memfd: number;
  readonly memory: Uint8Array;
  readonly memoryBytes: number;
  readonly iommu: EmulatedIommu | null;
  readonly rx = new DriverRing(RX_VRING);
  readonly tx = new DriverRing(TX_VRING);
  features = 0n;
  protocolFeatures = 0n;
  offeredFeatures = 0n;
  offeredProtocolFeatures = 0n;
  readonly stats: FrontendStats = {
    txPosted: 0, txCompleted: 0, rxPosted: 0, rxFrames: 0, rxBuffers: 0, kicks: 0, missesReceived: 0, updatesSent: 0,
    missesDeferred: 0, invalidatesSent: 0, accessFails: 0, backendPolls: 0,
  };
  /** Canary / content violations found while the data path ran (checked in canary mode). */
  readonly violations: CanaryViolation[] = [];
  /** ACCESS_FAIL messages the back-end sent: [iova, perm]. */
  readonly accessFails: Array<{ iova: number; perm: number }> = [];
  /** Misses for unmapped IOVAs, answered when a mapping covers them (IOMMU page number -> perm). */
  private readonly deferred = new Map<number, number>();
  /** First guest-physical byte after the rings (everything below is ring memory). */
  readonly ringsEnd: number;
  /** First free guest-physical byte after the pools: tests allocate special buffers from here. */
  private spareNext: number;
  private readonly tr: IommuTranslation = { pageIova: 0, pageGpa: 0, perm: 0 };
  /** UPDATEs held back to be sent together (missReplies 'pipelined'), or null. */
  private heldUpdates: Body[] | null = null;
  /** Saved TX slot contents (canary mode), to check the device left them alone. */
  private txSaved: Uint8Array | null = null;
  private rxScratch = new Uint8Array(65536 + HDR);
  private iter = 0;
  private backendPollMask = BACKEND_POLL_MIN;
  private closed = false;
  /** Extra guest ranges excluded from verifyCanary() (special test buffers): [start, end). */
  private readonly canaryHoles: Array<[number, number]> = [];
  private started = false;
  /** The last dmaMap() allocation (IOVA base, pages). */
  private lastMapBase = 0;
  private lastMapPages = 0;

  private constructor(conn: VhostUserConnection, opts: FrontendOptions) {
    const pageSize = opts.iommu === 'dynamic' ? PAGE_4K : opts.pageSize ?? PAGE_4K;
    const queueSize = opts.queueSize ?? 256;
    this.opts = {
      socket: opts.socket,
      iommu: opts.iommu ?? 'off',
      pageSize,
      memoryBytes: opts.memoryBytes ?? 64 * 1024 * 1024,
      queueSize,
      txSlots: opts.txSlots ?? 4 * queueSize,
      rxSlots: opts.rxSlots ?? 4 * queueSize,
      slotSize: opts.slotSize ?? 2048,
      mergeableRx: opts.mergeableRx ?? true,
      eventIdx: opts.eventIdx ?? false,
      canary: opts.canary ?? true,
      rxPerm: opts.rxPerm ?? IotlbPerm.RW,
      txPerm: opts.txPerm ?? IotlbPerm.RO,
      kicks: opts.kicks ?? 'eventfd',
      uaddrBase: opts.uaddrBase ?? DEFAULT_UADDR,
      primeUsedRings: opts.primeUsedRings ?? true,
      staticIovaBase: opts.staticIovaBase ?? DEFAULT_STATIC_IOVA,
      rxAutoRefill: opts.rxAutoRefill ?? true,
      ringPerms: opts.ringPerms ?? 'rw',
      missReplies: opts.missReplies ?? 'serial',
      connectTimeoutMs: opts.connectTimeoutMs ?? 15_000,
    };
    const o = this.opts;
    if (o.slotSize < HDR + 60 || o.slotSize % 4 !== 0) throw new Error(`slotSize ${o.slotSize} must be a multiple of 4 and hold a header and a 60-byte frame`);
    if (o.memoryBytes % PAGE_2M !== 0) throw new Error('memoryBytes must be a multiple of 2 MiB');
    this.conn = conn;
    this.memoryBytes = o.memoryBytes;
    this.iommu = o.iommu === 'off' ? null : new EmulatedIommu(pageSize);

    // Layout: [RX ring][TX ring] from 0, then the TX pool, the RX pool, each aligned to a
    // mapping block (2 MiB, or the IOMMU page when larger) so pools and rings never share a page.
    const rxl = layoutRings(queueSize, 0);
    const txl = layoutRings(queueSize, Math.ceil(rxl.end / PAGE_4K) * PAGE_4K);
    this.ringsEnd = Math.ceil(txl.end / PAGE_4K) * PAGE_4K;
    const block = PAGE_2M;
    const align = (x: number): number => Math.ceil(x / block) * block;
    const txPool = align(this.ringsEnd);
    const txBytes = align(o.txSlots * o.slotSize);
    const rxPool = txPool + txBytes;
    const rxBytes = align(o.rxSlots * o.slotSize);
    this.spareNext = rxPool + rxBytes;
    if (this.spareNext + PAGE_2M > o.memoryBytes) throw new Error(`guest memory of ${o.memoryBytes} bytes is too small for the pools`);
    if (o.iommu === 'static' && pageSize === PAGE_1G && o.memoryBytes > PAGE_1G) throw new Error('static 1G mappings: guest memory must fit one 1 GiB page');

    this.memfd = memfdCreate('vit-frontend-guest', o.memoryBytes);
    this.memory = new Uint8Array(mapFd(this.memfd, 0, o.memoryBytes, true));
    if (o.canary) this.fillCanary(0, o.memoryBytes);

    this.setupRing(this.rx, rxl, rxPool, rxBytes, o.rxSlots);
    this.setupRing(this.tx, txl, txPool, txBytes, o.txSlots);
    if (o.canary) this.txSaved = new Uint8Array(o.txSlots * o.slotSize);
  }

  /** Connects to the back-end's socket (retrying until it listens). Call start() next. */
  static async connect(opts: FrontendOptions): Promise<VhostUserFrontend> {
    const conn = await VhostUserConnection.connect(opts.socket, opts.connectTimeoutMs ?? 15_000);
    try {
      return new VhostUserFrontend(conn, opts);
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  private setupRing(r: DriverRing, layout: RingLayout, poolGpa: number, poolBytes: number, slots: number): void {
    const q = this.opts.queueSize;
    r.layout = layout;
    r.driver = new SplitDriver({
      memory: this.memory, base: 0, size: q, descAddr: layout.descAddr, availAddr: layout.availAddr, usedAddr: layout.usedAddr,
      eventIdx: this.opts.eventIdx,
    });
    r.headSlot = new Int32Array(q).fill(-1);
    r.headIova = new Float64Array(q);
    r.headPages = new Int32Array(q);
    r.headLen = new Int32Array(q);
    r.slots = slots;
    r.free = new Int32Array(slots);
    for (let i = 0; i < slots; i++) r.free[i] = i;
    r.freeCount = slots;
    r.poolGpa = poolGpa;
    r.poolBytes = poolBytes;
  }

  slotGpa(r: DriverRing, slot: number): number {
    return r.poolGpa + slot * this.opts.slotSize;
  }

  // ---------------------------------------------------------------- canary

  fillCanary(start: number, end: number): void {
    const m = this.memory;
    for (let a = start; a < end; a++) m[a] = canaryByte(a);
  }

  /** First address in [start, end) that is not canary, or -1. */
  canaryMismatch(start: number, end: number): number {
    const m = this.memory;
    for (let a = start; a < end; a++) if (m[a] !== canaryByte(a)) return a;
    return -1;
  }

  private violation(gpa: number, where: string): void {
    if (this.violations.length < 100) this.violations.push({ gpa, expected: canaryByte(gpa), actual: this.memory[gpa], where });
  }

  /** Excludes [start, end) from verifyCanary() (a test buffer whose contents are checked otherwise). */
  canaryHole(start: number, end: number): void {
    this.canaryHoles.push([start, end]);
  }

  /**
   * Checks every byte of guest memory outside the rings, the buffers still posted and the
   * declared holes: all must still be canary. Returns the violations (also those recorded
   * while running).
   */
  verifyCanary(): CanaryViolation[] {
    const holes: Array<[number, number]> = [[0, this.ringsEnd], ...this.canaryHoles];
    for (const r of [this.rx, this.tx]) {
      for (let h = 0; h < r.headSlot.length; h++) {
        const s = r.headSlot[h];
        if (s >= 0) holes.push([this.slotGpa(r, s), this.slotGpa(r, s) + this.opts.slotSize]);
      }
    }
    holes.sort((a, b) => a[0] - b[0]);
    const found: CanaryViolation[] = [...this.violations];
    let a = 0;
    const check = (s: number, e: number): void => {
      // Fast path: 64 KiB blocks compared as whole words, byte scan only where they differ.
      let x = s;
      while (x < e && found.length < 100) {
        const bad = this.canaryMismatch(x, Math.min(e, x + 65536));
        if (bad < 0) {
          x += 65536;
          continue;
        }
        found.push({ gpa: bad, expected: canaryByte(bad), actual: this.memory[bad], where: 'outside every buffer given to the device' });
        x = bad + 1;
      }
    };
    for (const [s, e] of holes) {
      if (s > a) check(a, s);
      a = Math.max(a, e);
    }
    if (a < this.memoryBytes) check(a, this.memoryBytes);
    return found;
  }

  // ---------------------------------------------------------------- addresses

  /** Device-visible address of guest-physical `gpa` for rings: uaddr without IOMMU, IOVA with static mappings. */
  private ringAddr(gpa: number): number {
    if (this.opts.iommu === 'off') return this.opts.uaddrBase + gpa;
    return this.opts.staticIovaBase + gpa;
  }

  staticIova(gpa: number): number {
    return this.opts.staticIovaBase + gpa;
  }

  // ---------------------------------------------------------------- negotiation

  /** Negotiates, shares memory, sets both rings up and enables them. */
  start(): void {
    const o = this.opts;
    const c = this.conn;
    const iommu = o.iommu !== 'off';
    const offered = this.get(FrontendRequest.GET_FEATURES);
    this.offeredFeatures = offered;
    let want = featureMask(VirtioFeature.VERSION_1);
    if (hasFeature(offered, VirtioFeature.PROTOCOL_FEATURES)) want |= featureMask(VirtioFeature.PROTOCOL_FEATURES);
    if (iommu) want |= featureMask(VirtioFeature.ACCESS_PLATFORM);
    if (o.mergeableRx) want |= featureMask(NetFeature.MRG_RXBUF);
    if (o.eventIdx) want |= featureMask(VirtioFeature.EVENT_IDX);
    const missing = want & ~offered;
    if (missing !== 0n) throw new Error(`the back-end does not offer features 0x${missing.toString(16)} (offered 0x${offered.toString(16)})`);
    this.features = want;

    if (hasFeature(want, VirtioFeature.PROTOCOL_FEATURES)) {
      const offeredProto = this.get(FrontendRequest.GET_PROTOCOL_FEATURES);
      this.offeredProtocolFeatures = offeredProto;
      this.protocolFeatures = offeredProto & featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.BACKEND_REQ);
      c.request(FrontendRequest.SET_PROTOCOL_FEATURES, { kind: 'u64', value: this.protocolFeatures });
      c.replyAck = hasFeature(this.protocolFeatures, ProtocolFeature.REPLY_ACK);
    }
    if (iommu && !hasFeature(this.protocolFeatures, ProtocolFeature.BACKEND_REQ)) {
      throw new Error('the back-end does not offer BACKEND_REQ: IOTLB misses would have no channel');
    }
    c.request(FrontendRequest.SET_OWNER);
    if (hasFeature(this.protocolFeatures, ProtocolFeature.BACKEND_REQ)) {
      const theirs = c.openBackendChannel();
      try {
        c.request(FrontendRequest.SET_BACKEND_REQ_FD, { kind: 'none' }, [theirs]);
      } finally {
        closeFd(theirs);
      }
    }
    c.request(FrontendRequest.SET_FEATURES, { kind: 'u64', value: want });
    c.request(FrontendRequest.SET_MEM_TABLE, {
      kind: 'memTable',
      regions: [{ guestAddr: 0n, size: BigInt(o.memoryBytes), userAddr: BigInt(o.uaddrBase), mmapOffset: 0n }],
    }, [this.memfd]);

    this.mapRingsAndPools();
    for (const r of [this.rx, this.tx]) {
      c.request(FrontendRequest.SET_VRING_NUM, { kind: 'vringState', index: r.index, num: o.queueSize });
      c.request(FrontendRequest.SET_VRING_BASE, { kind: 'vringState', index: r.index, num: 0 });
      c.request(FrontendRequest.SET_VRING_ADDR, {
        kind: 'vringAddr', index: r.index, flags: 0,
        descUser: BigInt(r.descDev), usedUser: BigInt(r.usedDev), availUser: BigInt(r.availDev), logGuest: 0n,
      });
      if (o.kicks === 'eventfd') {
        r.kickFd = eventfdCreate(0);
        c.request(FrontendRequest.SET_VRING_KICK, { kind: 'u64', value: BigInt(r.index) }, [r.kickFd]);
      } else {
        c.request(FrontendRequest.SET_VRING_KICK, { kind: 'u64', value: BigInt(r.index | VRING_NOFD_FLAG) });
      }
      r.callFd = eventfdCreate(0);
      c.request(FrontendRequest.SET_VRING_CALL, { kind: 'u64', value: BigInt(r.index) }, [r.callFd]);
      // We busy-poll the used rings: ask for no interrupts (Linux NAPI does the same while polling).
      if (o.eventIdx) r.driver.setUsedEvent(0x7fff);
      else r.driver.setNoInterrupt(true);
    }
    if (iommu && o.primeUsedRings) {
      // QEMU vhost_dev_start(): vhost_device_iotlb_miss(used_phys) for every ring.
      for (const r of [this.rx, this.tx]) this.answerMiss(r.usedDev, IotlbPerm.RW);
    }
    if (hasFeature(want, VirtioFeature.PROTOCOL_FEATURES)) {
      for (const r of [this.rx, this.tx]) c.request(FrontendRequest.SET_VRING_ENABLE, { kind: 'vringState', index: r.index, num: 1 });
    }
    this.started = true;
    if (o.rxAutoRefill) this.refillRx();
    this.flush();
    this.service();
  }

  private get(request: number): bigint {
    const body = this.conn.request(request);
    if (body === null || body.kind !== 'u64') throw new Error(`${FrontendRequest[request]}: unexpected reply ${body?.kind}`);
    return body.value;
  }

  /** Maps rings and pools in the IOMMU (static: everything; dynamic: the rings only) and sets ring addresses. */
  private mapRingsAndPools(): void {
    const o = this.opts;
    const mmu = this.iommu;
    for (const r of [this.rx, this.tx]) {
      const l = r.layout;
      if (o.iommu === 'dynamic') {
        // dma_alloc_coherent(): one allocation for the ring, bidirectional.
        const bytes = Math.ceil((l.end - l.descAddr) / PAGE_4K) * PAGE_4K;
        r.ringPages = bytes / PAGE_4K;
        r.ringIova = mmu!.allocIova(r.ringPages);
        this.mapPages(r.ringIova, l.descAddr, bytes, IotlbPerm.RW);
        r.descDev = r.ringIova;
        r.availDev = r.ringIova + (l.availAddr - l.descAddr);
        r.usedDev = r.ringIova + (l.usedAddr - l.descAddr);
      } else {
        r.descDev = this.ringAddr(l.descAddr);
        r.availDev = this.ringAddr(l.availAddr);
        r.usedDev = this.ringAddr(l.usedAddr);
      }
    }
    if (o.iommu !== 'static') return;
    const p = o.pageSize;
    if (p === PAGE_1G) {
      // One page holds everything: it must be RW (the used rings and RX buffers are in it).
      this.mapPages(this.staticIova(0), 0, PAGE_1G, IotlbPerm.RW);
      return;
    }
    if (p === PAGE_4K && o.ringPerms === 'split') {
      // Per page: desc + avail read-only, used read-write, as a careful guest would.
      for (const r of [this.rx, this.tx]) {
        const l = r.layout;
        const usedPage = Math.floor(l.usedAddr / PAGE_4K) * PAGE_4K;
        this.mapPages(this.staticIova(l.descAddr), l.descAddr, usedPage - l.descAddr, IotlbPerm.RO);
        const end = Math.ceil(l.end / PAGE_4K) * PAGE_4K;
        this.mapPages(this.staticIova(usedPage), usedPage, end - usedPage, IotlbPerm.RW);
      }
    } else {
      this.mapPages(this.staticIova(0), 0, Math.ceil(this.ringsEnd / p) * p, IotlbPerm.RW);
    }
    this.mapPages(this.staticIova(this.tx.poolGpa), this.tx.poolGpa, this.tx.poolBytes, o.txPerm);
    this.mapPages(this.staticIova(this.rx.poolGpa), this.rx.poolGpa, this.rx.poolBytes, o.rxPerm);
  }

  // ---------------------------------------------------------------- IOMMU operations

  /** Maps [iova, iova+size) -> gpa in the IOMMU (no message: the device learns by missing) and answers deferred misses it covers. */
  mapPages(iova: number, gpa: number, size: number, perm: number): void {
    const mmu = this.iommu!;
    mmu.map(iova, gpa, size, perm);
    if (this.deferred.size !== 0) this.answerDeferred(iova, size);
  }

  private answerDeferred(iova: number, size: number): void {
    const p = this.iommu!.pageSize;
    const first = Math.floor(iova / p);
    const last = Math.floor((iova + size - 1) / p);
    for (let pn = first; pn <= last; pn++) {
      const perm = this.deferred.get(pn);
      if (perm === undefined) continue;
      this.deferred.delete(pn);
      if (this.started) this.answerMiss(pn * p, perm);
    }
  }

  /**
   * Unmaps [iova, iova+size) in the IOMMU and invalidates it in the device IOTLB
   * (IOTLB_MSG INVALIDATE; with REPLY_ACK, waits for the ack — the device must not use
   * the range once this returns).
   */
  unmapPages(iova: number, size: number): void {
    this.iommu!.unmap(iova, size);
    this.invalidate(iova, size);
  }

  invalidate(iova: number, size: number): void {
    this.stats.invalidatesSent++;
    this.conn.request(FrontendRequest.IOTLB_MSG, { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE });
    this.service();
  }

  /** Sends an UPDATE for the IOMMU page holding iova, as QEMU answers a miss; defers it if unmapped. */
  answerMiss(iova: number, perm: number): void {
    const mmu = this.iommu!;
    const t = this.tr;
    if (!mmu.translate(iova, t)) {
      // QEMU reports "Fail to lookup the translated address" and sends nothing. We remember
      // it and answer once a mapping covers it, or the device would wait forever (its
      // pending-miss list does not send the same miss twice).
      this.deferred.set(Math.floor(iova / mmu.pageSize), perm);
      this.stats.missesDeferred++;
      return;
    }
    const size = Math.min(mmu.pageSize, this.memoryBytes - t.pageGpa);
    this.sendUpdate(t.pageIova, size, this.opts.uaddrBase + t.pageGpa, t.perm);
  }

  sendUpdate(iova: number, size: number, uaddr: number, perm: number): void {
    this.stats.updatesSent++;
    const body: Body = { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: BigInt(uaddr), perm, iotlbType: IotlbType.UPDATE };
    if (this.heldUpdates !== null) this.heldUpdates.push(body);
    else this.conn.request(FrontendRequest.IOTLB_MSG, body);
  }

  /** Handles every queued back-end request (misses), including those arriving while answering. */
  service(): number {
    const c = this.conn;
    c.pollBackend();
    if (this.opts.missReplies === 'pipelined' && c.backendPending > 1) return this.servicePipelined();
    let n = 0;
    for (let msg = c.nextBackendRequest(); msg !== undefined; msg = c.nextBackendRequest()) {
      n++;
      this.handleBackendRequest(msg);
      if (c.backendPending === 0) c.pollBackend();
    }
    return n;
  }

  /** service() for several requests at once (missReplies 'pipelined'): UPDATEs back to back, then their acks. */
  private servicePipelined(): number {
    const c = this.conn;
    const held: Body[] = [];
    let n = 0;
    this.heldUpdates = held;
    try {
      for (let msg = c.nextBackendRequest(); msg !== undefined; msg = c.nextBackendRequest()) {
        n++;
        this.handleBackendRequest(msg);
        if (c.backendPending === 0) c.pollBackend();
      }
    } finally {
      this.heldUpdates = null;
    }
    c.requestMany(FrontendRequest.IOTLB_MSG, held);
    // Misses that came in while the acks were collected are queued: answer them too.
    if (c.backendPending > 0) n += this.service();
    return n;
  }

  /** One back-end request: a miss is answered (or deferred), an ACCESS_FAIL recorded; replies if asked. */
  private handleBackendRequest(msg: VhostMessage): void {
    let result = 0n;
    if (msg.request === BackendRequest.IOTLB_MSG && msg.body.kind === 'iotlb') {
      const iova = Number(msg.body.iova);
      if (msg.body.iotlbType === IotlbType.MISS) {
        this.stats.missesReceived++;
        if (this.iommu !== null) this.answerMiss(iova, msg.body.perm);
      } else if (msg.body.iotlbType === IotlbType.ACCESS_FAIL) {
        this.stats.accessFails++;
        this.accessFails.push({ iova, perm: msg.body.perm });
      } else {
        result = 1n;
      }
    } else {
      result = 1n;
    }
    this.conn.replyBackend(msg, result);
  }

  /** Dynamic mode: dma_map_single() — allocate an IOVA, map the buffer's pages. Returns the IOVA of gpa. */
  dmaMap(gpa: number, len: number, perm: number): number {
    const mmu = this.iommu!;
    const off = gpa % PAGE_4K;
    const pages = mmu.pagesFor(off, len);
    const base = mmu.allocIova(pages);
    this.mapPages(base, gpa - off, pages * PAGE_4K, perm);
    this.lastMapBase = base;
    this.lastMapPages = pages;
    return base + off;
  }

  /** Dynamic mode: dma_unmap_single() with a strict IOMMU — unmap, invalidate (wait for the ack), free the IOVA. */
  private dmaUnmap(r: DriverRing, head: number): void {
    const mmu = this.iommu!;
    const base = r.headIova[head];
    const pages = r.headPages[head];
    let alloc = 1;
    while (alloc < pages) alloc <<= 1;
    this.unmapPages(base, alloc * PAGE_4K);
    mmu.freeIova(base, pages);
  }

  // ---------------------------------------------------------------- data path

  /** Writes header + frame into a free TX slot and posts it (not yet published: call flush()). False if full. */
  txSend(frame: Uint8Array, offset = 0, len = frame.length - offset): boolean {
    const slot = this.takeTxSlot();
    if (slot < 0) return false;
    this.memory.set(frame.subarray(offset, offset + len), this.slotGpa(this.tx, slot) + HDR);
    return this.postTxSlot(slot, HDR + len);
  }

  /** Lets `write(memory, offset)` fill a frame of `len` bytes in place, then posts it. */
  txSendWith(len: number, write: (memory: Uint8Array, offset: number) => void): boolean {
    const slot = this.takeTxSlot();
    if (slot < 0) return false;
    write(this.memory, this.slotGpa(this.tx, slot) + HDR);
    return this.postTxSlot(slot, HDR + len);
  }

  /** Takes a free TX slot and zeroes its virtio-net header; -1 if the pool or the ring is full. */
  private takeTxSlot(): number {
    const r = this.tx;
    if (r.freeCount === 0 || r.driver.freeCount === 0) return -1;
    const slot = r.takeSlot();
    const gpa = this.slotGpa(r, slot);
    const m = this.memory;
    for (let i = 0; i < HDR; i++) m[gpa + i] = 0;
    return slot;
  }

  /** Benchmarks: posts the next TX slot as is (prefillTx() wrote every slot once). */
  txPostPrefilled(len: number): boolean {
    const r = this.tx;
    if (r.freeCount === 0 || r.driver.freeCount === 0) return false;
    return this.postTxSlot(r.takeSlot(), HDR + len);
  }

  /** Writes header + frame into every TX slot (benchmarks). */
  prefillTx(frame: Uint8Array): void {
    for (let s = 0; s < this.tx.slots; s++) {
      const gpa = this.slotGpa(this.tx, s);
      this.memory.fill(0, gpa, gpa + HDR);
      this.memory.set(frame, gpa + HDR);
    }
    this.opts.canary = false; // slots no longer hold canary between uses
    this.txSaved = null;
  }

  private postTxSlot(slot: number, len: number): boolean {
    const r = this.tx;
    const gpa = this.slotGpa(r, slot);
    if (this.txSaved !== null) {
      const o = slot * this.opts.slotSize;
      this.txSaved.set(this.memory.subarray(gpa, gpa + len), o);
    }
    let addr: number;
    const d = r.driver;
    if (this.opts.iommu === 'dynamic') addr = this.dmaMap(gpa, len, this.opts.txPerm);
    else if (this.opts.iommu === 'static') addr = this.staticIova(gpa);
    else addr = gpa;
    const got = d.addBuffer(addr, len, false);
    r.headIova[got] = this.lastMapBase;
    r.headPages[got] = this.lastMapPages;
    r.headSlot[got] = slot;
    r.headLen[got] = len;
    this.stats.txPosted++;
    return true;
  }

  /** Posts raw TX buffers (device addresses) as one chain; returns the head or -1. The caller owns the memory. */
  txPostRaw(addrs: number[], lens: number[]): number {
    const head = this.tx.driver.addChain(addrs, lens, addrs.length);
    if (head >= 0) {
      this.tx.headSlot[head] = -2; // not a pool slot
      this.stats.txPosted++;
    }
    return head;
  }

  /** Posts a raw writable RX buffer (device address); returns the head or -1. */
  rxPostRaw(addr: number, len: number): number {
    const head = this.rx.driver.addBuffer(addr, len, true);
    if (head >= 0) {
      this.rx.headSlot[head] = -2;
      this.rx.headLen[head] = len;
      this.stats.rxPosted++;
    }
    return head;
  }

  /** Posts free RX slots until the ring or the pool is full. */
  refillRx(max = Infinity): number {
    const r = this.rx;
    const d = r.driver;
    const size = this.opts.slotSize;
    let n = 0;
    while (n < max && d.freeCount !== 0 && r.freeCount !== 0) {
      const slot = r.takeSlot();
      const gpa = this.slotGpa(r, slot);
      let addr: number;
      if (this.opts.iommu === 'dynamic') addr = this.dmaMap(gpa, size, this.opts.rxPerm);
      else if (this.opts.iommu === 'static') addr = this.staticIova(gpa);
      else addr = gpa;
      const got = d.addBuffer(addr, size, true);
      r.headIova[got] = this.lastMapBase;
      r.headPages[got] = this.lastMapPages;
      r.headSlot[got] = slot;
      r.headLen[got] = size;
      n++;
    }
    this.stats.rxPosted += n;
    return n;
  }

  /** Publishes both rings and kicks where the device asks for it. */
  flush(): void {
    this.flushRing(this.rx);
    this.flushRing(this.tx);
  }

  private flushRing(r: DriverRing): void {
    if (r.driver.publish() !== 0 && r.driver.needsKick() && r.kickFd >= 0) {
      eventfdWrite(r.kickFd, 1);
      this.stats.kicks++;
    }
  }

  /**
   * No back-end: sets the rings and pools up as start() would without an IOMMU, sending
   * nothing, so an in-process device (SplitQueue over `memory`) can drive them — used to
   * measure the front-end's own ceiling. Ring addresses are uaddrBase + gpa, buffers gpa.
   */
  static detached(opts: Omit<FrontendOptions, 'socket' | 'iommu'>): VhostUserFrontend {
    const [a, b] = socketPair();
    closeFd(b);
    const fe = new VhostUserFrontend(new VhostUserConnection(a), { ...opts, socket: '', iommu: 'off' });
    fe.mapRingsAndPools();
    fe.rx.driver.setNoInterrupt(true);
    fe.tx.driver.setNoInterrupt(true);
    fe.started = true;
    if (fe.opts.rxAutoRefill) fe.refillRx();
    fe.flush();
    return fe;
  }

  /** Reclaims completed TX buffers; returns how many. */
  reapTx(): number {
    const r = this.tx;
    const d = r.driver;
    let n = d.usedCount();
    const done = n;
    while (n-- > 0) {
      const head = d.takeUsed();
      const slot = r.headSlot[head];
      r.headSlot[head] = -1;
      this.stats.txCompleted++;
      if (slot === -2) continue;
      if (slot < 0) throw new Error(`TX used entry for head ${head}, which is not in flight`);
      if (this.opts.iommu === 'dynamic') this.dmaUnmap(r, head);
      if (this.txSaved !== null) this.checkTxSlot(slot, r.headLen[head]);
      r.putSlot(slot);
    }
    return done;
  }

  private checkTxSlot(slot: number, len: number): void {
    const gpa = this.slotGpa(this.tx, slot);
    const saved = this.txSaved!;
    const base = slot * this.opts.slotSize;
    const m = this.memory;
    for (let i = 0; i < len; i++) {
      if (m[gpa + i] !== saved[base + i]) {
        this.violations.push({ gpa: gpa + i, expected: saved[base + i], actual: m[gpa + i], where: `TX buffer (slot ${slot}) changed by the device` });
        break;
      }
    }
    const bad = this.canaryMismatch(gpa + len, gpa + this.opts.slotSize);
    if (bad >= 0) this.violation(bad, `TX slot ${slot} past its ${len} posted bytes`);
    this.fillCanary(gpa, gpa + len);
  }

  /**
   * Takes received frames: onFrame(bytes, offset, len) gets each frame (virtio-net header
   * stripped; MRG_RXBUF frames spread over several buffers are gathered into a scratch
   * buffer). The view is only valid during the call. Returns frames taken.
   */
  pollRx(onFrame?: (bytes: Uint8Array, offset: number, len: number) => void, max = Infinity): number {
    const r = this.rx;
    const d = r.driver;
    const m = this.memory;
    let avail = d.usedCount();
    let frames = 0;
    while (avail > 0 && frames < max) {
      const head = d.takeUsed();
      avail--;
      const len = d.lastLen;
      const slot = r.headSlot[head];
      r.headSlot[head] = -1;
      this.stats.rxBuffers++;
      if (slot === -1) throw new Error(`RX used entry for head ${head}, which is not in flight`);
      const gpa = slot >= 0 ? this.slotGpa(r, slot) : -1;
      if (slot >= 0 && this.opts.iommu === 'dynamic') this.dmaUnmap(r, head);
      let nbuf = 1;
      if (gpa >= 0 && this.opts.mergeableRx && len >= HDR) nbuf = m[gpa + 10] | (m[gpa + 11] << 8);
      if (gpa < 0) {
        frames++;
        continue;
      }
      if (nbuf <= 1) {
        if (onFrame && len >= HDR) onFrame(m, gpa + HDR, len - HDR);
        this.releaseRx(slot, gpa, len);
      } else {
        // Gather: this buffer and the next nbuf-1 used entries.
        let total = 0;
        const scratch = this.rxScratch;
        scratch.set(m.subarray(gpa + HDR, gpa + len), 0);
        total = len - HDR;
        this.releaseRx(slot, gpa, len);
        for (let k = 1; k < nbuf; k++) {
          if (avail === 0) {
            avail = d.usedCount();
            if (avail === 0) throw new Error('MRG_RXBUF frame announces more buffers than are used');
          }
          const h2 = d.takeUsed();
          avail--;
          const l2 = d.lastLen;
          const s2 = r.headSlot[h2];
          r.headSlot[h2] = -1;
          this.stats.rxBuffers++;
          const g2 = this.slotGpa(r, s2);
          if (this.opts.iommu === 'dynamic') this.dmaUnmap(r, h2);
          scratch.set(m.subarray(g2, g2 + l2), total);
          total += l2;
          this.releaseRx(s2, g2, l2);
        }
        if (onFrame) onFrame(scratch, 0, total);
      }
      frames++;
      this.stats.rxFrames++;
    }
    return frames;
  }

  private releaseRx(slot: number, gpa: number, len: number): void {
    if (this.opts.canary) {
      const bad = this.canaryMismatch(gpa + len, gpa + this.opts.slotSize);
      if (bad >= 0) this.violation(bad, `RX slot ${slot}: written past the used length ${len}`);
      this.fillCanary(gpa, gpa + len);
    }
    this.rx.putSlot(slot);
  }

  /**
   * One round of the driver: back-end requests (every 64 rounds, or when idle), TX
   * completions, received frames, RX refill, publish + kicks. Returns the work done.
   */
  poll(onFrame?: (bytes: Uint8Array, offset: number, len: number) => void): number {
    let work = this.reapTx();
    work += this.pollRx(onFrame);
    if (this.opts.rxAutoRefill) this.refillRx();
    // Static mappings miss only while the device learns them: reading the back-end channel
    // (a syscall) often once it has gone quiet would slow the loop that feeds the device —
    // an IOMMU cost of this single-threaded front-end (QEMU answers misses on another thread),
    // not of the device. So the interval grows while nothing arrives and snaps back on a
    // miss. Dynamic mappings miss on every buffer: read it whenever idle too.
    if (this.iommu !== null && ((++this.iter & this.backendPollMask) === 0 || (work === 0 && this.opts.iommu === 'dynamic'))) {
      this.stats.backendPolls++;
      const served = this.service();
      this.backendPollMask = served > 0 ? BACKEND_POLL_MIN : Math.min(this.backendPollMask * 2 + 1, BACKEND_POLL_MAX);
      work += served;
    }
    this.flush();
    return work;
  }

  /** Runs poll() until pred() holds; yields to the event loop now and then. Throws on timeout. */
  async runUntil(pred: () => boolean, timeoutMs = 10_000, onFrame?: (bytes: Uint8Array, offset: number, len: number) => void): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let idle = 0;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`front-end: condition not met within ${timeoutMs} ms (stats ${JSON.stringify(this.stats)})`);
      const w = this.poll(onFrame);
      if (w === 0) {
        if (++idle > 64) {
          this.conn.waitReadable(1);
          await new Promise((r) => setImmediate(r));
          idle = 0;
        }
      } else {
        idle = 0;
        if ((this.iter & 255) === 0) await new Promise((r) => setImmediate(r));
      }
    }
  }

  /** Runs poll() for `ms` milliseconds (async, yields). */
  async runFor(ms: number, onFrame?: (bytes: Uint8Array, offset: number, len: number) => void): Promise<void> {
    const end = Date.now() + ms;
    await this.runUntil(() => Date.now() >= end, ms + 1000, onFrame);
  }

  /** Guest-physical memory for special test buffers, after the pools (4 KiB aligned unless align says otherwise). */
  allocGuest(bytes: number, align = PAGE_4K): number {
    const gpa = Math.ceil(this.spareNext / align) * align;
    if (gpa + bytes > this.memoryBytes) throw new Error('guest memory exhausted');
    this.spareNext = gpa + bytes;
    return gpa;
  }

  /** The ring's device-visible IOVA range (desc .. end of used), for ring (in)validation tests. */
  ringIovaRange(r: DriverRing): { iova: number; gpa: number; size: number } {
    const l = r.layout;
    const size = Math.ceil((l.end - l.descAddr) / PAGE_4K) * PAGE_4K;
    return { iova: r.descDev, gpa: l.descAddr, size };
  }

  /** In-flight TX chains (posted, not yet used). */
  get txInFlight(): number {
    return this.opts.queueSize - this.tx.driver.freeCount;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.close();
    for (const r of [this.rx, this.tx]) {
      if (r.kickFd >= 0) closeFd(r.kickFd);
      if (r.callFd >= 0) closeFd(r.callFd);
      r.kickFd = r.callFd = -1;
    }
    unmap(this.memory.buffer as ArrayBuffer);
    closeFd(this.memfd);
  }
}

export { PAGE_4K, PAGE_2M, PAGE_1G };
export type { DriverRing };

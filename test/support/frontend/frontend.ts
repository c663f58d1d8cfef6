/**
 * A vhost-user-net FRONT-END for tests and benchmarks: what QEMU plus a guest driver do,
 * in one process, against a real back-end (serve, or DPDK's vhost PMD). This class is the
 * facade: it builds the parts below, runs start() and the poll loop, and forwards the rest.
 *
 *  - options.ts: options and defaults.
 *  - guest-memory.ts: one memfd shared with SET_MEM_TABLE as guest-physical [0, size) at a
 *    fake front-end virtual address (uaddrBase); where rings, pools and test buffers live.
 *  - handshake.ts: negotiation and ring set-up, in QEMU's order.
 *  - dma.ts + iommu.ts: the emulated IOMMU — 'static' maps rings and pools once with 4K, 2M
 *    or 1G pages (a DPDK guest with VFIO); 'dynamic' maps each buffer before posting it and
 *    unmaps it when the device is done (a Linux guest with a strict IOMMU).
 *  - iotlb-service.ts: device-IOTLB misses answered like QEMU, INVALIDATEs, ACCESS_FAILs.
 *  - vring.ts, buffer-pool.ts, split-driver.ts: two split rings (RX = vring 0, TX = vring 1),
 *    each with a pool of buffer slots.
 *  - datapath.ts: frames through the pools; canaries.ts checks every buffer the device returns.
 *  - dirty-log.ts: with the dirtyLog option, a migration's dirty log (SET_LOG_BASE, LOG_ALL,
 *    VHOST_VRING_F_LOG), switched on by start(); syncDirtyLog() reads and clears it.
 *
 * The data path (txSend* / txPost* / poll) allocates nothing; in 'static' mode it makes no syscall
 * except kicks the device asks for and a periodic non-blocking read of the back-end channel.
 */
import { IotlbPerm } from '../../../src/protocol/index.js';
import { closeFd, socketPair } from '../../../src/sys/index.js';
import { BufferPool } from './buffer-pool.js';
import { Canaries, type CanaryViolation } from './canaries.js';
import { VhostUserConnection } from './connection.js';
import { Datapath, type DatapathStats, type FrameHandler } from './datapath.js';
import { FrontendDirtyLog } from './dirty-log.js';
import { Dma } from './dma.js';
import { SharedGuestMemory } from './guest-memory.js';
import { enableRing, negotiate, setLogBase, setLogging, setUpRing, type Negotiated } from './handshake.js';
import { EmulatedIommu, PAGE_4K } from './iommu.js';
import { IotlbService, type IotlbStats } from './iotlb-service.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, resolveOptions, type FrontendOptions, type ResolvedFrontendOptions } from './options.js';
import { DriverRing } from './vring.js';

export type { FrontendOptions, IommuMode } from './options.js';
export { canaryByte, type CanaryViolation } from './canaries.js';
export type { DriverRing } from './vring.js';

export const RX_VRING = 0;
export const TX_VRING = 1;
/** poll() reads the back-end channel every 64 polls while misses come, every 4096 at most when quiet (masks). */
const BACKEND_POLL_MIN = 63;
const BACKEND_POLL_MAX = 4095;

export interface FrontendStats extends DatapathStats, IotlbStats {
  backendPolls: number;
}

export class VhostUserFrontend {
  readonly opts: ResolvedFrontendOptions;
  readonly conn: VhostUserConnection;
  /** Host view of guest-physical [0, memoryBytes). */
  readonly memory: Uint8Array;
  readonly memoryBytes: number;
  readonly iommu: EmulatedIommu | null;
  readonly rx: DriverRing;
  readonly tx: DriverRing;
  readonly stats: FrontendStats = {
    txPosted: 0, txCompleted: 0, rxPosted: 0, rxFrames: 0, rxBuffers: 0, kicks: 0, missesReceived: 0, updatesSent: 0,
    missesDeferred: 0, invalidatesSent: 0, accessFails: 0, backendPolls: 0, soloUpdates: 0, updateAckMs: 0, invalidateAckMs: 0,
  };
  /** ACCESS_FAIL messages the back-end sent: [iova, perm]. */
  readonly accessFails: Array<{ iova: number; perm: number }>;
  private readonly guest: SharedGuestMemory;
  private readonly canaries: Canaries;
  private readonly iotlb: IotlbService;
  private readonly dma: Dma;
  private readonly datapath: Datapath;
  /** The dirty log once setDirtyLogging(true) made one (dirtyLog option: start()). */
  private log: FrontendDirtyLog | null = null;
  private negotiated: Negotiated | null = null;
  private iter = 0;
  private backendPollMask = BACKEND_POLL_MIN;
  private closed = false;

  private constructor(conn: VhostUserConnection, opts: FrontendOptions) {
    const o = (this.opts = resolveOptions(opts));
    this.conn = conn;
    this.iommu = o.iommu === 'off' ? null : new EmulatedIommu(o.pageSize);
    const guest = (this.guest = new SharedGuestMemory(o));
    try {
      this.memory = guest.bytes;
      this.memoryBytes = guest.size;
      this.canaries = new Canaries(guest.bytes, o.canary, o.slotSize, o.txSlots);
      this.rx = new DriverRing(RX_VRING, guest.rxRing, new BufferPool(guest.rxPool, o.rxSlots, o.slotSize), guest.bytes, o.queueSize, o.eventIdx);
      this.tx = new DriverRing(TX_VRING, guest.txRing, new BufferPool(guest.txPool, o.txSlots, o.slotSize), guest.bytes, o.queueSize, o.eventIdx);
      this.iotlb = new IotlbService(conn, this.iommu, o, this.stats);
      this.accessFails = this.iotlb.accessFails;
      this.dma = new Dma(this.iommu, this.iotlb, o);
      this.datapath = new Datapath(guest.bytes, this.rx, this.tx, this.dma, this.canaries, o, this.stats);
    } catch (err) {
      guest.close();
      throw err;
    }
  }

  /** Connects to the back-end's socket (retrying until it listens). Call start() next. */
  static async connect(opts: FrontendOptions): Promise<VhostUserFrontend> {
    const conn = await VhostUserConnection.connect(opts.socket, opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS);
    try {
      return new VhostUserFrontend(conn, opts);
    } catch (err) {
      conn.close();
      throw err;
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
    fe.dma.mapRingsAndPools(fe.rx, fe.tx, fe.guest.ringsEnd);
    fe.rx.driver.setNoInterrupt(true);
    fe.tx.driver.setNoInterrupt(true);
    if (fe.opts.rxAutoRefill) fe.refillRx();
    fe.flush();
    return fe;
  }

  /** Negotiates, shares memory, sets both rings up and enables them. */
  start(): void {
    const c = this.conn;
    const rings = [this.rx, this.tx];
    const negotiated = (this.negotiated = negotiate(c, this.opts, this.guest.memfd));
    this.dma.mapRingsAndPools(this.rx, this.tx, this.guest.ringsEnd);
    for (const r of rings) setUpRing(c, this.opts, r);
    if (this.iommu !== null && this.opts.primeUsedRings) {
      // QEMU vhost_dev_start(): vhost_device_iotlb_miss(used_phys) for every ring.
      for (const r of rings) this.iotlb.answerMiss(r.usedDev, IotlbPerm.RW);
    }
    for (const r of rings) enableRing(c, negotiated, r);
    // A migration starting on a running device, as QEMU sends it.
    if (this.opts.dirtyLog) this.setDirtyLogging(true);
    if (this.opts.rxAutoRefill) this.refillRx();
    this.flush();
    this.service();
  }

  // ---------------------------------------------------------------- poll loop

  /**
   * One round of the driver: back-end requests (every 64 rounds, or when idle), TX
   * completions, received frames, RX refill, publish + kicks. Returns the work done.
   */
  poll(onFrame?: FrameHandler): number {
    const dp = this.datapath;
    let work = dp.reapTx();
    work += dp.pollRx(onFrame, Infinity);
    if (this.opts.rxAutoRefill) dp.refillRx(Infinity);
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
    dp.flush();
    return work;
  }

  /** Runs poll() until pred() holds; yields to the event loop now and then. Throws on timeout. */
  async runUntil(pred: () => boolean, timeoutMs = 10_000, onFrame?: FrameHandler): Promise<void> {
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

  /**
   * Keeps the front-end serving (polling, answering misses) until `p` settles, e.g. while a
   * back-end comes up and needs its rings translated first; returns p's value or throws its error.
   */
  async serveUntil<T>(p: Promise<T>): Promise<T> {
    let settled = false;
    p.then(() => (settled = true), () => (settled = true));
    await this.runUntil(() => settled, Infinity);
    return p;
  }

  /** Runs poll() for `ms` milliseconds (async, yields). */
  async runFor(ms: number, onFrame?: FrameHandler): Promise<void> {
    const end = Date.now() + ms;
    await this.runUntil(() => Date.now() >= end, ms + 1000, onFrame);
  }

  // ---------------------------------------------------------------- data path (datapath.ts)

  /** Writes header + frame into a free TX slot and posts it (not yet published: call flush()). False if full. */
  txSend(frame: Uint8Array, offset = 0, len = frame.length - offset): boolean {
    return this.datapath.txSend(frame, offset, len);
  }

  /** Lets `write(memory, offset)` fill a frame of `len` bytes in place, then posts it. */
  txSendWith(len: number, write: (memory: Uint8Array, offset: number) => void): boolean {
    return this.datapath.txSendWith(len, write);
  }

  /** Benchmarks: posts the next TX slot as is (prefillTx() wrote every slot once). */
  txPostPrefilled(len: number): boolean {
    return this.datapath.txPostPrefilled(len);
  }

  /** Writes header + frame into every TX slot (benchmarks); buffers are no longer canary-checked. */
  prefillTx(frame: Uint8Array): void {
    this.datapath.prefillTx(frame);
  }

  /** Posts raw TX buffers (device addresses) as one chain; returns the head or -1. The caller owns the memory. */
  txPostRaw(addrs: number[], lens: number[]): number {
    return this.datapath.txPostRaw(addrs, lens);
  }

  /** Posts a raw writable RX buffer (device address); returns the head or -1. */
  rxPostRaw(addr: number, len: number): number {
    return this.datapath.rxPostRaw(addr, len);
  }

  /** Posts free RX slots until the ring or the pool is full. */
  refillRx(max = Infinity): number {
    return this.datapath.refillRx(max);
  }

  /** Publishes both rings and kicks where the device asks for it. */
  flush(): void {
    this.datapath.flush();
  }

  /** Reclaims completed TX buffers; returns how many. */
  reapTx(): number {
    return this.datapath.reapTx();
  }

  /** Takes received frames (see Datapath.pollRx: header stripped, MRG_RXBUF gathered; the view is valid during the call). */
  pollRx(onFrame?: FrameHandler, max = Infinity): number {
    return this.datapath.pollRx(onFrame, max);
  }

  /** In-flight TX chains (posted, not yet used). */
  get txInFlight(): number {
    return this.opts.queueSize - this.tx.driver.freeCount;
  }

  // ---------------------------------------------------------------- memory, IOMMU, device IOTLB

  slotGpa(r: DriverRing, slot: number): number {
    return r.pool.slotGpa(slot);
  }

  /** Guest-physical memory for special test buffers, after the pools (4 KiB aligned unless align says otherwise). */
  allocGuest(bytes: number, align = PAGE_4K): number {
    return this.guest.allocGuest(bytes, align);
  }

  /** The ring's device-visible IOVA range (desc .. end of used), for ring (in)validation tests. */
  ringIovaRange(r: DriverRing): { iova: number; gpa: number; size: number } {
    return r.iovaRange();
  }

  staticIova(gpa: number): number {
    return this.dma.staticIova(gpa);
  }

  /** Maps [iova, iova+size) -> gpa in the IOMMU (no message: the device learns by missing) and answers deferred misses it covers. */
  mapPages(iova: number, gpa: number, size: number, perm: number): void {
    this.dma.mapPages(iova, gpa, size, perm);
  }

  /** Unmaps [iova, iova+size) in the IOMMU and invalidates it in the device IOTLB (waits for the ack). */
  unmapPages(iova: number, size: number): void {
    this.dma.unmapPages(iova, size);
  }

  /** Dynamic mode: dma_map_single() — allocate an IOVA, map the buffer's pages. Returns the IOVA of gpa. */
  dmaMap(gpa: number, len: number, perm: number): number {
    return this.dma.dmaMap(gpa, len, perm);
  }

  /** IOTLB_MSG INVALIDATE (waits for the ack), without touching the IOMMU. */
  invalidate(iova: number, size: number): void {
    this.iotlb.invalidate(iova, size);
  }

  /** Sends an UPDATE for the IOMMU page holding iova, as QEMU answers a miss; defers it if unmapped. */
  answerMiss(iova: number, perm: number): void {
    this.iotlb.answerMiss(iova, perm);
  }

  sendUpdate(iova: number, size: number, uaddr: number, perm: number): void {
    this.iotlb.sendUpdate(iova, size, uaddr, perm);
  }

  /** Handles every queued back-end request (misses), including those arriving while answering. */
  service(): number {
    return this.iotlb.service();
  }

  // ---------------------------------------------------------------- dirty logging (dirty-log.ts)

  /**
   * Migration start (true) or end (false), on a started device negotiated with the dirtyLog
   * option: the first time SET_LOG_BASE with a memfd log of one bit per 4 KiB page of guest
   * memory, then SET_FEATURES with / without LOG_ALL and SET_VRING_ADDR with / without
   * VHOST_VRING_F_LOG (log_guest_addr = the used ring's guest-physical address) for both rings.
   */
  setDirtyLogging(on: boolean): void {
    if (this.negotiated === null) throw new Error('setDirtyLogging: start() first');
    if (!this.opts.dirtyLog) throw new Error('setDirtyLogging: needs the dirtyLog option (LOG_SHMFD is negotiated with it)');
    if (on && this.log === null) {
      const log = new FrontendDirtyLog(this.memoryBytes);
      try {
        setLogBase(this.conn, log);
      } catch (err) {
        log.close();
        throw err;
      }
      this.log = log;
    }
    this.negotiated = setLogging(this.conn, this.negotiated, [this.rx, this.tx], on);
  }

  /** The dirty log (null until logging was first switched on). */
  get dirtyLog(): FrontendDirtyLog | null {
    return this.log;
  }

  /** Reads and clears the dirty bitmap (a migration's sync); pages marked since the last sync (0 without a log). */
  syncDirtyLog(): number {
    return this.log === null ? 0 : this.log.sync();
  }

  // ---------------------------------------------------------------- canaries (canaries.ts)

  fillCanary(start: number, end: number): void {
    this.canaries.fill(start, end);
  }

  /** First address in [start, end) that is not canary, or -1. */
  canaryMismatch(start: number, end: number): number {
    return this.canaries.mismatch(start, end);
  }

  /** Excludes [start, end) from verifyCanary() (a test buffer whose contents are checked otherwise). */
  canaryHole(start: number, end: number): void {
    this.canaries.hole(start, end);
  }

  /**
   * Checks every byte of guest memory outside the rings, the buffers still posted and the
   * declared holes: all must still be canary. Returns the violations (also those recorded
   * while running).
   */
  verifyCanary(): CanaryViolation[] {
    const skip: Array<[number, number]> = [[0, this.guest.ringsEnd]];
    this.rx.postedSlotRanges(skip);
    this.tx.postedSlotRanges(skip);
    return this.canaries.verify(skip);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn.close();
    this.rx.closeFds();
    this.tx.closeFds();
    this.guest.close();
    this.log?.close();
  }
}

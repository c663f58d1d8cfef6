/**
 * The vhost-user-net device: negotiated state, vrings, memory, and the queue-pair workers
 * that run the data path. Handlers (handlers.ts) change this state; `reconcile` turns the
 * state into worker commands, so "when does a ring run" is decided in one place.
 */
import { availableParallelism } from 'node:os';
import { hasFeature, NetFeature, VirtioFeature } from '../protocol/features.js';
import { closeFd, setInterfaceMtu } from '../sys/index.js';
import { announceOnTap } from '../net/announce.js';
import { DEFAULT_BUSY_POLL_US, type NetMode, type QueueSnapshot, type RegionConfig } from '../datapath/contract.js';
import { IotlbOp } from '../datapath/iotlb-ring.js';
import { QueuePairHost } from '../datapath/queue-pair-host.js';
import type { SocketReturn } from '../datapath/iotlb-fast-path.js';
import { RING_COUNTERS, type RingCounterName } from '../datapath/stats.js';
import { LatencyHistogram } from '../stats/latency.js';
import { IotlbType } from '../protocol/index.js';
import { getStrategy } from '../iotlb/registry.js';
import { RX_OFFLOAD_FEATURES, TX_OFFLOAD_FEATURES, tunOffloadsOf, txOffloadsOf } from '../net/offloads.js';
import type { IotlbStrategy } from '../iotlb/strategy.js';
import { DeviceError } from './errors.js';
import { MemoryTable } from './memory-table.js';
import { MAX_MEM_SLOTS, OFFERED_FEATURES, OFFERED_PROTOCOL_FEATURES, TAP_FEATURES, TAP_PROTOCOL_FEATURES } from './offered-features.js';
import { VringState } from './vring-state.js';
import { DirtyLogBase } from './dirty-log-base.js';
import type { TraceWriter } from '../trace/writer.js';

/**
 * Which thread reads IOTLB UPDATE/INVALIDATE requests while the rings run. `worker`: the
 * queue-pair worker, from the socket the session lends it (datapath/iotlb-fast-path.ts):
 * no hop between threads, which matters when they share a CPU. `control`: the session on the
 * main thread, as every other request. `auto`: worker when serve has fewer CPUs than
 * threads that poll, else control (measured both ways in docs/performance.md).
 */
export const IOTLB_READERS = ['auto', 'worker', 'control'] as const;
export type IotlbReader = (typeof IOTLB_READERS)[number];

export interface DeviceOptions {
  queuePairs: number;
  net: NetMode;
  strategy: string;
  batchMisses: boolean;
  prefetch: number;
  /** WorkerSetup.forgetAfterBurst (serve --iotlb-reuse per-burst). */
  forgetAfterBurst?: boolean;
  /** WorkerSetup.busyPollUs; undefined: DEFAULT_BUSY_POLL_US with a CPU per worker, else 0. */
  busyPollUs?: number;
  /** Default auto. */
  iotlbReader?: IotlbReader;
  /** Record translations (with the server's trace writer) — set per connection by the session. */
  traceTranslations: boolean;
  log(level: string, text: string): void;
}

export class NetDevice {
  features = 0n;
  featuresSet = false;
  protocolFeatures = 0n;
  owner = false;
  status = 0;
  backendFd = -1;
  /** Where workers record translations for the current connection (set by the session). */
  traceTarget: { writer: TraceWriter; connection: number } | null = null;
  readonly memory = new MemoryTable(MAX_MEM_SLOTS);
  readonly vrings: VringState[];
  private readonly pairs = new Map<number, QueuePairHost>();
  private readonly pastCounters = new Map<number, Record<RingCounterName, number>>();
  private readonly pastMissLatency = new Map<number, LatencyHistogram>();
  /** IOTLB request read -> its ack sent by the session, over the life of this device (inspect). */
  private readonly sessionAcks = { update: new LatencyHistogram(), invalidate: new LatencyHistogram() };
  /** The same for requests workers acknowledged from a lent socket, of workers that finished. */
  private readonly pastWorkerAcks = { update: new LatencyHistogram(), invalidate: new LatencyHistogram() };
  /**
   * Every live IOTLB mapping, kept on the main thread so a worker started later is seeded
   * with what the front-end already sent, and so `inspect` can show the device's view.
   */
  readonly iotlbShadow: IotlbStrategy = getStrategy('interval').create({ capacity: 1 << 20 });
  /** Where workers report what they applied from a lent socket. */
  private readonly shadowSink = {
    update: (iova: number, size: number, uaddr: number, perm: number) => this.iotlbShadow.insert({ iova, size, uaddr, perm }),
    invalidate: (iova: number, size: number) => this.iotlbShadow.invalidate(iova, size),
  };

  constructor(readonly options: DeviceOptions) {
    this.vrings = Array.from({ length: options.queuePairs * 2 }, (_, i) => new VringState(i));
    this.sharesCpu = availableParallelism() <= options.queuePairs;
  }

  get offeredFeatures(): bigint {
    let offered = this.options.queuePairs > 1 ? OFFERED_FEATURES : OFFERED_FEATURES & ~(1n << BigInt(NetFeature.MQ));
    // Only a tap passes headers between the guest and the kernel, which segments and checksums;
    // other endpoints would have to do that work themselves, so they do not offer it.
    if (this.options.net.kind === 'tap') offered |= TX_OFFLOAD_FEATURES | RX_OFFLOAD_FEATURES | TAP_FEATURES;
    return offered;
  }

  get offeredProtocolFeatures(): bigint {
    return this.options.net.kind === 'tap' ? OFFERED_PROTOCOL_FEATURES | TAP_PROTOCOL_FEATURES : OFFERED_PROTOCOL_FEATURES;
  }

  /** SET_LOG_BASE's log; workers mark it while LOG_ALL is negotiated (a migration). */
  readonly dirtyLog = new DirtyLogBase();
  /** What workers were last told to log into (null: nothing). */
  private loggingTo: DirtyLogBase['config'] = null;
  /** SET_LOG_FD's eventfd, kept until replaced or the connection ends. */
  private logFd = -1;

  /** Pages are logged while LOG_ALL is negotiated and a log is set. */
  get logging(): boolean {
    return this.has(VirtioFeature.LOG_ALL) && this.dirtyLog.config !== null;
  }

  /** SET_LOG_BASE: checks the new log, moves every worker onto it, then lets the old one go. */
  async setDirtyLog(fd: number, size: bigint, offset: bigint): Promise<void> {
    const guestEnd = Math.max(0, ...this.memory.regions.map((r) => r.guestAddr + r.size));
    let previous;
    try {
      previous = this.dirtyLog.replace(fd, size, offset, guestEnd);
    } catch (err) {
      this.closeQuietly(fd);
      throw err;
    }
    await this.applyDirtyLog();
    if (previous !== null) this.closeQuietly(previous.fd);
  }

  setLogFd(fd: number): void {
    if (this.logFd >= 0) this.closeQuietly(this.logFd);
    this.logFd = fd;
  }

  /** Tells every worker to log (or stop) when that changed; resolves once all have. */
  async applyDirtyLog(): Promise<void> {
    const target = this.logging ? this.dirtyLog.config : null;
    if (target === this.loggingTo) return;
    this.loggingTo = target;
    for (const pair of this.pairs.values()) await pair.setDirtyLog(target);
    this.options.log('info', target === null
      ? 'dirty-page logging off'
      : `dirty-page logging on: ${target.size}-byte log, writes into guest memory marked (migration)`);
  }

  /** The MTU the front-end gave the guest (NET_SET_MTU), applied to the tap; null: never set. */
  mtu: number | null = null;

  setMtu(mtu: number): void {
    if (this.options.net.kind !== 'tap') throw new DeviceError('NET_SET_MTU: only a tap has an MTU to set');
    try {
      setInterfaceMtu(this.options.net.name, mtu);
    } catch (err) {
      throw new DeviceError(`NET_SET_MTU ${mtu}: the tap ${this.options.net.name} refused it: ${(err as Error).message}`);
    }
    this.mtu = mtu;
    this.options.log('info', `MTU ${mtu} (tap ${this.options.net.name})`);
  }

  /** SEND_RARP: a RARP from the guest's MAC into the tap, as if the guest had sent it. */
  announce(payload: bigint): void {
    if (this.options.net.kind !== 'tap') throw new DeviceError('SEND_RARP: only a tap has a network to announce to');
    try {
      announceOnTap(this.options.net.fds[0]!, payload);
    } catch (err) {
      throw new DeviceError(`SEND_RARP: the tap refused the frame: ${(err as Error).message}`);
    }
  }

  has(bit: number): boolean {
    return hasFeature(this.features, bit);
  }

  hasProtocol(bit: number): boolean {
    return hasFeature(this.protocolFeatures, bit);
  }

  /**
   * Said once per negotiation: no message tells a back-end which guests flush lazily, so the
   * log names what the reuse mode means for one (docs/peers.md).
   */
  iommuNegotiated(): void {
    this.options.log('info', this.options.forgetAfterBurst
      ? 'IOMMU negotiated: translations forgotten after every burst that returned buffers (--iotlb-reuse per-burst)'
      : 'IOMMU negotiated: translations kept until invalidated; a Linux guest in its default lazy IOMMU mode needs --iotlb-reuse per-burst (or iommu.strict=1)');
  }

  get iommu(): boolean {
    return this.has(VirtioFeature.ACCESS_PLATFORM);
  }

  /** VIRTIO_F_RING_PACKED negotiated: packed virtqueues. */
  get packed(): boolean {
    return this.has(VirtioFeature.RING_PACKED);
  }

  vring(index: number, request: string): VringState {
    // The whole 32-bit value is checked: DPDK once truncated it first (CVE-2020-10723).
    if (!Number.isInteger(index) || index < 0 || index >= this.vrings.length) {
      throw new DeviceError(`${request}: vring index ${index} out of range (device has ${this.vrings.length} vrings)`);
    }
    return this.vrings[index];
  }

  private regionConfigs(): RegionConfig[] {
    return this.memory.regions.map(({ fd, guestAddr, userAddr, size, mmapOffset }) => ({ fd, guestAddr, userAddr, size, mmapOffset }));
  }

  /** One CPU per polling worker plus one for the control thread, or they take turns (CPUs counted once: a syscall). */
  private readonly sharesCpu: boolean;

  private async pairFor(index: number): Promise<QueuePairHost> {
    const pairIndex = index >> 1;
    let pair = this.pairs.get(pairIndex);
    if (pair) return pair;
    const sharesCpu = this.sharesCpu;
    pair = new QueuePairHost({
      pairIndex,
      net: this.options.net,
      iommu: this.iommu,
      eventIdx: this.has(VirtioFeature.EVENT_IDX),
      packed: this.packed,
      mergeableRx: this.has(NetFeature.MRG_RXBUF),
      txOffloads: txOffloadsOf(this.features),
      rxOffloads: tunOffloadsOf(this.features),
      headerLength: this.has(VirtioFeature.VERSION_1) || this.has(NetFeature.MRG_RXBUF) ? 12 : 10,
      strategy: this.options.strategy,
      backendFd: this.backendFd,
      batchMisses: this.options.batchMisses,
      prefetch: this.options.prefetch,
      forgetAfterBurst: this.options.forgetAfterBurst ?? false,
      busyPollUs: this.options.busyPollUs ?? (sharesCpu ? 0 : DEFAULT_BUSY_POLL_US),
      sharesCpu,
      trace: this.traceTarget,
      applied: this.shadowSink,
      onBroken: (ring, reason) => {
        this.vrings[ring].broken = reason;
        this.vrings[ring].running = false;
        this.options.log('error', `vring ${ring} broken: ${reason}`);
      },
      onLog: (level, text) => this.options.log(level, text),
    });
    this.pairs.set(pairIndex, pair);
    await pair.setMemory(this.regionConfigs());
    if (this.loggingTo !== null) await pair.setDirtyLog(this.loggingTo);
    for (const entry of this.iotlbShadow.entries()) {
      await pair.pushIotlbOp(IotlbOp.Update, entry.iova, entry.size, entry.uaddr, entry.perm);
    }
    return pair;
  }

  /** Starts or stops the ring's worker processing so it matches the control state. */
  async reconcile(vring: VringState): Promise<void> {
    const shouldRun = vring.ready && this.memory.regions.length > 0;
    if (shouldRun && !vring.running) {
      const pair = await this.pairFor(vring.index);
      await pair.startRing({
        index: vring.index, size: vring.size, descAddr: vring.descAddr, availAddr: vring.availAddr,
        usedAddr: vring.usedAddr, lastAvailIdx: vring.base, kickFd: vring.kickFd, callFd: vring.callFd,
      });
      vring.running = true;
    } else if (!shouldRun && vring.running) {
      const pair = this.pairs.get(vring.index >> 1);
      vring.running = false;
      if (pair) vring.base = await pair.stopRing(vring.index);
    }
  }

  /** Memory changes: stop what runs, hand workers the new table, restart. */
  async memoryChanged(): Promise<void> {
    const running = this.vrings.filter((v) => v.running);
    for (const vring of running) {
      vring.running = false;
      vring.base = await this.pairs.get(vring.index >> 1)!.stopRing(vring.index);
    }
    for (const pair of this.pairs.values()) await pair.setMemory(this.regionConfigs());
    // Every ring, not only those that ran: a ring kicked and enabled before the first
    // SET_MEM_TABLE (a front-end may order it so) is ready but could not start without memory.
    for (const vring of this.vrings) await this.reconcile(vring);
  }

  /** Workers send IOTLB misses themselves; they switch to the new socket before the old closes. */
  async setBackendChannel(fd: number): Promise<void> {
    const old = this.backendFd;
    this.backendFd = fd;
    for (const pair of this.pairs.values()) await pair.setBackend(fd);
    if (old >= 0) this.closeQuietly(old);
  }

  /** Workers take features at creation; after SET_FEATURES the idle ones are recreated on demand. */
  async dropIdleWorkers(): Promise<void> {
    for (const [index, pair] of this.pairs) {
      if (this.vrings[index * 2].running || this.vrings[index * 2 + 1].running) continue;
      this.pairs.delete(index);
      await this.retire(pair);
    }
  }

  /**
   * SET_FEATURES with no ring running is QEMU starting the device (vhost_dev_start; after a
   * guest reboot or driver reload too, on the same connection and often with no new memory
   * table). The guest's IOMMU starts over then, so translations learnt before would map its
   * new IOVAs to old pages, and QEMU invalidates none of them: they go, as DPDK drops its
   * cache on a new memory table. (Idle workers were just retired: the shadow is all there is.)
   */
  forgetIotlbIfStopped(): void {
    if (this.vrings.some((v) => v.running) || this.iotlbShadow.stats.entries === 0) return;
    this.iotlbShadow.clear();
  }

  /** RESET_DEVICE: every ring stops and forgets its configuration; memory and features stay. */
  async resetRings(): Promise<void> {
    for (const vring of this.vrings) {
      vring.enabled = false;
      vring.kickSet = false;
      await this.reconcile(vring);
      for (const fd of [vring.kickFd, vring.callFd, vring.errFd]) if (fd >= 0) this.closeQuietly(fd);
      this.vrings[vring.index] = new VringState(vring.index);
    }
  }

  closeQuietly(fd: number): void {
    try {
      closeFd(fd);
    } catch (err) {
      this.options.log('warn', `close(${fd}): ${(err as Error).message}`);
    }
  }

  async setCall(vring: VringState, fd: number): Promise<void> {
    const old = vring.callFd;
    vring.callFd = fd;
    const pair = this.pairs.get(vring.index >> 1);
    if (vring.running && pair) await pair.setCall(vring.index, fd);
    if (old >= 0) this.closeQuietly(old);
  }

  /**
   * An UPDATE is acknowledged as soon as every worker has it queued: a lookup that runs before
   * the worker applies it only misses again (and the pending-miss list keeps that miss from
   * being re-sent), so waiting would only add a worker round trip to every answered miss —
   * the latency that makes dynamic mappings slow. INVALIDATE, below, must wait.
   * Both return synchronously (no promise, no event-loop turn) unless a worker's ring is
   * full or a worker is stuck inside a burst: they sit on the path of every guest DMA map.
   */
  iotlbUpdate(iova: number, size: number, uaddr: number, perm: number): Promise<void> | void {
    this.iotlbShadow.insert({ iova, size, uaddr, perm });
    let slow: Array<Promise<number>> | null = null;
    for (const pair of this.pairs.values()) {
      if (pair.tryPushIotlbOp(IotlbOp.Update, iova, size, uaddr, perm) < 0) {
        (slow ??= []).push(pair.pushIotlbOp(IotlbOp.Update, iova, size, uaddr, perm));
      }
    }
    if (slow !== null) return Promise.all(slow).then(() => undefined);
  }

  /** Returns (or resolves) only when every worker has dropped the range: the caller acks after this. */
  iotlbInvalidate(iova: number, size: number): Promise<void> | void {
    this.iotlbShadow.invalidate(iova, size);
    // Every worker gets the operation before any is waited for: their bursts end in parallel.
    const pairs = [...this.pairs.values()];
    const seqs = pairs.map((pair) => pair.tryPushIotlbOp(IotlbOp.Invalidate, iova, size, 0, 0));
    let slow: Array<Promise<void>> | null = null;
    pairs.forEach((pair, i) => {
      const seq = seqs[i];
      if (seq >= 0 && pair.appliedNow(seq)) return;
      const waited = seq >= 0 ? pair.waitApplied(seq)
        : pair.pushIotlbOp(IotlbOp.Invalidate, iova, size, 0, 0).then((s) => pair.waitApplied(s));
      (slow ??= []).push(waited);
    });
    if (slow !== null) return Promise.all(slow).then(() => undefined);
  }

  async clearIotlb(index: number): Promise<void> {
    const pair = this.pairs.get(index >> 1);
    if (pair) await pair.clearIotlb(index);
  }

  async snapshot(entries: boolean): Promise<QueueSnapshot[]> {
    const result: QueueSnapshot[] = [];
    for (const pair of [...this.pairs.values()].sort((a, b) => a.pairIndex - b.pairIndex)) {
      result.push(...(await pair.snapshot(entries)));
    }
    return result;
  }

  /** Counters of a ring over the life of this device: finished workers plus the live one. */
  counters(index: number): Record<RingCounterName, number> | null {
    const pair = this.pairs.get(index >> 1);
    const live = pair ? pair.counters(index & 1) : null;
    const past = this.pastCounters.get(index);
    if (!live) return past ? { ...past } : null;
    if (past) for (const name of RING_COUNTERS) live[name] += past[name];
    return live;
  }

  /** A ring's miss round trips over the life of this device: finished workers plus the live one. */
  missLatency(index: number): LatencyHistogram {
    const total = new LatencyHistogram();
    const past = this.pastMissLatency.get(index);
    if (past) total.add(past);
    const pair = this.pairs.get(index >> 1);
    if (pair) total.add(pair.missLatency(index & 1));
    return total;
  }

  /**
   * Whether the session may lend its socket to the worker, which then reads and acks IOTLB
   * requests itself (datapath/iotlb-fast-path.ts): when --iotlb-reader says so, and not
   * without IOMMU_PLATFORM (there are none), not with several queue pairs (every worker
   * needs each request), not while a trace records every message on the main thread, not
   * before the worker exists.
   */
  get socketLendable(): boolean {
    const reader = this.options.iotlbReader ?? 'auto';
    if (reader === 'control' || (reader === 'auto' && !this.sharesCpu)) return false;
    if (!this.iommu || this.traceTarget !== null || this.options.queuePairs !== 1 || this.pairs.size !== 1) return false;
    return !this.pairs.values().next().value!.socketLent;
  }

  /** Lends the socket (check socketLendable first); resolves when the worker gives it back. */
  lendSocket(fd: number): Promise<SocketReturn> {
    if (!this.socketLendable) throw new Error('the socket cannot be lent now');
    return this.pairs.values().next().value!.lendSocket(fd);
  }

  /** Asks for a lent socket back (the session is closing). */
  reclaimSocket(): void {
    for (const pair of this.pairs.values()) pair.reclaimSocket();
  }

  /** The session acknowledged an IOTLB message `us` microseconds after reading it. */
  iotlbAcked(iotlbType: number, us: number): void {
    if (iotlbType === IotlbType.UPDATE) this.sessionAcks.update.record(us);
    else if (iotlbType === IotlbType.INVALIDATE) this.sessionAcks.invalidate.record(us);
  }

  /** IOTLB request read -> its ack sent, over the life of this device, by whichever thread acked it. */
  ackLatency(invalidate: boolean): { all: LatencyHistogram; byWorker: number } {
    const all = new LatencyHistogram();
    const worker = new LatencyHistogram();
    worker.add(invalidate ? this.pastWorkerAcks.invalidate : this.pastWorkerAcks.update);
    for (const pair of this.pairs.values()) worker.add(pair.workerAckLatency(invalidate));
    all.add(invalidate ? this.sessionAcks.invalidate : this.sessionAcks.update);
    all.add(worker);
    return { all, byWorker: worker.summary().count };
  }

  /** Keeps a finishing worker's counters so totals survive reconnects. */
  private retire(pair: QueuePairHost): Promise<void> {
    for (const ringInPair of [0, 1]) {
      const index = pair.pairIndex * 2 + ringInPair;
      const live = pair.counters(ringInPair);
      const past = this.pastCounters.get(index);
      if (past) for (const name of RING_COUNTERS) live[name] += past[name];
      this.pastCounters.set(index, live);
      this.pastMissLatency.set(index, this.missLatency(index));
    }
    this.pastWorkerAcks.update.add(pair.workerAckLatency(false));
    this.pastWorkerAcks.invalidate.add(pair.workerAckLatency(true));
    return pair.shutdown();
  }

  /** Back to the state of a new connection; every fd we hold is closed. */
  async reset(): Promise<void> {
    const pairs = [...this.pairs.values()];
    this.pairs.clear();
    await Promise.all(pairs.map((p) => this.retire(p)));
    for (const vring of this.vrings) {
      for (const fd of [vring.kickFd, vring.callFd, vring.errFd]) if (fd >= 0) this.closeQuietly(fd);
      this.vrings[vring.index] = new VringState(vring.index);
    }
    this.memory.closeAll();
    const log = this.dirtyLog.clear();
    if (log !== null) this.closeQuietly(log.fd);
    this.loggingTo = null;
    this.setLogFd(-1);
    if (this.backendFd >= 0) this.closeQuietly(this.backendFd);
    this.backendFd = -1;
    this.features = 0n;
    this.featuresSet = false;
    this.protocolFeatures = 0n;
    this.owner = false;
    this.status = 0;
    this.mtu = null;
    this.iotlbShadow.clear();
  }

}

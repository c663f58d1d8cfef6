/**
 * The vhost-user-net device as handlers, the session and inspect see it: the negotiated
 * state of one connection, and its parts, each with one job —
 * queue-pairs.ts   the workers and when each ring runs
 * device-iotlb.ts  IOTLB UPDATE / INVALIDATE to every worker, the shadow, socket lending
 * migration-log.ts the dirty-page log of a live migration
 * tap-link.ts      MTU and RARP, with a tap behind the device
 * device-stats.ts  counters and latencies over the device's life, for inspect
 * Methods here only pick the part, so that handlers need to know one object.
 */
import { hasFeature, VirtioFeature } from '../protocol/features.js';
import { closeFd } from '../sys/index.js';
import type { QueueSnapshot } from '../datapath/contract.js';
import type { SocketReturn } from '../datapath/iotlb-fast-path.js';
import type { RingCounterName } from '../datapath/stats.js';
import type { LatencyHistogram } from '../stats/latency.js';
import type { TraceWriter } from '../trace/writer.js';
import { DeviceIotlb } from './device-iotlb.js';
import { DeviceStats } from './device-stats.js';
import { DeviceError } from './errors.js';
import { MemoryTable } from './memory-table.js';
import { MigrationLog } from './migration-log.js';
import { MAX_MEM_SLOTS, offeredFeatures, offeredProtocolFeatures } from './offered-features.js';
import { QueuePairs, type WorkerOptions } from './queue-pairs.js';
import { TapLink } from './tap-link.js';
import { VringState } from './vring-state.js';

export interface DeviceOptions extends WorkerOptions {
  /** serve --mtu: the tap's MTU, the most NET_SET_MTU may set. */
  maxMtu?: number;
  /** Record translations (with the server's trace writer) — set per connection by the session. */
  traceTranslations: boolean;
}

export class NetDevice {
  features = 0n;
  featuresSet = false;
  protocolFeatures = 0n;
  owner = false;
  status = 0;
  /** Where workers record translations for the current connection (set by the session). */
  traceTarget: { writer: TraceWriter; connection: number } | null = null;
  readonly memory = new MemoryTable(MAX_MEM_SLOTS);
  readonly vrings: VringState[];
  private readonly workers: QueuePairs;
  private readonly iotlb: DeviceIotlb;
  private readonly stats: DeviceStats;
  /** SET_LOG_BASE's log; workers mark it while LOG_ALL is negotiated (a migration). */
  readonly dirtyLog: MigrationLog;
  private readonly link: TapLink;

  constructor(readonly options: DeviceOptions) {
    this.vrings = Array.from({ length: options.queuePairs * 2 }, (_, i) => new VringState(i));
    const close = (fd: number) => this.closeQuietly(fd);
    // The hooks are called only once a worker is created, when every part exists.
    this.workers = new QueuePairs(options, this.vrings, this.memory, {
      current: () => ({ features: this.features, trace: this.traceTarget, applied: this.iotlb.applied }),
      seed: async (pair) => {
        await this.dirtyLog.seed(pair);
        await this.iotlb.seed(pair);
      },
      retiring: (pair) => this.stats.retiring(pair),
      close,
    });
    this.iotlb = new DeviceIotlb(options, this.workers);
    this.stats = new DeviceStats(this.workers);
    this.dirtyLog = new MigrationLog(this.memory, this.workers, () => this.has(VirtioFeature.LOG_ALL), close, options.log);
    this.link = new TapLink(options.net, options.log, options.maxMtu);
  }

  get offeredFeatures(): bigint {
    return offeredFeatures(this.options.queuePairs, this.options.net);
  }

  get offeredProtocolFeatures(): bigint {
    return offeredProtocolFeatures(this.options.net);
  }

  has(bit: number): boolean {
    return hasFeature(this.features, bit);
  }

  hasProtocol(bit: number): boolean {
    return hasFeature(this.protocolFeatures, bit);
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

  closeQuietly(fd: number): void {
    try {
      closeFd(fd);
    } catch (err) {
      this.options.log('warn', `close(${fd}): ${(err as Error).message}`);
    }
  }

  // Rings and workers (queue-pairs.ts).
  reconcile(vring: VringState): Promise<void> { return this.workers.reconcile(vring); }
  memoryChanged(): Promise<void> { return this.workers.memoryChanged(); }
  setCall(vring: VringState, fd: number): Promise<void> { return this.workers.setCall(vring, fd); }
  setBackendChannel(fd: number): Promise<void> { return this.workers.setBackend(fd); }
  dropIdleWorkers(): Promise<void> { return this.workers.dropIdle(); }
  workerOf(pairIndex: number): number | null { return this.workers.workerOf(pairIndex); }
  /** Worker threads, their CPUs, idle polling and which thread reads IOTLB requests (inspect). */
  get placement() { return this.workers.placement; }
  /** Each running worker's idle poll window and sleeps (inspect). */
  get idling() { return this.workers.idling; }
  resetRings(): Promise<void> { return this.workers.resetRings(); }

  // IOTLB (device-iotlb.ts).
  get iotlbShadow() { return this.iotlb.shadow; }
  iommuNegotiated(): void { this.iotlb.negotiated(); }
  iotlbUpdate(iova: number, size: number, uaddr: number, perm: number): Promise<void> | void { return this.iotlb.update(iova, size, uaddr, perm); }
  iotlbInvalidate(iova: number, size: number): Promise<void> | void { return this.iotlb.invalidate(iova, size); }
  forgetIotlbIfStopped(): void { this.iotlb.forgetIfStopped(); }
  clearIotlb(index: number): Promise<void> { return this.iotlb.clear(index); }
  get socketLendable(): boolean { return this.iotlb.lendable(this.iommu, this.traceTarget !== null); }
  lendSocket(fd: number): Promise<SocketReturn> {
    if (!this.socketLendable) throw new Error('the socket cannot be lent now');
    return this.iotlb.lend(fd);
  }
  reclaimSocket(): void { this.iotlb.reclaim(); }

  // Migration (migration-log.ts) and link (tap-link.ts).
  get logging(): boolean { return this.dirtyLog.logging; }
  setDirtyLog(fd: number, size: bigint, offset: bigint): Promise<void> { return this.dirtyLog.set(fd, size, offset); }
  setLogFd(fd: number): void { this.dirtyLog.setFd(fd); }
  applyDirtyLog(): Promise<void> { return this.dirtyLog.apply(); }
  get mtu(): number | null { return this.link.mtu; }
  setMtu(mtu: number): void { this.link.setMtu(mtu); }
  announce(payload: bigint): void { this.link.announce(payload); }

  // Statistics (device-stats.ts).
  snapshot(entries: boolean): Promise<QueueSnapshot[]> { return this.stats.snapshot(entries); }
  counters(index: number): Record<RingCounterName, number> | null { return this.stats.counters(index); }
  missLatency(index: number): LatencyHistogram { return this.stats.missLatency(index); }
  iotlbAcked(iotlbType: number, us: number): void { this.stats.iotlbAcked(iotlbType, us); }
  /** IOTLB request read -> ack sent, by whichever thread acked it, and how many the worker and the reader thread acked. */
  ackLatency(invalidate: boolean): { all: LatencyHistogram; byWorker: number; byReaderThread: number } {
    const latency = this.stats.ackLatency(invalidate);
    const reader = this.iotlb.readerAckLatency(invalidate);
    latency.all.add(reader);
    return { ...latency, byReaderThread: reader.count };
  }

  /** Back to the state of a new connection; every fd we hold is closed. */
  async reset(): Promise<void> {
    await this.iotlb.closeReader();
    await this.workers.shutdown();
    this.memory.closeAll();
    this.dirtyLog.reset();
    this.features = 0n;
    this.featuresSet = false;
    this.protocolFeatures = 0n;
    this.owner = false;
    this.status = 0;
    this.link.mtu = null;
    this.iotlb.shadow.clear();
  }
}

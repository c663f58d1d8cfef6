/**
 * Everything one queue-pair worker does, without the thread plumbing (worker.ts) so it can be
 * driven directly in tests: guest memory mapped once per table, the RX/TX rings with their
 * per-virtqueue IOTLB caches and pending-miss lists, the endpoint, and one poll step.
 *
 * IOTLB consistency without locks: the main thread pushes UPDATE/INVALIDATE into a shared
 * ring; every step drains it first, so every burst runs against a cache that includes
 * every operation published before the burst began. The main
 * thread acks an INVALIDATE only after this worker has applied it, or while the worker is
 * quiescent (`quiesce()` .. `resume()`: between two rounds, asleep, in its event loop or
 * yielding its CPU, holding no translation and draining the ring before it uses one again;
 * iotlb-ring.ts), so no burst after the ack can use the removed entry. IOTLB requests the
 * worker reads itself from a lent socket (iotlb-fast-path.ts) are applied between bursts.
 */
import { eventfdRead, eventfdWrite, mapFd, unmap } from '../sys/index.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { GuestPhysicalSpace, IotlbAddressSpace, UserAddressSpace, type AddressSpace } from '../memory/address-space.js';
import { getStrategy } from '../iotlb/registry.js';
import { PendingMisses } from '../iotlb/pending-misses.js';
import { Access, LOOKUP_MISS, type IotlbStrategy, type LookupOut } from '../iotlb/strategy.js';
import { SplitQueue } from '../virtqueue/split.js';
import { PackedQueue } from '../virtqueue/packed.js';
import { RING_OK, RING_MISS, WALK_MISS } from '../virtqueue/chain.js';
import type { VirtQueue } from '../virtqueue/queue.js';
import { NetQueue, transmitBurst } from '../virtqueue/net.js';
import { ScatterList } from '../virtqueue/scatter.js';
import type { Endpoint } from '../net/endpoint.js';
import { LoopbackEndpoint } from '../net/loopback.js';
import { SinkEndpoint } from '../net/sink.js';
import { SourceEndpoint } from '../net/source.js';
import { TapEndpoint } from '../net/tap.js';
import type { QueueSnapshot, RegionConfig, RingConfig, WorkerSetup } from './contract.js';
import { IotlbRingConsumer, IotlbRingProducer, type IotlbOpSink } from './iotlb-ring.js';
import { IotlbFastPath, type SocketReturn } from './iotlb-fast-path.js';
import { MissReporter } from './miss-reporter.js';
import { RecordingAddressSpace } from './recording-space.js';
import { missLatency, RingCounter, ringCounters, workerAckLatency } from './stats.js';
import type { LatencyHistogram } from '../stats/latency.js';
import { sentRequestCode, TranslationRingProducer } from './translation-ring.js';

export const BURST = 32;
/** How long a ring waits for the answer to a miss before asking again. */
export const MISS_RETRY_MS = 100;
const PAGE = 4096;
/** Most extra misses one prefetch or batch sends, so a hostile ring cannot make us flood. */
const MAX_EXTRA_MISSES = 64;

class Ring {
  /** One kind per worker (the layout is negotiated per device), so its call sites stay monomorphic. */
  readonly queue: VirtQueue;
  readonly net: NetQueue;
  readonly counters: Float64Array;
  /** Miss sent -> covering UPDATE applied here, per parked ring (inspect's miss round trip). */
  readonly missLatency: LatencyHistogram;
  cache: IotlbStrategy | null = null;
  pending: PendingMisses | null = null;
  ringSpace!: AddressSpace;
  dataSpace!: AddressSpace;
  config: RingConfig | null = null;
  kickFd = -1;
  callFd = -1;
  running = false;
  waitingForMapping = false;
  /** Available count when notifications were last enabled, to tell new work from blocked work. */
  lastSeenAvail = 0;
  /**
   * A miss is outstanding: the ring is not retried (each retry is a cache walk) until an
   * UPDATE covering the address it stopped at arrives, or MISS_RETRY_MS pass, when the miss
   * is sent again — a real QEMU sends no UPDATE for an IOVA the guest has not mapped yet,
   * and does not announce later mappings. Other UPDATEs (the answers to a batch's later
   * misses, the other ring's) leave it parked: the chain at its head still misses.
   */
  missStalled = false;
  stalledAt = 0;
  stalledIova = 0;

  constructor(readonly index: number, setup: WorkerSetup, stats: SharedArrayBuffer) {
    this.counters = ringCounters(stats, index & 1);
    this.missLatency = missLatency(stats, index & 1);
    const isRx = (index & 1) === 0;
    this.queue = setup.packed ? new PackedQueue() : new SplitQueue();
    this.net = new NetQueue(this.queue, { headerLength: setup.headerLength, mergeable: isRx && setup.mergeableRx, counters: this.counters });
  }
}

export class QueuePairRuntime implements IotlbOpSink {
  readonly memory = new GuestMemory();
  private mappings: ArrayBuffer[] = [];
  readonly rx: Ring;
  readonly tx: Ring;
  private readonly rings: Ring[];
  private readonly endpoint: Endpoint;
  private readonly pollsEndpoint: boolean;
  /** Frames a bounded source may still generate (Infinity when unbounded). */
  private sourceLeft = Infinity;
  private readonly iotlbRing: IotlbRingConsumer;
  readonly misses: MissReporter;
  private readonly traceRing: TranslationRingProducer | null;
  private readonly probeSg = new ScatterList(1024);
  private readonly probeOut: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };
  private readonly fastPath: IotlbFastPath;
  /** Fds to sleep on: kick fds of running rings, the tap, a lent front-end socket, and the wake eventfd. */
  readonly waitFds = new Int32Array(5);
  waitCount = 0;
  private readonly ready = new Uint8Array(5);

  constructor(readonly setup: WorkerSetup) {
    const base = setup.pairIndex * 2;
    this.rx = new Ring(base, setup, setup.stats);
    this.tx = new Ring(base + 1, setup, setup.stats);
    this.rings = [this.rx, this.tx];
    this.iotlbRing = new IotlbRingConsumer(setup.iotlbRing);
    this.misses = new MissReporter(setup.backendFd);
    this.fastPath = new IotlbFastPath(this, new IotlbRingProducer(setup.appliedRing),
      workerAckLatency(setup.stats, false), workerAckLatency(setup.stats, true));
    this.traceRing = setup.translationRing ? new TranslationRingProducer(setup.translationRing, setup.traceStartHrNs) : null;
    const traceRing = this.traceRing;
    if (traceRing) {
      // Backend-channel requests go into the trace too, through the same ring (translation-ring.ts).
      this.misses.onSent = {
        clock: () => traceRing.nowNs(),
        sent: (queue, iotlbType, iova, perm, at) => traceRing.record(queue, iova, 0, perm, sentRequestCode(iotlbType), at),
      };
    }
    const net = setup.net;
    this.pollsEndpoint = net.kind === 'source' || net.kind === 'tap';
    if (net.kind === 'source' && net.count > 0) this.sourceLeft = net.count;
    this.endpoint = net.kind === 'loopback' ? new LoopbackEndpoint(this.rx.net)
      : net.kind === 'source' ? new SourceEndpoint(this.rx.net, { frameSize: net.frameSize })
        : net.kind === 'tap' ? new TapEndpoint(net.fd, this.rx.net)
          : new SinkEndpoint();
    for (const ring of this.rings) this.buildSpaces(ring);
    this.updateWaitFds();
  }

  private buildSpaces(ring: Ring): void {
    let ringSpace: AddressSpace;
    let dataSpace: AddressSpace;
    if (this.setup.iommu) {
      // One cache per virtqueue, as in the seed: queues never contend on a shared cache.
      ring.cache = getStrategy(this.setup.strategy).create({ seed: ring.index + 1 });
      ring.pending = new PendingMisses();
      ringSpace = new IotlbAddressSpace(ring.cache, this.memory);
      dataSpace = new IotlbAddressSpace(ring.cache, this.memory);
    } else {
      ringSpace = new UserAddressSpace(this.memory);
      dataSpace = new GuestPhysicalSpace(this.memory);
    }
    if (this.traceRing) {
      ringSpace = new RecordingAddressSpace(ringSpace, this.traceRing, ring.index);
      dataSpace = new RecordingAddressSpace(dataSpace, this.traceRing, ring.index);
    }
    ring.ringSpace = ringSpace;
    ring.dataSpace = dataSpace;
  }

  ring(index: number): Ring {
    const ring = this.rings.find((r) => r.index === index);
    if (!ring) throw new Error(`vring ${index} does not belong to queue pair ${this.setup.pairIndex}`);
    return ring;
  }

  /** Maps the new table (each region once, in this thread) and drops the old one. */
  setMemory(regions: RegionConfig[]): void {
    if (this.rings.some((r) => r.running)) throw new Error('memory table changed while rings run');
    this.unmapAll();
    const page = PAGE;
    for (const region of regions) {
      // mmap needs a page-aligned offset; QEMU's offsets are, but nothing says they must be.
      const slack = region.mmapOffset % page;
      const buffer = mapFd(region.fd, region.mmapOffset - slack, region.size + slack, true);
      this.mappings.push(buffer);
      this.memory.addRegion({
        guestAddr: region.guestAddr, userAddr: region.userAddr, size: region.size, mmapOffset: region.mmapOffset,
        bytes: new Uint8Array(buffer, slack, region.size),
      });
    }
  }

  unmapAll(): void {
    this.memory.clear();
    for (const buffer of this.mappings) unmap(buffer);
    this.mappings = [];
  }

  /** Returns a reason if the ring cannot start at all; a ring whose mapping misses waits. */
  startRing(config: RingConfig): void {
    const ring = this.ring(config.index);
    ring.config = config;
    ring.kickFd = config.kickFd;
    ring.callFd = config.callFd;
    ring.running = true;
    ring.lastSeenAvail = 0;
    const status = ring.queue.configure({
      size: config.size, descAddr: config.descAddr, availAddr: config.availAddr, usedAddr: config.usedAddr,
      ringSpace: ring.ringSpace, dataSpace: ring.dataSpace, eventIdx: this.setup.eventIdx, lastAvailIdx: config.lastAvailIdx,
    });
    this.afterRingMap(ring, status);
    this.updateWaitFds();
  }

  private afterRingMap(ring: Ring, status: number): void {
    if (status === RING_OK) {
      ring.waitingForMapping = false;
      ring.queue.disableNotifications();
    } else if (status === RING_MISS) {
      // Postponed until the front-end maps it (the seed's "ring addresses translated through the IOTLB").
      ring.waitingForMapping = true;
      this.reportMiss(ring, ring.queue.missAddr, ring.queue.missAccess);
      ring.queue.clearMiss();
    } else {
      this.breakRing(ring, ring.queue.error);
    }
  }

  /** Stops the ring; returns the index the next start must resume from. */
  stopRing(index: number): number {
    const ring = this.ring(index);
    // Frames the driver made available before it asked us to stop are sent, not left behind:
    // a front-end that stops and exits (testpmd) has already counted them as transmitted.
    if (ring === this.tx) this.drainTransmit();
    if (ring.running && ring.queue.ready) ring.net.finish();
    ring.running = false;
    ring.waitingForMapping = false;
    ring.kickFd = -1;
    this.updateWaitFds();
    return ring.queue.vringBase();
  }

  setCall(index: number, callFd: number): void {
    this.ring(index).callFd = callFd;
  }

  onBroken: (index: number, reason: string) => void = () => {};

  private breakRing(ring: Ring, reason: string): void {
    ring.running = false;
    this.updateWaitFds();
    this.onBroken(ring.index, reason);
  }

  private updateWaitFds(): void {
    let n = 0;
    for (const ring of this.rings) if (ring.running && ring.kickFd >= 0) this.waitFds[n++] = ring.kickFd;
    if (this.setup.net.kind === 'tap') this.waitFds[n++] = this.setup.net.fd;
    if (this.fastPath.lent) this.waitFds[n++] = this.fastPath.fd;
    this.waitFds[n++] = this.setup.wakeFd;
    this.waitCount = n;
  }

  // --- IOTLB operations from the main thread (IotlbOpSink) ---

  update(iova: number, size: number, uaddr: number, perm: number): void {
    for (const ring of this.rings) {
      if (!ring.cache) continue;
      ring.cache.insert({ iova, size, uaddr, perm });
      ring.pending!.clearCovered(iova, size, perm);
      if (ring.missStalled && ring.stalledIova >= iova && ring.stalledIova - iova < size) {
        ring.missStalled = false;
        ring.missLatency.record((performance.now() - ring.stalledAt) * 1000);
      }
      if (ring.running && ring.waitingForMapping) this.afterRingMap(ring, ring.queue.mapRings());
    }
  }

  invalidate(iova: number, size: number): void {
    for (const ring of this.rings) {
      if (!ring.cache) continue;
      ring.cache.invalidate(iova, size);
      // A miss for this range sent earlier is stale now; the next miss must be sent afresh.
      ring.pending!.clearCovered(iova, size, 3);
      if (ring.running && !ring.waitingForMapping && ring.queue.ringsOverlap(iova, size)) {
        // The ring's own memory was unmapped: stop using it until it is mapped again.
        ring.queue.unmapRings();
        this.afterRingMap(ring, ring.queue.mapRings());
      }
    }
  }

  clearCache(index: number): void {
    const ring = this.ring(index);
    if (!ring.cache) return;
    ring.cache.clear();
    ring.pending!.clear();
    if (ring.running && !ring.waitingForMapping) {
      ring.queue.unmapRings();
      this.afterRingMap(ring, ring.queue.mapRings());
    }
  }

  // --- the front-end socket, lent while the session is idle (iotlb-fast-path.ts) ---

  lendSocket(fd: number): void {
    this.fastPath.fd = fd;
    this.updateWaitFds();
  }

  get socketLent(): boolean {
    return this.fastPath.lent;
  }

  /** IOTLB requests applied from lent sockets so far. */
  get socketRequests(): number {
    return this.fastPath.handled;
  }

  /** Takes the socket back from the fast path; null if it was not lent. */
  returnSocket(reason: string): SocketReturn | null {
    if (!this.fastPath.lent) return null;
    this.fastPath.fd = -1;
    this.updateWaitFds();
    return { reason, fatal: false };
  }

  /**
   * Applies the IOTLB requests waiting on the lent socket, after everything the main thread
   * queued before it lent it; returns why the socket went back, or null while it stays lent.
   */
  pollSocket(): SocketReturn | null {
    if (this.iotlbRing.hasWork()) this.iotlbRing.drain(this);
    if (this.fastPath.poll()) return null;
    this.updateWaitFds();
    return this.fastPath.returned;
  }

  // --- misses ---

  /** Sends the miss unless it is pending already; true when it was not (a fresh miss). */
  private reportMiss(ring: Ring, iova: number, access: number): boolean {
    const pending = ring.pending;
    if (pending === null) return false;
    const fresh = pending.add(iova, access);
    if (fresh && this.misses.miss(ring.index, iova, access)) ring.counters[RingCounter.missesSent]++;
    const prefetch = this.setup.prefetch;
    // Around a fresh miss only: a pending one had its range asked for when it was sent.
    if (fresh && prefetch > PAGE) {
      const start = iova - (iova % prefetch);
      let sent = 0;
      for (let page = start; page < start + prefetch && sent < MAX_EXTRA_MISSES; page += PAGE) {
        if (page === iova - (iova % PAGE)) continue;
        if (ring.cache!.lookup(page, 1, access, this.probeOut) !== LOOKUP_MISS) continue;
        // Speculative: not recorded as pending. QEMU sends nothing for a page the guest has
        // not mapped, and a pending entry would then swallow the real miss when it comes.
        if (!pending.has(page, access) && this.misses.miss(ring.index, page, access)) {
          ring.counters[RingCounter.missesSent]++;
          sent++;
        }
      }
    }
    return fresh;
  }

  /** Batched misses: walk the chains behind the one that missed and report their misses too. */
  private probeAhead(ring: Ring): void {
    const q = ring.queue;
    const avail = q.knownAvailable();
    let reported = 0;
    for (let ahead = 1; ahead < avail && reported < MAX_EXTRA_MISSES; ahead++) {
      this.probeSg.reset();
      if (q.walkChain(ahead, this.probeSg) === WALK_MISS) {
        this.reportMiss(ring, q.missAddr, q.missAccess);
        q.clearMiss();
        reported++;
      }
      if (q.broken) return;
    }
  }

  private afterBurst(ring: Ring): void {
    const q = ring.queue;
    if (q.missPending) {
      const fresh = this.reportMiss(ring, q.missAddr, q.missAccess);
      ring.missStalled = true;
      ring.stalledAt = performance.now();
      ring.stalledIova = q.missAddr;
      q.clearMiss();
      // A head miss already pending was sent with the batch behind it: walking the chains
      // again would only look up misses already sent (one walk per UPDATE of the batch).
      if (fresh && this.setup.batchMisses) this.probeAhead(ring);
    }
    if (q.broken && ring.running) {
      // The driver handed us a buffer its IOMMU mapping forbids: tell the front-end (the
      // spec's ACCESS_FAIL) besides marking the ring broken; the access is never performed.
      if (q.deniedAddr >= 0) this.misses.accessFail(ring.index, q.deniedAddr, q.deniedAccess);
      this.breakRing(ring, q.brokenReason);
    }
    if (ring.net.takeInterrupt() && ring.callFd >= 0) eventfdWrite(ring.callFd, 1);
  }

  // --- the poll step ---

  /**
   * From here until resume() this worker touches no ring and translates nothing (asleep,
   * in its event loop or yielding its CPU), so the main thread may acknowledge an INVALIDATE without
   * waiting.
   */
  quiesce(): void {
    this.iotlbRing.quiesce();
  }

  /** Back from quiesce(): applies every IOTLB operation queued meanwhile before anything else. */
  resume(): void {
    this.iotlbRing.resume(this);
  }

  /** Quiescent, before poll(): false if an IOTLB operation arrived that must be applied first. */
  mayStartSleeping(): boolean {
    return this.iotlbRing.mayStartSleeping();
  }

  stoppedSleeping(): void {
    this.iotlbRing.stoppedSleeping();
  }

  /** One round over both rings, IOTLB operations applied first; returns how many chains moved. */
  step(): number {
    if (this.iotlbRing.hasWork()) this.iotlbRing.drain(this);
    const rx = this.rx;
    const rxUsable = rx.running && !rx.waitingForMapping && this.missAnswered(rx);
    let work = this.transmitOnce(rxUsable);
    if (rxUsable && this.pollsEndpoint) {
      if (this.sourceLeft > 0) {
        const moved = this.endpoint.poll(this.sourceLeft < BURST ? this.sourceLeft : BURST);
        if (this.setup.net.kind === 'source') this.sourceLeft -= moved;
        work += moved;
      }
      this.afterBurst(rx);
    }
    return work;
  }

  /** One TX burst into the endpoint, if the TX ring can run; returns the chains moved. */
  private transmitOnce(rxUsable: boolean): number {
    const rx = this.rx;
    const tx = this.tx;
    if (!(tx.running && !tx.waitingForMapping && this.missAnswered(tx))) return 0;
    // Loopback delivers into RX from inside the TX burst; without a usable RX it must wait.
    const moved = this.setup.net.kind !== 'loopback' || rxUsable ? transmitBurst(tx.net, this.endpoint, BURST) : 0;
    this.afterBurst(tx);
    // Loopback's RX misses happen inside the TX burst.
    if (rxUsable && this.setup.net.kind === 'loopback') this.afterBurst(rx);
    return moved;
  }

  /** TX bursts until the ring is empty or blocked (at most one ring's worth), IOTLB ops applied first. */
  private drainTransmit(): void {
    if (this.iotlbRing.hasWork()) this.iotlbRing.drain(this);
    const rx = this.rx;
    const rxUsable = rx.running && !rx.waitingForMapping && this.missAnswered(rx);
    for (let bursts = Math.ceil(this.tx.queue.size / BURST); bursts > 0; bursts--) {
      if (this.transmitOnce(rxUsable) === 0) break;
    }
  }

  /**
   * False while the ring waits for the answer to a miss; after MISS_RETRY_MS re-arms the
   * miss it stopped at (only that one: the rest of a batch may just be queued at a slow
   * front-end, and each is re-armed the same way if the ring stops at it).
   */
  private missAnswered(ring: Ring): boolean {
    if (!ring.missStalled) return true;
    if (performance.now() - ring.stalledAt < MISS_RETRY_MS) return false;
    ring.missStalled = false;
    ring.pending!.clearCovered(ring.stalledIova, 1, Access.ReadWrite);
    return true;
  }

  /**
   * Before sleeping: ask for kicks, and say whether anything new arrived meanwhile (then the
   * caller must not sleep). Chains that are available but blocked (loopback with a full RX)
   * do not count as new.
   */
  armNotifications(): boolean {
    let fresh = false;
    for (const ring of this.rings) {
      if (!ring.running || ring.waitingForMapping) continue;
      const avail = ring.queue.enableNotifications();
      if (avail !== ring.lastSeenAvail) fresh = true;
      ring.lastSeenAvail = avail;
    }
    return fresh;
  }

  disarmNotifications(): void {
    for (const ring of this.rings) if (ring.running && !ring.waitingForMapping) ring.queue.disableNotifications();
  }

  /** After poll() woke us: clear the eventfds that fired and count the kicks. */
  consumeWakeups(readyFlags: Uint8Array): void {
    for (let i = 0; i < this.waitCount; i++) {
      if (readyFlags[i] === 0) continue;
      const fd = this.waitFds[i];
      if (this.setup.net.kind === 'tap' && fd === this.setup.net.fd) continue; // data, not a counter
      if (fd === this.fastPath.fd) continue; // the front-end socket: pollSocket reads it
      const n = eventfdRead(fd);
      if (fd === this.rx.kickFd) this.rx.counters[RingCounter.kicks] += n;
      else if (fd === this.tx.kickFd) this.tx.counters[RingCounter.kicks] += n;
    }
  }

  get readyFlags(): Uint8Array {
    return this.ready;
  }

  snapshot(entries: boolean): QueueSnapshot[] {
    return this.rings.filter((r) => r.config !== null).map((ring) => {
      const q = ring.queue;
      const cache = ring.cache;
      return {
        index: ring.index, size: q.size, started: ring.running, broken: q.broken ? q.brokenReason : null,
        waitingForMapping: ring.waitingForMapping, lastAvailIdx: q.lastAvailIdx, availIdx: q.availIdx, usedIdx: q.usedIdx,
        descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr,
        iotlb: cache === null ? null : {
          strategy: cache.name,
          stats: { ...cache.stats },
          pendingMisses: ring.pending!.size,
          entries: entries ? cache.entries() : [],
        },
      };
    });
  }
}

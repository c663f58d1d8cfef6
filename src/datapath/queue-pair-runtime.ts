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
import { PAGE_SIZE } from '../iotlb/address.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { DirtyLog } from '../memory/dirty-log.js';
import { GuestPhysicalSpace, IotlbAddressSpace, UserAddressSpace, type AddressSpace } from '../memory/address-space.js';
import { getStrategy } from '../iotlb/registry.js';
import { PendingMisses } from '../iotlb/pending-misses.js';
import { RING_OK, RING_MISS } from '../virtqueue/chain.js';
import { transmitBurst } from '../net/virtio-net.js';
import type { Endpoint } from '../net/endpoint.js';
import { createEndpoint } from '../net/create.js';
import type { DirtyLogConfig, QueueSnapshot, RegionConfig, RingConfig, WorkerSetup } from './contract.js';
import { IotlbRingConsumer, IotlbRingProducer, type IotlbOpSink } from './iotlb-ring.js';
import { IotlbFastPath, type SocketReturn } from './iotlb-fast-path.js';
import { MissReporter } from './miss-reporter.js';
import { MissPolicy } from './miss-policy.js';
import { Ring } from './ring.js';
import { RecordingAddressSpace } from './recording-space.js';
import { RingCounter, workerAckLatency } from './stats.js';
import { sentRequestCode, TranslationRingProducer } from './translation-ring.js';

/**
 * TX chains per burst (RX: the endpoint's pollBurst). Each burst ends with a publish whose
 * fence waits for the burst's used-descriptor stores, so fewer, larger bursts pay: against
 * 32, 64 moved 1.02-1.07x guest -> back-end with one worker serving 4 pairs (serve-ab, split
 * and packed, three rounds each) and level with one pair (packed 0.92-1.15x over five rounds).
 */
export const TX_BURST = 64;

export class QueuePairRuntime implements IotlbOpSink {
  readonly memory = new GuestMemory();
  private mappings: ArrayBuffer[] = [];
  /** The dirty-page log while the front-end migrates the guest, and its mapping. */
  private dirtyLog: DirtyLog | null = null;
  private logMapping: ArrayBuffer | null = null;
  readonly rx: Ring;
  readonly tx: Ring;
  private readonly rings: Ring[];
  private readonly endpoint: Endpoint;
  private readonly iotlbRing: IotlbRingConsumer;
  readonly misses: MissReporter;
  private readonly traceRing: TranslationRingProducer | null;
  private readonly missPolicy: MissPolicy;
  private readonly fastPath: IotlbFastPath;
  /** Fds to sleep on: kick fds of running rings, the tap, a lent front-end socket (the thread adds its wake eventfd). */
  readonly waitFds = new Int32Array(4);
  waitCount = 0;
  /** Between resume() and quiesce(): peer wake-ups wait for quiesce(). */
  private active = false;
  /** Rings (bit: index in the pair) whose interrupt waits for quiesce(). */
  private callsDue = 0;

  constructor(readonly setup: WorkerSetup) {
    const base = setup.pairIndex * 2;
    this.rx = new Ring(base, setup, setup.stats);
    this.tx = new Ring(base + 1, setup, setup.stats);
    this.rings = [this.rx, this.tx];
    this.iotlbRing = new IotlbRingConsumer(setup.iotlbRing);
    this.misses = new MissReporter(setup.backendFd);
    this.missPolicy = new MissPolicy(this.misses, { prefetch: setup.prefetch, batchMisses: setup.batchMisses });
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
    this.endpoint = createEndpoint(setup.net, this.rx.net, setup.rxOffloads, setup.pairIndex);
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
    const page = PAGE_SIZE;
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

  /**
   * Starts marking every write into guest memory in the log at fd[offset, offset + size)
   * (mapped here, in this thread), or stops when `log` is null. Applied between two rounds,
   * so every write of every later burst is marked, and the main thread tells the front-end
   * the log is on only after every worker answered.
   */
  setDirtyLog(log: DirtyLogConfig | null): void {
    this.dropDirtyLog();
    if (log !== null) {
      const page = PAGE_SIZE;
      const slack = log.offset % page;
      this.logMapping = mapFd(log.fd, log.offset - slack, log.size + slack, true);
      this.dirtyLog = new DirtyLog(new Uint8Array(this.logMapping, slack, log.size), this.memory);
    }
    for (const ring of this.rings) ring.queue.log = this.dirtyLog;
  }

  private dropDirtyLog(): void {
    this.dirtyLog?.flush();
    for (const ring of this.rings) ring.queue.log = null;
    this.dirtyLog = null;
    if (this.logMapping !== null) unmap(this.logMapping);
    this.logMapping = null;
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

  /** Says so when a split ring resumed from the guest's used index instead of the base it was given (SplitQueue.checkResume). */
  private reportResume(ring: Ring): void {
    const q = ring.queue;
    if (q.resumedAt === null) return;
    this.onWarning(`queue ${ring.index}: given base ${q.resumedAt.given} but used->idx is ${q.resumedAt.used}: resumed from ${q.resumedAt.used} (chains in between are taken again)`);
    q.resumedAt = null;
  }

  private afterRingMap(ring: Ring, status: number): void {
    if (status === RING_OK) {
      this.reportResume(ring);
      ring.waitingForMapping = false;
      ring.queue.disableNotifications();
    } else if (status === RING_MISS) {
      // Postponed until the front-end maps it (as DPDK 17.11's IOTLB series does: ring addresses translated through the IOTLB).
      ring.waitingForMapping = true;
      this.missPolicy.ringMissed(ring);
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
    // What the drain missed stays unsent: the front-end has stopped the device and would refuse
    // it (miss-reporter.ts). Nothing is outstanding then, so a restarted ring asks afresh.
    this.misses.discard(ring.index);
    ring.pending?.clear();
    ring.missStalled = false;
    if (ring.running && ring.queue.ready) ring.net.finish();
    // An interrupt the last entries called for goes out now: the front-end reads the call
    // eventfd once more after GET_VRING_BASE (QEMU does, before it saves the device for a
    // migration), and nothing after this would send it.
    this.interruptIfAsked(ring);
    // Before GET_VRING_BASE is answered: the front-end's last sync of the log follows it.
    this.dirtyLog?.flush();
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
  /** Warnings for the log: the first time the endpoint refuses a frame (Endpoint.whyHeld), a ring resumed elsewhere than its base. */
  onWarning: (text: string) => void = () => {};
  private heldNoticed = false;

  private breakRing(ring: Ring, reason: string): void {
    ring.running = false;
    this.updateWaitFds();
    this.onBroken(ring.index, reason);
  }

  private updateWaitFds(): void {
    let n = 0;
    for (const ring of this.rings) if (ring.running && ring.kickFd >= 0) this.waitFds[n++] = ring.kickFd;
    if (this.endpoint.readableFd >= 0) this.waitFds[n++] = this.endpoint.readableFd;
    if (this.fastPath.lent) this.waitFds[n++] = this.fastPath.fd;
    this.waitCount = n;
  }

  // --- IOTLB operations from the main thread (IotlbOpSink) ---

  update(iova: number, size: number, uaddr: number, perm: number): void {
    for (const ring of this.rings) {
      if (!ring.cache) continue;
      ring.cache.insert({ iova, size, uaddr, perm });
      this.missPolicy.mapped(ring, iova, size, perm);
      if (ring.running && ring.waitingForMapping) this.afterRingMap(ring, ring.queue.mapRings());
    }
  }

  invalidate(iova: number, size: number): void {
    for (const ring of this.rings) {
      if (!ring.cache) continue;
      ring.cache.invalidate(iova, size);
      this.missPolicy.unmapped(ring, iova, size);
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

  /** The TX ring is parked on a miss it sent: it waits for the front-end's UPDATE. */
  get transmitParked(): boolean {
    return this.tx.missStalled;
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

  private afterBurst(ring: Ring): void {
    const q = ring.queue;
    if (q.missPending) this.missPolicy.stopped(ring);
    if (q.broken && ring.running) {
      // The driver handed us a buffer its IOMMU mapping forbids: tell the front-end (the
      // spec's ACCESS_FAIL) besides marking the ring broken; the access is never performed.
      if (q.deniedAddr >= 0) this.misses.accessFail(ring.index, q.deniedAddr, q.deniedAccess);
      this.breakRing(ring, q.brokenReason);
    }
    this.interruptIfAsked(ring);
    if (this.setup.forgetAfterBurst) this.forgetReturned(ring);
  }

  /**
   * Writes the ring's call eventfd if its last published entries asked for an interrupt:
   * inside a burst, once the worker is quiescent (quiesce(); the write wakes a peer too).
   */
  private interruptIfAsked(ring: Ring): void {
    if (!ring.net.takeInterrupt() || ring.callFd < 0) return;
    if (this.active) this.callsDue |= 1 << (ring.index & 1);
    else eventfdWrite(ring.callFd, 1);
  }

  /**
   * Buffers went back to the driver: drop every translation, so none is used for an IOVA
   * the guest may unmap and map elsewhere with a flush we never see. Only then: a burst that
   * stopped at its first chain keeps what it learnt, so a chain over several pages gets all
   * of them in the end instead of losing one while it misses the next. The pending-miss
   * list stays (those misses are still outstanding), and the ring's own mapping is held by
   * the queue, dropped only by an INVALIDATE that covers it.
   */
  private forgetReturned(ring: Ring): void {
    const used = ring.queue.usedIdx;
    if (ring.cache === null || used === ring.usedWhenForgotten) return;
    ring.usedWhenForgotten = used;
    ring.cache.clear();
  }

  // --- the poll step ---

  /**
   * From here until resume() this worker touches no ring and translates nothing (asleep,
   * in its event loop or yielding its CPU), so the main thread may acknowledge an INVALIDATE without
   * waiting.
   */
  quiesce(): void {
    // Without an IOMMU no INVALIDATE waits for this worker: no epoch to move (two locked
    // instructions per pair per round, each draining the store buffer).
    if (this.setup.iommu) this.iotlbRing.quiesce();
    this.active = false;
    // Only now the syscalls that wake a peer (miss-reporter.ts says why).
    this.misses.release();
    if (this.callsDue !== 0) this.ringCalls();
  }

  /** Back from quiesce(): applies every IOTLB operation queued meanwhile before anything else. */
  resume(): void {
    if (this.setup.iommu) this.iotlbRing.resume(this);
    this.active = true;
    this.misses.hold();
  }

  private ringCalls(): void {
    const due = this.callsDue;
    this.callsDue = 0;
    for (const ring of this.rings) {
      if ((due & (1 << (ring.index & 1))) !== 0 && ring.callFd >= 0) eventfdWrite(ring.callFd, 1);
    }
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
    const rxUsable = rx.running && !rx.waitingForMapping && this.missPolicy.answered(rx);
    let work = this.transmitOnce(rxUsable);
    if (rxUsable && this.endpoint.pollBurst !== 0) {
      work += this.endpoint.poll(this.endpoint.pollBurst);
      this.afterBurst(rx);
    }
    // The step's writes are done: their pages go into the log (dirty-log.ts gathers them).
    this.dirtyLog?.flush();
    return work;
  }

  /** One TX burst into the endpoint, if the TX ring can run; returns the chains moved. */
  private transmitOnce(rxUsable: boolean): number {
    const rx = this.rx;
    const tx = this.tx;
    if (!(tx.running && !tx.waitingForMapping && this.missPolicy.answered(tx))) return 0;
    // An endpoint that delivers into RX from inside the TX burst must wait for a usable RX,
    // and RX's misses happen inside that burst.
    const feedsReceive = this.endpoint.feedsReceive;
    const moved = !feedsReceive || rxUsable ? transmitBurst(tx.net, this.endpoint, TX_BURST) : 0;
    if (!this.heldNoticed && tx.counters[RingCounter.held] > 0) {
      this.heldNoticed = true;
      this.onWarning(`queue ${tx.index}: ${this.endpoint.whyHeld}`);
    }
    this.afterBurst(tx);
    if (rxUsable && feedsReceive) this.afterBurst(rx);
    return moved;
  }

  /** TX bursts until the ring is empty or blocked (at most one ring's worth), IOTLB ops applied first. */
  private drainTransmit(): void {
    if (this.iotlbRing.hasWork()) this.iotlbRing.drain(this);
    const rx = this.rx;
    const rxUsable = rx.running && !rx.waitingForMapping && this.missPolicy.answered(rx);
    for (let bursts = Math.ceil(this.tx.queue.size / TX_BURST); bursts > 0; bursts--) {
      if (this.transmitOnce(rxUsable) === 0) break;
    }
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
    this.dirtyLog?.flush();
    return fresh;
  }

  disarmNotifications(): void {
    for (const ring of this.rings) if (ring.running && !ring.waitingForMapping) ring.queue.disableNotifications();
    this.dirtyLog?.flush();
  }

  /** After poll() woke us: clear the eventfds that fired and count the kicks (ready[at + i] is waitFds[i]'s). */
  consumeWakeups(ready: Uint8Array, at: number): void {
    for (let i = 0; i < this.waitCount; i++) {
      if (ready[at + i] === 0) continue;
      const fd = this.waitFds[i];
      if (fd === this.endpoint.readableFd) continue; // data, not a counter
      if (fd === this.fastPath.fd) continue; // the front-end socket: pollSocket reads it
      const n = eventfdRead(fd);
      if (fd === this.rx.kickFd) this.rx.counters[RingCounter.kicks] += n;
      else if (fd === this.tx.kickFd) this.tx.counters[RingCounter.kicks] += n;
    }
  }

  snapshot(entries: boolean): QueueSnapshot[] {
    return this.rings.filter((r) => r.config !== null).map((ring) => {
      const q = ring.queue;
      const cache = ring.cache;
      return {
        index: ring.index, size: q.size, started: ring.running, broken: q.broken ? q.brokenReason : null,
        waitingForMapping: ring.waitingForMapping, lastAvailIdx: q.lastAvailIdx, availIdx: q.availIdx, usedIdx: q.usedIdx,
        descAddr: q.descAddr, availAddr: q.availAddr, usedAddr: q.usedAddr,
        dirtyLog: this.dirtyLog === null ? null : { marks: this.dirtyLog.marks, outside: this.dirtyLog.outside },
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

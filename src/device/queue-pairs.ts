/**
 * The device's workers and the lifecycle of the rings they run. Handlers only change
 * VringState; `reconcile` turns that state into worker commands, so "when does a ring run" is
 * decided in one place. A pair's worker is created when its first ring starts and takes the
 * negotiated features then (see dropIdle).
 *
 * Placement: a new pair goes to its round-robin worker thread (pair % --workers) unless another
 * thread serves fewer running pairs; a pair none of whose rings runs (disabled with
 * SET_VRING_ENABLE 0) moves when its first ring starts again and its thread serves more
 * running pairs than another. Nothing is in flight then: its rings stopped with their indices
 * kept in VringState, and the pair on the new thread is seeded from the device's IOTLB shadow
 * like any new one.
 */
import { availableParallelism } from 'node:os';
import { hasFeature, NetFeature, VirtioFeature } from '../protocol/features.js';
import { DEFAULT_BUSY_POLL_US, type NetMode } from '../datapath/contract.js';
import { QueuePairHost, type QueuePairOptions } from '../datapath/queue-pair-host.js';
import { WorkerThread } from '../datapath/worker-thread.js';
import { tunOffloadsOf, txOffloadsOf } from '../net/offloads.js';
import type { IotlbReader, ResolvedIotlbReader } from './device-iotlb.js';
import type { MemoryTable } from './memory-table.js';
import { VringState } from './vring-state.js';

/** What serve decides for every worker of a device. */
export interface WorkerOptions {
  queuePairs: number;
  net: NetMode;
  strategy: string;
  batchMisses: boolean;
  prefetch: number;
  /** WorkerSetup.forgetAfterBurst (serve --iotlb-reuse per-burst). */
  forgetAfterBurst?: boolean;
  /** ThreadSetup.busyPollUs; undefined: DEFAULT_BUSY_POLL_US with a CPU per worker, else 0. */
  busyPollUs?: number;
  /** Worker threads (serve --workers); pairs are placed over them as queue-pairs.ts says. Default: min(queue pairs, CPUs). */
  workers?: number;
  /** CPUs for the workers (serve --cpus), worker k on cpus[k % length]; empty: the scheduler decides. */
  cpus?: number[];
  /** CPUs serve may use, counted before --cpus narrowed its other threads (default: this thread's, now). */
  usableCpus?: number;
  /** Who reads IOTLB UPDATE / INVALIDATE while the rings run (serve --iotlb-reader); default auto. */
  iotlbReader?: IotlbReader;
  log(level: string, text: string): void;
}

/** What a new worker needs from the rest of the device (NetDevice wires these). */
export interface WorkerHooks {
  /**
   * Read when a worker is created, which keeps them for its life: negotiated features, the
   * trace of this connection, and where it reports IOTLB operations it applied from a lent socket.
   */
  current(): { features: bigint; trace: QueuePairOptions['trace']; applied: QueuePairOptions['applied'] };
  /** Brings a new worker (memory already set) up to the device: dirty log, IOTLB mappings. */
  seed(pair: QueuePairHost): Promise<void>;
  /** A worker is about to finish: keep what it counted. */
  retiring(pair: QueuePairHost): void;
  close(fd: number): void;
}

/** The ring and header format negotiated features give a worker. */
function ringFormat(features: bigint) {
  const has = (bit: number) => hasFeature(features, bit);
  return {
    iommu: has(VirtioFeature.ACCESS_PLATFORM),
    eventIdx: has(VirtioFeature.EVENT_IDX),
    packed: has(VirtioFeature.RING_PACKED),
    mergeableRx: has(NetFeature.MRG_RXBUF),
    txOffloads: txOffloadsOf(features),
    rxOffloads: tunOffloadsOf(features),
    headerLength: has(VirtioFeature.VERSION_1) || has(NetFeature.MRG_RXBUF) ? 12 : 10,
  };
}

/**
 * Whether the polling workers and the control thread must take turns on CPUs. Pinned
 * (`pinned` > 0 CPUs named): when fewer CPUs than workers are named, or they are every CPU
 * serve may use (none left for the control thread). Unpinned: when serve may use no more
 * CPUs than it runs workers. `usable` counts the CPUs serve could use when it started, before
 * serve --cpus moved its other threads off the workers' CPUs (after that, the main thread's own
 * affinity no longer says what the workers have).
 */
export function workersShareCpus(workers: number, pinned: number, usable: number): boolean {
  return pinned > 0 ? pinned < workers || pinned >= usable : usable <= workers;
}

/** Worker threads a device runs by default: one per queue pair, at most one per CPU. */
export function defaultWorkers(queuePairs: number): number {
  return Math.max(1, Math.min(queuePairs, availableParallelism()));
}

export class QueuePairs {
  private readonly pairs = new Map<number, QueuePairHost>();
  /** Worker threads by number; a thread exists while it serves a pair. */
  private readonly threads: Array<WorkerThread | null>;
  /**
   * One CPU per polling worker plus one for the control thread, or they take turns (CPUs
   * counted once: a syscall): pinned, the workers' CPUs; else every CPU.
   */
  readonly sharesCpu: boolean;
  /** The backend channel workers send IOTLB misses on; -1: none. */
  private backendFd = -1;

  constructor(
    private readonly options: WorkerOptions,
    /** The device's vrings: entries are replaced on reset, the array stays. */
    private readonly vrings: VringState[],
    private readonly memory: MemoryTable,
    private readonly hooks: WorkerHooks,
  ) {
    const workers = options.workers ?? defaultWorkers(options.queuePairs);
    this.threads = new Array<WorkerThread | null>(workers).fill(null);
    // Worker k runs on cpus[k % length]: CPUs named beyond the workers' count hold none.
    const pinned = new Set((options.cpus ?? []).slice(0, workers)).size;
    this.sharesCpu = workersShareCpus(workers, pinned, options.usableCpus ?? availableParallelism());
  }

  get(pairIndex: number): QueuePairHost | undefined {
    return this.pairs.get(pairIndex);
  }

  /** The live workers, in creation order; no copy, as IOTLB requests walk it on every guest DMA map. */
  values(): IterableIterator<QueuePairHost> {
    return this.pairs.values();
  }

  get size(): number {
    return this.pairs.size;
  }

  get anyRunning(): boolean {
    return this.vrings.some((v) => v.running);
  }

  /** The pair's worker, on the thread placement picks (moved there first if it is idle elsewhere). */
  private async pairFor(index: number): Promise<QueuePairHost> {
    const pairIndex = index >> 1;
    let pair = this.pairs.get(pairIndex);
    if (pair && this.isRunning(pairIndex)) return pair; // its other ring runs: it stays
    const load = this.runningPairsByThread(pairIndex);
    let slot = pairIndex % load.length;
    for (let k = 0; k < load.length; k++) if (load[k] < load[slot]) slot = k;
    if (pair) {
      const current = this.threads.indexOf(pair.thread);
      if (current < 0 || load[current] <= load[slot]) return pair;
      // Idle on a busier thread: it leaves it (its rings' state stays in VringState).
      this.options.log('info', `queue pair ${pairIndex} moves to worker ${slot}`);
      this.pairs.delete(pairIndex);
      await this.retire(pair);
    }
    const { features, trace, applied } = this.hooks.current();
    pair = new QueuePairHost({
      pairIndex,
      net: this.options.net,
      ...ringFormat(features),
      strategy: this.options.strategy,
      backendFd: this.backendFd,
      batchMisses: this.options.batchMisses,
      prefetch: this.options.prefetch,
      forgetAfterBurst: this.options.forgetAfterBurst ?? false,
      trace,
      applied,
    }, this.threadAt(slot));
    this.pairs.set(pairIndex, pair);
    await pair.setMemory(this.memory.configs());
    await this.hooks.seed(pair);
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
    for (const pair of this.pairs.values()) await pair.setMemory(this.memory.configs());
    // Every ring, not only those that ran: a ring kicked and enabled before the first
    // SET_MEM_TABLE (a front-end may order it so) is ready but could not start without memory.
    for (const vring of this.vrings) await this.reconcile(vring);
  }

  /** Workers send IOTLB misses themselves; they switch to the new socket before the old closes. */
  async setBackend(fd: number): Promise<void> {
    const old = this.backendFd;
    this.backendFd = fd;
    for (const pair of this.pairs.values()) await pair.setBackend(fd);
    if (old >= 0) this.hooks.close(old);
  }

  async setCall(vring: VringState, fd: number): Promise<void> {
    const old = vring.callFd;
    vring.callFd = fd;
    const pair = this.pairs.get(vring.index >> 1);
    if (vring.running && pair) await pair.setCall(vring.index, fd);
    if (old >= 0) this.hooks.close(old);
  }

  /** Workers take features at creation; after SET_FEATURES the idle ones are recreated on demand. */
  async dropIdle(): Promise<void> {
    for (const [index, pair] of this.pairs) {
      if (this.vrings[index * 2].running || this.vrings[index * 2 + 1].running) continue;
      this.pairs.delete(index);
      await this.retire(pair);
    }
  }

  /** RESET_DEVICE: every ring stops and forgets its configuration; workers stay. */
  async resetRings(): Promise<void> {
    for (const vring of this.vrings) {
      vring.enabled = false;
      vring.kickSet = false;
      await this.reconcile(vring);
      this.forget(vring);
    }
  }

  /** The connection ended: every worker finishes, every ring and the backend channel are let go. */
  async shutdown(): Promise<void> {
    const pairs = [...this.pairs.values()];
    this.pairs.clear();
    await Promise.all(pairs.map((p) => this.retire(p)));
    for (const vring of this.vrings) this.forget(vring);
    if (this.backendFd >= 0) this.hooks.close(this.backendFd);
    this.backendFd = -1;
  }

  /** Closes a ring's fds and puts a blank state in its place. */
  private forget(vring: VringState): void {
    for (const fd of [vring.kickFd, vring.callFd, vring.errFd]) if (fd >= 0) this.hooks.close(fd);
    this.vrings[vring.index] = new VringState(vring.index);
  }

  private isRunning(pairIndex: number): boolean {
    return this.vrings[pairIndex * 2].running || this.vrings[pairIndex * 2 + 1].running;
  }

  /** Per worker thread, the pairs it serves with a ring running, `except` not counted. */
  private runningPairsByThread(except: number): number[] {
    const load = new Array<number>(this.threads.length).fill(0);
    for (const [index, pair] of this.pairs) {
      if (index === except || !this.isRunning(index)) continue;
      const k = this.threads.indexOf(pair.thread);
      if (k >= 0) load[k]++;
    }
    return load;
  }

  /** How many worker threads, where they run, how they idle and which thread reads IOTLB requests (for inspect). */
  get placement(): {
    workers: number; cpus: number[]; sharesCpu: boolean; busyPollUs: number; yieldWhileParked: boolean; iotlbReader: ResolvedIotlbReader;
  } {
    return {
      workers: this.threads.length, cpus: [...(this.options.cpus ?? [])], sharesCpu: this.sharesCpu,
      busyPollUs: this.busyPollUs, yieldWhileParked: this.yieldWhileParked, iotlbReader: this.iotlbReader,
    };
  }

  /** ThreadSetup.yieldWhileParked: unless a reader thread of its own reads the answers to misses. */
  private get yieldWhileParked(): boolean {
    return this.iotlbReader !== 'thread';
  }

  /** Each running worker thread's idle poll window (µs; -1: never sleeps) and sleeps so far (for inspect). */
  get idling(): Array<{ worker: number; windowUs: number; sleeps: number }> {
    return this.threads.flatMap((t) => (t && !t.exited ? [{ worker: t.number, ...t.idleState }] : []));
  }

  /**
   * --iotlb-reader with auto resolved: the worker when serve has fewer CPUs than threads that
   * poll (no thread of serve then waits for another's CPU), else a reader thread of its own.
   */
  get iotlbReader(): ResolvedIotlbReader {
    const reader = this.options.iotlbReader ?? 'auto';
    if (reader === 'auto') return this.sharesCpu ? 'worker' : 'thread';
    return reader;
  }

  /** ThreadSetup.busyPollUs: serve --busy-poll-us, else polling on only with a CPU per worker. */
  private get busyPollUs(): number {
    return this.options.busyPollUs ?? (this.sharesCpu ? 0 : DEFAULT_BUSY_POLL_US);
  }

  /** Which worker thread serves the pair (for inspect); null while it has none. */
  workerOf(pairIndex: number): number | null {
    return this.pairs.get(pairIndex)?.thread.number ?? null;
  }

  /** Worker thread k, started on demand. */
  private threadAt(k: number): WorkerThread {
    const existing = this.threads[k];
    if (existing && !existing.exited) return existing;
    const cpus = this.options.cpus ?? [];
    const thread = new WorkerThread({
      worker: k,
      busyPollUs: this.busyPollUs,
      sharesCpu: this.sharesCpu,
      yieldWhileParked: this.yieldWhileParked,
      cpus: cpus.length > 0 ? [cpus[k % cpus.length]!] : [],
      onBroken: (ring, reason) => {
        this.vrings[ring].broken = reason;
        this.vrings[ring].running = false;
        this.options.log('error', `vring ${ring} broken: ${reason}`);
      },
      onLog: (level, text) => this.options.log(level, text),
    });
    this.threads[k] = thread;
    return thread;
  }

  /** The pair leaves its thread; a thread left with no pair stops. */
  private async retire(pair: QueuePairHost): Promise<void> {
    this.hooks.retiring(pair);
    await pair.shutdown();
    const thread = pair.thread;
    if (thread.pairCount === 0 || thread.exited) {
      const k = this.threads.indexOf(thread);
      if (k >= 0) this.threads[k] = null;
      await thread.shutdown();
    }
  }
}

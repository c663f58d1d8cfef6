/**
 * The main thread's handle on one worker thread (worker.ts): spawns it, numbers commands and
 * settles their promises in order, wakes it, and routes what it reports to the queue pair it
 * concerns. Queue pairs (QueuePairHost) join with addPair() and leave with removePair(); the
 * device decides which pairs share a thread (serve --workers).
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { closeFd, eventfdCreate, eventfdWrite } from '../sys/index.js';
import { IDLE_SLOTS, IdleSlot, type FromWorker, type ThreadSetup, type ToPair, type WorkerSetup } from './contract.js';
import type { SocketReturn } from './iotlb-fast-path.js';

const WORKER_URL = new URL('./worker.js', import.meta.url);
const COMMAND_TIMEOUT_MS = 5000;

/** What a worker thread tells one of its pairs. */
export interface PairEvents {
  socketReturned(back: SocketReturn): void;
}

export interface WorkerThreadOptions {
  worker: number;
  busyPollUs: number;
  sharesCpu: boolean;
  yieldWhileParked: boolean;
  cpus: number[];
  /** A ring broke (its global index). */
  onBroken(index: number, reason: string): void;
  onLog(level: string, text: string): void;
}

export class WorkerThread {
  readonly number: number;
  private readonly worker: Worker;
  /** Written to wake the thread from poll(); closed by shutdown(). */
  readonly wakeFd: number;
  /** Commands posted, as the worker's doorbell (contract.ts). */
  private readonly posted = new Int32Array(new SharedArrayBuffer(4));
  /** How the thread idles (contract.ts IdleSlot), as it last wrote it. */
  private readonly idle = new Float64Array(new SharedArrayBuffer(IDLE_SLOTS * 8));
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private readonly pairs = new Map<number, PairEvents>();
  private closed: Promise<void> | null = null;
  exited = false;

  constructor(options: WorkerThreadOptions) {
    this.number = options.worker;
    this.wakeFd = eventfdCreate(0);
    const setup: ThreadSetup = {
      worker: options.worker, wakeFd: this.wakeFd, doorbell: this.posted.buffer as SharedArrayBuffer,
      busyPollUs: options.busyPollUs, sharesCpu: options.sharesCpu, yieldWhileParked: options.yieldWhileParked, cpus: options.cpus,
      idle: this.idle.buffer as SharedArrayBuffer,
    };
    this.worker = new Worker(fileURLToPath(WORKER_URL), { workerData: setup, name: `worker-${options.worker}` });
    this.worker.on('message', (msg: FromWorker) => {
      if (msg.type === 'done') {
        const pending = this.waiting.get(msg.id);
        if (!pending) return;
        this.waiting.delete(msg.id);
        clearTimeout(pending.timer);
        if (msg.error) pending.reject(new Error(msg.error));
        else pending.resolve(msg.value);
      } else if (msg.type === 'socket-returned') {
        const { type: _type, pair, ...back } = msg;
        this.pairs.get(pair)?.socketReturned(back);
      } else if (msg.type === 'broken') {
        options.onBroken(msg.index, msg.reason);
      } else {
        options.onLog(msg.level, msg.text);
      }
    });
    this.worker.on('error', (err) => options.onLog('error', `worker ${this.number} failed: ${err.stack ?? err}`));
    this.worker.on('exit', () => {
      this.exited = true;
      for (const pair of this.pairs.values()) pair.socketReturned({ reason: `worker ${this.number} exited`, fatal: false });
      for (const [, pending] of this.waiting) {
        clearTimeout(pending.timer);
        pending.reject(new Error(`worker ${this.number} exited`));
      }
      this.waiting.clear();
    });
  }

  /** Queue pairs this thread serves. */
  get pairCount(): number {
    return this.pairs.size;
  }

  /** The poll window of the thread's next idle spell (µs; -1: it never sleeps) and how often it slept. */
  get idleState(): { windowUs: number; sleeps: number } {
    return { windowUs: this.idle[IdleSlot.windowUs]!, sleeps: this.idle[IdleSlot.sleeps]! };
  }

  /** The thread serves `setup`'s pair from its next round on. */
  addPair(setup: WorkerSetup, events: PairEvents): Promise<void> {
    this.pairs.set(setup.pairIndex, events);
    return this.post({ type: 'add-pair', setup });
  }

  /** The pair leaves (socket given back, memory unmapped); resolves when it has. */
  async removePair(pair: number): Promise<void> {
    try {
      await this.send(pair, { type: 'remove-pair' });
    } finally {
      this.pairs.delete(pair);
    }
  }

  /** A command for one of the thread's pairs; resolves with its answer. */
  send<T>(pair: number, command: ToPair): Promise<T> {
    return this.post({ ...command, pair });
  }

  private post<T>(command: object): Promise<T> {
    if (this.exited) return Promise.reject(new Error(`worker ${this.number} is not running`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`worker ${this.number}: '${(command as { type: string }).type}' not done within ${COMMAND_TIMEOUT_MS} ms`));
      }, COMMAND_TIMEOUT_MS);
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.worker.postMessage({ ...command, id });
      Atomics.add(this.posted, 0, 1);
      this.wake();
    });
  }

  /** Interrupts a worker sleeping in poll() so it reads its messages and IOTLB rings. */
  wake(): void {
    if (!this.exited) eventfdWrite(this.wakeFd, 1);
  }

  /** Stops the thread (its pairs with it) and closes its wake eventfd; idempotent. */
  shutdown(): Promise<void> {
    this.closed ??= (async () => {
      if (!this.exited) {
        try {
          await this.post({ type: 'shutdown' });
        } catch {
          // fall through to terminate
        }
        await this.worker.terminate();
      }
      closeFd(this.wakeFd);
    })();
    return this.closed;
  }
}

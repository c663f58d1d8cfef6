/**
 * Entry point of a queue-pair worker thread. Busy-polls its rings while there is work, sleeps
 * in poll(2) on the kick eventfds (plus a wake eventfd the main thread writes) when idle, and
 * turns to its event loop between bursts only often enough to read ordered commands.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pollReadable, eventfdRead } from '../sys/index.js';
import type { FromWorker, ToWorker, WorkerSetup } from './contract.js';
import { QueuePairRuntime } from './queue-pair-runtime.js';

const setup = workerData as WorkerSetup;
const port = parentPort!;
const runtime = new QueuePairRuntime(setup);
const post = (msg: FromWorker): void => port.postMessage(msg);
runtime.onBroken = (index, reason) => post({ type: 'broken', index, reason });

/** Empty rounds before arming notifications and sleeping. */
const SPIN_ROUNDS = 512;
/**
 * Busy rounds between visits to the event loop when no command is waiting (commands ring
 * the doorbell and are read at the next round): a safety net for anything else queued there.
 */
const ROUNDS_PER_YIELD = 16384;
/** A sleeper wakes at least this often, in case a kick was lost. */
const SLEEP_MS = 50;

let stopping = false;
const inbox: ToWorker[] = [];
/** Commands posted by the main thread (contract.ts WorkerSetup.doorbell) and received here. */
const posted = new Int32Array(setup.doorbell);
let received = 0;
port.on('message', (msg: ToWorker) => {
  inbox.push(msg);
  received++;
});

function handle(msg: ToWorker): void {
  let value: unknown;
  try {
    switch (msg.type) {
      case 'memory': runtime.setMemory(msg.regions); break;
      case 'start-ring': runtime.startRing(msg.ring); break;
      case 'stop-ring': value = runtime.stopRing(msg.index); break;
      case 'set-call': runtime.setCall(msg.index, msg.callFd); break;
      case 'set-backend': runtime.misses.backendFd = msg.backendFd; break;
      case 'snapshot': value = runtime.snapshot(msg.entries); break;
      case 'clear-iotlb': runtime.clearCache(msg.index); break;
      case 'shutdown': stopping = true; runtime.unmapAll(); break;
    }
    post({ type: 'done', id: msg.id, value });
  } catch (err) {
    post({ type: 'done', id: msg.id, error: (err as Error).message });
  }
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Sleeps or visits the event loop quiescent (queue-pair-runtime.ts): an INVALIDATE need not wait for us. */
async function yieldQuiescent(): Promise<void> {
  runtime.quiesce();
  await yieldToLoop();
  runtime.resume();
}

async function run(): Promise<void> {
  let idle = 0;
  let rounds = 0;
  runtime.resume();
  while (!stopping) {
    while (inbox.length > 0 && !stopping) handle(inbox.shift()!);
    if (stopping) break;
    const work = runtime.step();
    if (work > 0) {
      idle = 0;
    } else if (++idle >= SPIN_ROUNDS) {
      idle = 0;
      if (!runtime.armNotifications()) {
        const ready = runtime.readyFlags;
        runtime.quiesce();
        const woke = pollReadable(runtime.waitFds, runtime.waitCount, SLEEP_MS, ready);
        runtime.resume();
        if (woke > 0) runtime.consumeWakeups(ready);
      }
      runtime.disarmNotifications();
      await yieldQuiescent();
      continue;
    }
    if (Atomics.load(posted, 0) !== received || ++rounds >= ROUNDS_PER_YIELD) {
      rounds = 0;
      await yieldQuiescent();
    }
  }
  runtime.quiesce();
  eventfdRead(setup.wakeFd);
}

run().catch((err) => {
  post({ type: 'log', level: 'error', text: `queue pair ${setup.pairIndex} stopped: ${(err as Error).stack ?? err}` });
});

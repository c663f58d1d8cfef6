/**
 * Entry point of a queue-pair worker thread. Busy-polls its rings while there is work and
 * for a budget of idle time after it (`serve --busy-poll-us`), then sleeps in poll(2) on the
 * kick eventfds (plus a wake eventfd the main thread writes), and turns to its event loop
 * only when a command is waiting (or, as a safety net, every ROUNDS_PER_YIELD rounds).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pollReadable, eventfdRead, yieldCpu } from '../sys/index.js';
import type { FromWorker, ToWorker, WorkerSetup } from './contract.js';
import { QueuePairRuntime } from './queue-pair-runtime.js';

const setup = workerData as WorkerSetup;
const port = parentPort!;
const runtime = new QueuePairRuntime(setup);
const post = (msg: FromWorker): void => port.postMessage(msg);
runtime.onBroken = (index, reason) => post({ type: 'broken', index, reason });

/**
 * Busy rounds between visits to the event loop when no command is waiting (commands ring
 * the doorbell and are read at the next round): a safety net for anything else queued there.
 */
const ROUNDS_PER_YIELD = 16384;
/** A sleeper wakes at least this often, in case a kick was lost (and to retry a miss). */
const SLEEP_MS = 50;
/** How long to spin without work before sleeping (WorkerSetup.busyPollUs; < 0: never sleep). */
const busyPollMs = setup.busyPollUs < 0 ? Infinity : setup.busyPollUs / 1000;

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

/** Visits the event loop (where posted commands arrive), then runs them as a step of their own. */
async function readCommands(): Promise<void> {
  await yieldToLoop(); // quiescent: an INVALIDATE need not wait for us
  runtime.resume();
  while (inbox.length > 0 && !stopping) handle(inbox.shift()!);
  runtime.quiesce();
}

/**
 * Arms the rings' notifications and sleeps in poll(2) until a kick, the tap, or the wake
 * eventfd (a command or an IOTLB operation for a sleeper) — unless work arrived meanwhile.
 */
function sleep(): void {
  runtime.resume();
  const fresh = runtime.armNotifications();
  runtime.quiesce();
  if (!fresh && runtime.mayStartSleeping()) {
    const ready = runtime.readyFlags;
    const woke = pollReadable(runtime.waitFds, runtime.waitCount, SLEEP_MS, ready);
    runtime.stoppedSleeping();
    if (woke > 0) runtime.consumeWakeups(ready);
  } else {
    runtime.stoppedSleeping();
  }
  runtime.resume();
  runtime.disarmNotifications();
  runtime.quiesce();
}

/** Idle rounds between two readings of the clock (performance.now() costs ~100 ns here). */
const IDLE_ROUNDS_PER_CLOCK = 32;

async function run(): Promise<void> {
  let idleSince = -1;
  let idleRounds = 0;
  let rounds = 0;
  while (!stopping) {
    if (Atomics.load(posted, 0) !== received || ++rounds >= ROUNDS_PER_YIELD) {
      rounds = 0;
      await readCommands();
      if (stopping) break;
    }
    // Each step is one burst per ring with the IOTLB drained first; between steps the worker
    // is quiescent, so an INVALIDATE waits at most for the burst in flight (iotlb-ring.ts).
    runtime.resume();
    const work = runtime.step();
    runtime.quiesce();
    if (work > 0) {
      idleSince = -1;
      continue;
    }
    // Idle: poll on for the busy-poll budget (the answer to a miss, the next frame of a guest
    // that is between two kicks), then sleep: a wake-up across CPUs costs tens of µs here.
    // While polling, give way to any thread that wants this CPU: the control thread with an
    // IOTLB message, or a front-end sharing it, would otherwise wait out our time slice.
    yieldCpu();
    if (++idleRounds < IDLE_ROUNDS_PER_CLOCK && idleSince >= 0) continue;
    idleRounds = 0;
    const now = performance.now();
    if (idleSince < 0) idleSince = now;
    else if (now - idleSince >= busyPollMs) {
      idleSince = -1;
      sleep();
    }
  }
  eventfdRead(setup.wakeFd);
}

run().catch((err) => {
  post({ type: 'log', level: 'error', text: `queue pair ${setup.pairIndex} stopped: ${(err as Error).stack ?? err}` });
});

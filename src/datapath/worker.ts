/**
 * Entry point of a queue-pair worker thread. Busy-polls its rings while there is work and
 * for a budget of idle time after it (`serve --busy-poll-us`), then sleeps in poll(2) on the
 * kick eventfds (plus a wake eventfd the main thread writes, and the front-end socket when it
 * is lent), and turns to its event loop when a command is waiting (or, as a safety net,
 * every ROUNDS_PER_YIELD rounds).
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
runtime.onHeld = (text) => post({ type: 'log', level: 'warn', text });

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
      case 'dirty-log': runtime.setDirtyLog(msg.log); break;
      case 'lend-socket': runtime.lendSocket(msg.fd); break;
      case 'return-socket': giveSocketBack('taken back by the session'); break;
      case 'shutdown': stopping = true; giveSocketBack('the worker is stopping'); runtime.setDirtyLog(null); runtime.unmapAll(); break;
    }
    post({ type: 'done', id: msg.id, value });
  } catch (err) {
    post({ type: 'done', id: msg.id, error: (err as Error).message });
  }
}

function giveSocketBack(reason: string): void {
  const back = runtime.returnSocket(reason);
  if (back) post({ type: 'socket-returned', ...back });
}

/** Reads the lent front-end socket (iotlb-fast-path.ts); true if it applied an IOTLB request. */
function pollSocket(): boolean {
  const before = runtime.socketRequests;
  const back = runtime.pollSocket();
  if (back) post({ type: 'socket-returned', ...back });
  return runtime.socketRequests !== before;
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Arms the rings' notifications and sleeps in poll(2) until a kick, the tap, or the wake
 * eventfd (a command, or an IOTLB operation for a sleeper), unless work arrived meanwhile.
 */
function sleep(): void {
  if (!runtime.armNotifications()) {
    const ready = runtime.readyFlags;
    runtime.quiesce();
    if (runtime.mayStartSleeping()) {
      const woke = pollReadable(runtime.waitFds, runtime.waitCount, SLEEP_MS, ready);
      runtime.stoppedSleeping();
      runtime.resume();
      if (woke > 0) runtime.consumeWakeups(ready);
    } else {
      runtime.stoppedSleeping();
      runtime.resume();
    }
  }
  runtime.disarmNotifications();
}

/**
 * Empty rounds before the worker tries to sleep (and, past --busy-poll-us, between two looks
 * at the clock). Polling an empty ring for longer, without these pauses, took a DPDK
 * virtio-user front-end from 0.97x to 0.7-0.87x of DPDK's vhost (interleaved bench): each
 * poll of a ring the front-end is writing pulls its cache lines away from it.
 */
const SPIN_ROUNDS = 512;
/**
 * While rings move frames, the lent socket is looked at every this many steps (a recvmsg
 * each): an IOTLB request then waits at most a few bursts. An idle round always looks.
 */
const BUSY_STEPS_PER_SOCKET_CHECK = 8;

async function run(): Promise<void> {
  let idle = 0;
  let idleSince = -1;
  let rounds = 0;
  let busySteps = 0;
  while (!stopping) {
    // Resumed for one round: the IOTLB ring is drained first, and the worker is quiescent
    // again between rounds (iotlb-ring.ts), so an INVALIDATE waits at most for the round in
    // flight, never for a worker the scheduler took off its CPU between two rounds.
    runtime.resume();
    while (inbox.length > 0 && !stopping) handle(inbox.shift()!);
    if (stopping) break;
    let work = runtime.step();
    if (runtime.socketLent && (work === 0 || ++busySteps >= BUSY_STEPS_PER_SOCKET_CHECK)) {
      busySteps = 0;
      if (pollSocket()) work++;
    }
    if (work > 0) {
      idle = 0;
      idleSince = -1;
    } else if (++idle >= SPIN_ROUNDS) {
      idle = 0;
      if (setup.sharesCpu && busyPollMs > 0) {
        // Polling on past SPIN_ROUNDS without a CPU of our own: give way to the thread that
        // wants this one (the control thread with an IOTLB message would otherwise wait out
        // our time slice). Not by default: a yield also hands the CPU to whatever else spins
        // there (a DPDK lcore, a vCPU) for a whole slice.
        runtime.quiesce();
        yieldCpu();
        runtime.resume();
      }
      // Poll on for the busy-poll budget: the answer to a miss, or a guest's next frame, is
      // then seen without a wake-up across CPUs (tens of µs here). Commands are still read.
      let pollOn = false;
      if (busyPollMs > 0) {
        const now = performance.now();
        if (idleSince < 0) idleSince = now;
        pollOn = now - idleSince < busyPollMs;
      }
      if (!pollOn) {
        idleSince = -1;
        // Woken by a kick, the tap, the lent socket or the wake eventfd: straight back to the
        // rings. The event loop is visited below only when the doorbell says a command waits
        // (each visit is a trip through libuv, on the path of every wake-up).
        sleep();
      }
    }
    runtime.quiesce();
    if (Atomics.load(posted, 0) !== received || ++rounds >= ROUNDS_PER_YIELD) {
      rounds = 0;
      await yieldToLoop();
    }
  }
  runtime.quiesce();
  eventfdRead(setup.wakeFd);
}

run().catch((err) => {
  post({ type: 'log', level: 'error', text: `queue pair ${setup.pairIndex} stopped: ${(err as Error).stack ?? err}` });
});

/**
 * Entry point of a worker thread. It serves one or more queue pairs (serve --workers), each a
 * QueuePairRuntime, in turn: one burst of each per round, so no pair starves another. It
 * busy-polls while any of them has work and for a window of idle time after it (at most
 * `serve --busy-poll-us`; poll-window.ts), then sleeps in poll(2) on every pair's kick
 * eventfds, tap and lent socket plus the thread's wake eventfd, and turns to its event loop
 * when a command is waiting (or, as a safety net, every ROUNDS_PER_YIELD rounds).
 *
 * IOTLB consistency is per pair: a pair is resumed (its IOTLB ring drained) just before its
 * burst and quiescent again right after it, so an INVALIDATE for one pair waits at most for
 * that pair's burst in flight, never for the other pairs this thread serves.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pollReadable, eventfdRead, setThreadAffinity, yieldCpu } from '../sys/index.js';
import { IdleSlot, type FromWorker, type ThreadSetup, type ToPair, type ToWorker } from './contract.js';
import { PollWindow } from './poll-window.js';
import { QueuePairRuntime } from './queue-pair-runtime.js';

const setup = workerData as ThreadSetup;
const port = parentPort!;
const post = (msg: FromWorker): void => port.postMessage(msg);
if (setup.cpus.length > 0) setThreadAffinity(0, setup.cpus);

/**
 * Busy rounds between visits to the event loop when no command is waiting (commands ring
 * the doorbell and are read at the next round): a safety net for anything else queued there.
 */
const ROUNDS_PER_YIELD = 16384;
/** A sleeper wakes at least this often, in case a kick was lost (and to retry a miss). */
const SLEEP_MS = 50;
/** The longest poll of an idle spell before sleeping (ThreadSetup.busyPollUs; < 0: never sleep). */
const busyPollMs = setup.busyPollUs < 0 ? Infinity : setup.busyPollUs / 1000;
/** The poll of each idle spell, within that budget, as long as spells show it pays. */
const pollWindow = new PollWindow(busyPollMs);
/** What inspect shows of this thread's idling (contract.ts IdleSlot). */
const idleState = new Float64Array(setup.idle);
/** At most this many fds per pair (QueuePairRuntime.waitFds), plus the wake eventfd. */
const FDS_PER_PAIR = 4;

let stopping = false;
/** The pairs served, in the order they arrived: each round visits them in this order. */
let runtimes: QueuePairRuntime[] = [];
const byPair = new Map<number, QueuePairRuntime>();
let waitFds = new Int32Array(1);
let ready = new Uint8Array(1);

const inbox: ToWorker[] = [];
/** Commands posted by the main thread (contract.ts ThreadSetup.doorbell) and received here. */
const posted = new Int32Array(setup.doorbell);
let received = 0;
port.on('message', (msg: ToWorker) => {
  inbox.push(msg);
  received++;
});

function addPair(runtime: QueuePairRuntime): void {
  const pair = runtime.setup.pairIndex;
  runtime.onBroken = (index, reason) => post({ type: 'broken', index, reason });
  runtime.onWarning = (text) => post({ type: 'log', level: 'warn', text });
  runtimes = [...runtimes, runtime];
  byPair.set(pair, runtime);
  waitFds = new Int32Array(runtimes.length * FDS_PER_PAIR + 1);
  ready = new Uint8Array(waitFds.length);
  showWindow();
}

function removePair(runtime: QueuePairRuntime): void {
  giveSocketBack(runtime, 'the queue pair left its worker');
  runtime.setDirtyLog(null);
  runtime.unmapAll();
  runtimes = runtimes.filter((r) => r !== runtime);
  byPair.delete(runtime.setup.pairIndex);
  showWindow();
}

function handlePair(runtime: QueuePairRuntime, msg: ToPair): unknown {
  switch (msg.type) {
    case 'memory': runtime.setMemory(msg.regions); return undefined;
    case 'start-ring': runtime.startRing(msg.ring); return undefined;
    case 'stop-ring': return runtime.stopRing(msg.index);
    case 'set-call': runtime.setCall(msg.index, msg.callFd); return undefined;
    case 'set-backend': runtime.misses.backendFd = msg.backendFd; return undefined;
    case 'snapshot': return runtime.snapshot(msg.entries);
    case 'clear-iotlb': runtime.clearCache(msg.index); return undefined;
    case 'dirty-log': runtime.setDirtyLog(msg.log); return undefined;
    case 'lend-socket': runtime.lendSocket(msg.fd); return undefined;
    case 'return-socket': giveSocketBack(runtime, 'taken back by the session'); return undefined;
    case 'remove-pair': removePair(runtime); return undefined;
  }
}

function handle(msg: ToWorker): void {
  let value: unknown;
  try {
    if (msg.type === 'add-pair') {
      addPair(new QueuePairRuntime(msg.setup));
    } else if (msg.type === 'shutdown') {
      stopping = true;
      for (const runtime of runtimes) removePair(runtime);
    } else {
      const runtime = byPair.get(msg.pair);
      if (runtime === undefined) throw new Error(`queue pair ${msg.pair} is not served by worker ${setup.worker}`);
      // Resumed like a burst: a command may translate (a ring started through the IOTLB).
      runtime.resume();
      try {
        value = handlePair(runtime, msg);
      } finally {
        runtime.quiesce();
      }
    }
    post({ type: 'done', id: msg.id, value });
  } catch (err) {
    post({ type: 'done', id: msg.id, error: (err as Error).message });
  }
}

function giveSocketBack(runtime: QueuePairRuntime, reason: string): void {
  const back = runtime.returnSocket(reason);
  if (back) post({ type: 'socket-returned', pair: runtime.setup.pairIndex, ...back });
}

/** Reads a pair's lent front-end socket (iotlb-fast-path.ts); true if it applied an IOTLB request. */
function pollSocket(runtime: QueuePairRuntime): boolean {
  const before = runtime.socketRequests;
  const back = runtime.pollSocket();
  if (back) post({ type: 'socket-returned', pair: runtime.setup.pairIndex, ...back });
  return runtime.socketRequests !== before;
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const transmitParked = (): boolean => {
  for (const runtime of runtimes) if (runtime.transmitParked) return true;
  return false;
};

/** A pair translates through an IOTLB (the front-end negotiated VIRTIO_F_IOMMU_PLATFORM). */
const translating = (): boolean => {
  for (const runtime of runtimes) if (runtime.setup.iommu) return true;
  return false;
};

/**
 * How long the current idle spell may poll. Behind a vIOMMU the whole budget: every frame
 * there waits on IOTLB round trips that polling shortens (an adapted window measured
 * 0.88-1.07x of it on strict and lazy guests in same-run A/Bs, docs/performance.md).
 */
const spellWindowMs = (): number => (translating() ? busyPollMs : pollWindow.windowMs);

function showWindow(): void {
  idleState[IdleSlot.windowUs] = busyPollMs === Infinity ? -1 : spellWindowMs() * 1000;
}

const quiesceAll = (): void => {
  for (const runtime of runtimes) runtime.quiesce();
};

/**
 * Arms every pair's notifications and sleeps in poll(2) until a kick, a tap, a lent socket or
 * the wake eventfd (a command, or an IOTLB operation for a sleeper), unless work arrived
 * meanwhile on any pair. Every pair is quiescent on entry and stays so while asleep.
 */
function sleep(): void {
  let fresh = false;
  for (const runtime of runtimes) if (runtime.armNotifications()) fresh = true;
  let mayPoll = !fresh;
  let started = 0;
  for (; mayPoll && started < runtimes.length; started++) if (!runtimes[started]!.mayStartSleeping()) mayPoll = false;
  if (mayPoll) {
    let n = 0;
    for (const runtime of runtimes) {
      for (let i = 0; i < runtime.waitCount; i++) waitFds[n++] = runtime.waitFds[i]!;
    }
    waitFds[n++] = setup.wakeFd;
    idleState[IdleSlot.sleeps]++;
    const woke = pollReadable(waitFds, n, SLEEP_MS, ready);
    if (woke > 0) {
      let at = 0;
      for (const runtime of runtimes) {
        runtime.consumeWakeups(ready, at);
        at += runtime.waitCount;
      }
      if (ready[n - 1] !== 0) eventfdRead(setup.wakeFd);
    }
  }
  for (let i = 0; i < started; i++) runtimes[i]!.stoppedSleeping();
  for (const runtime of runtimes) runtime.disarmNotifications();
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

/** One burst of every pair, each resumed for its burst and quiescent after it; the chains moved. */
function round(checkSocket: boolean): number {
  let work = 0;
  for (const runtime of runtimes) {
    // Resumed for its burst: the pair's IOTLB ring is drained first, and the pair is
    // quiescent again right after (iotlb-ring.ts), so an INVALIDATE waits at most for the
    // burst in flight, never for a thread the scheduler took off its CPU between bursts.
    runtime.resume();
    let moved = runtime.step();
    if (runtime.socketLent && (checkSocket || moved === 0) && pollSocket(runtime)) moved++;
    runtime.quiesce();
    work += moved;
  }
  return work;
}

async function run(): Promise<void> {
  let idle = 0;
  /** When the current idle spell's poll window opened (performance.now()); -1: not idle. */
  let spellStart = -1;
  /** When the current poll window opened: at the spell's start, and again after each sleep. */
  let pollFrom = -1;
  let rounds = 0;
  let busySteps = 0;
  while (!stopping) {
    while (inbox.length > 0 && !stopping) handle(inbox.shift()!);
    if (stopping) break;
    // A lent socket is read every BUSY_STEPS_PER_SOCKET_CHECK busy rounds, and on every idle one.
    const checkSocket = ++busySteps >= BUSY_STEPS_PER_SOCKET_CHECK;
    if (checkSocket) busySteps = 0;
    const work = round(checkSocket);
    // A TX ring parked on a miss, nothing else to do: the answer needs the front-end's
    // thread (QEMU's main loop), which the MISS just woke, and a sync wake-up queues it on
    // this CPU behind us. When serve's main thread or this worker reads the answer, a yield
    // lets it run now instead of after our time slice. With a reader thread of its own
    // (setup.yieldWhileParked false) it does not: every yield let QEMU's main loop run here,
    // and Linux then woke it here again, behind us, where without the yield the other CPU
    // pulls it over once idle and it stays there, as beside DPDK's lcore (docs/performance.md).
    // Not for RX: there our interrupts keep waking the guest's vCPU onto this CPU, and a
    // yield hands it a whole slice.
    if (work === 0 && setup.yieldWhileParked && transmitParked()) yieldCpu();
    if (work > 0) {
      idle = 0;
      if (spellStart >= 0) {
        pollWindow.spellEnded(performance.now() - spellStart);
        spellStart = -1;
        showWindow();
      }
    } else if (++idle >= SPIN_ROUNDS) {
      idle = 0;
      if (setup.sharesCpu && busyPollMs > 0) {
        // Polling on past SPIN_ROUNDS without a CPU of our own: give way to the thread that
        // wants this one (the control thread with an IOTLB message would otherwise wait out
        // our time slice). Not by default: a yield also hands the CPU to whatever else spins
        // there (a DPDK lcore, a vCPU) for a whole slice. Every pair is quiescent here.
        yieldCpu();
      }
      // Poll on for the spell's window (spellWindowMs): a guest's next frame, or the answer
      // to a miss, is then seen without a wake-up across CPUs (tens of µs here). Commands are
      // still read. The spell goes on through a sleep that ends without work (a timeout, a
      // command, an IOTLB operation), which opens a new window: a guest's next frame often
      // follows an INVALIDATE.
      let pollOn = false;
      if (busyPollMs > 0) {
        const now = performance.now();
        if (spellStart < 0) spellStart = pollFrom = now;
        pollOn = now - pollFrom < spellWindowMs();
      }
      if (!pollOn) {
        // Woken by a kick, a tap, a lent socket or the wake eventfd: straight back to the
        // rings. The event loop is visited below only when the doorbell says a command waits
        // (each visit is a trip through libuv, on the path of every wake-up).
        sleep();
        pollFrom = performance.now();
      }
    }
    if (Atomics.load(posted, 0) !== received || ++rounds >= ROUNDS_PER_YIELD) {
      rounds = 0;
      await yieldToLoop();
    }
  }
  quiesceAll();
  eventfdRead(setup.wakeFd);
}

showWindow();
run().catch((err) => {
  post({ type: 'log', level: 'error', text: `worker ${setup.worker} stopped: ${(err as Error).stack ?? err}` });
});

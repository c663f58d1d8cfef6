/**
 * The IOTLB reader thread (`serve --iotlb-reader thread`; its host is iotlb-reader.ts). While
 * the session on the main thread is idle, it lends this thread the front-end socket. The
 * thread blocks in poll(2) on it, reads each plain IOTLB UPDATE or INVALIDATE
 * (datapath/iotlb-fast-path.ts: anything else gives the socket back at a message boundary),
 * hands the operation to every queue-pair worker through its IOTLB ring, and acks: an
 * UPDATE once queued, an INVALIDATE once every worker has applied it or is quiescent, the
 * main thread's rules (docs/architecture.md).
 *
 * Why not the main thread: a guest behind a strict vIOMMU sends an INVALIDATE from its vCPU
 * for every unmap and stands still until the ack, and the thread that sent the ack keeps its
 * CPU until it sleeps again. The main thread then goes back through N-API's callback scope and
 * libuv's loop (two epoll_pwait calls), ~4 µs here; this loop goes straight back to poll.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { IotlbFastPath, type SocketReturn } from '../datapath/iotlb-fast-path.js';
import { IotlbOp, IotlbRingProducer, type IotlbOpSink } from '../datapath/iotlb-ring.js';
import { LatencyHistogram } from '../stats/latency.js';
import { eventfdRead, eventfdWrite, pollReadable } from '../sys/index.js';
import type { ReaderLend, ReaderSetup, ReaderToHost } from './iotlb-reader.js';

/** How long an operation waits for a worker (as the main thread's commands do) before the connection is given up. */
const INVALIDATE_TIMEOUT_MS = 5000;
/**
 * poll(2)'s timeout while lent: a terminate (the process exiting) cannot interrupt a native
 * call, only the JavaScript after it, so the thread looks up this often even with nothing to read.
 */
const POLL_MS = 100;

/** Between two tries at a full ring (1024 operations the worker has not drained: rare). */
const FULL_RING_PAUSE_MS = 0.1;
const pause = new Int32Array(new SharedArrayBuffer(4));

const setup = workerData as ReaderSetup;
const returnRequested = new Int32Array(setup.returnFlag);
const applied = new IotlbRingProducer(setup.appliedRing);
const updateAcks = new LatencyHistogram(new Float64Array(setup.acks, 0, setup.ackSlots));
const invalidateAcks = new LatencyHistogram(new Float64Array(setup.acks, setup.ackSlots * 8, setup.ackSlots));

/** Every worker's IOTLB ring, as the sink of what the socket brings. */
class WorkerRings implements IotlbOpSink {
  private readonly producers: IotlbRingProducer[];
  private readonly seqs: number[];

  constructor(rings: SharedArrayBuffer[], private readonly wakeFds: number[]) {
    this.producers = rings.map((ring) => new IotlbRingProducer(ring));
    this.seqs = new Array<number>(rings.length).fill(0);
  }

  update(iova: number, size: number, uaddr: number, perm: number): void {
    for (let i = 0; i < this.producers.length; i++) this.push(i, IotlbOp.Update, iova, size, uaddr, perm);
  }

  /** Throws when a worker stays inside one step for INVALIDATE_TIMEOUT_MS: the session takes over. */
  invalidate(iova: number, size: number): void {
    const n = this.producers.length;
    for (let i = 0; i < n; i++) this.seqs[i] = this.push(i, IotlbOp.Invalidate, iova, size, 0, 0);
    for (let i = 0; i < n; i++) {
      const deadline = performance.now() + INVALIDATE_TIMEOUT_MS;
      while (!this.producers[i]!.waitAppliedSync(this.seqs[i]!)) {
        if (performance.now() > deadline) throw new Error(`a worker did not apply an INVALIDATE within ${INVALIDATE_TIMEOUT_MS} ms`);
      }
    }
  }

  /** Queues one operation (waiting for room: the worker drains at its next step) and wakes a sleeping worker. */
  private push(i: number, op: number, iova: number, size: number, uaddr: number, perm: number): number {
    const producer = this.producers[i]!;
    let seq = producer.push(op, iova, size, uaddr, perm);
    if (seq < 0) eventfdWrite(this.wakeFds[i]!, 1);
    for (const deadline = performance.now() + INVALIDATE_TIMEOUT_MS; seq < 0; seq = producer.push(op, iova, size, uaddr, perm)) {
      if (performance.now() > deadline) throw new Error(`a worker's IOTLB ring stayed full for ${INVALIDATE_TIMEOUT_MS} ms`);
      Atomics.wait(pause, 0, 0, FULL_RING_PAUSE_MS); // the woken worker drains at its next step
    }
    if (producer.workerSleeping) eventfdWrite(this.wakeFds[i]!, 1);
    return seq;
  }
}

/** Reads the lent socket until it must go back; then tells the host why. */
function serveLent(lend: ReaderLend): void {
  const fast = new IotlbFastPath(new WorkerRings(lend.rings, lend.wakeFds), applied, updateAcks, invalidateAcks);
  fast.fd = lend.fd;
  const fds = new Int32Array([lend.fd, setup.controlFd]);
  const ready = new Uint8Array(2);
  let back: SocketReturn;
  for (;;) {
    if (Atomics.load(returnRequested, 0) !== 0) {
      back = { reason: 'taken back by the session', fatal: false };
      break;
    }
    if (pollReadable(fds, 2, POLL_MS, ready) === 0) continue;
    if (ready[1] !== 0) eventfdRead(setup.controlFd);
    if (ready[0] === 0) continue;
    try {
      if (fast.poll(1)) continue;
      back = fast.returned;
    } catch (err) {
      // A worker stuck or its ring full: the request was read but not acked; the session
      // cannot answer it now, so the connection goes (as when the main thread times out).
      back = { reason: (err as Error).message, fatal: true };
    }
    break;
  }
  Atomics.store(returnRequested, 0, 0);
  post({ type: 'returned', ...back });
}

function post(msg: ReaderToHost): void {
  parentPort!.postMessage(msg);
}

parentPort!.on('message', (msg: ReaderLend) => serveLent(msg));

/**
 * Would a control thread of its own answer IOTLB requests faster than serve's main thread?
 * A peer thread sends a 44-byte request (an IOTLB message's size) over a socketpair and waits
 * for a 20-byte ack, N times; the answering side is, in turn:
 *
 *   main thread   serve's way: libuv's watcher on the main thread's event loop, the addon's
 *                 receiveMessage / sendMessage (src/sys)
 *   poll thread   a worker thread blocking in poll(2), then recvmsg and sendmsg, as serve's
 *                 IOTLB reader thread does
 *   C responder   bench/c/responder.c, blocking in poll(2), recv, send (built with `cc` when
 *                 there is one; skipped, and said so, when there is not)
 *
 *   node dist/bench/control-rtt.js [--round-trips N] [--cpu C]
 *
 * --cpu runs each case under `taskset -c C` (both sides on one CPU); without it the scheduler
 * places them (usually on two CPUs). Prints µs per round trip, each case twice, alternated.
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { answerHelp } from './options.js';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { cProgram } from './c-program.js';
import { FdWatcher, pollReadable, receiveMessage, sendMessage, socketPair } from '../src/sys/index.js';

const REQUEST = 44;
/** The ack's size, as bench/c/responder.c sends it. */
const ACK = 20;

type Case = 'main' | 'poll' | 'c';
interface PeerJob { role: 'peer'; fd: number; n: number }
interface PollerJob { role: 'poller'; fd: number; n: number }

/** The requesting side: sends, waits in poll for the ack, reads it; µs per round trip. */
function peer(fd: number, n: number): number {
  const request = new Uint8Array(REQUEST);
  const buf = new Uint8Array(64);
  const fds = new Int32Array([fd]);
  const ready = new Uint8Array(1);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    sendMessage(fd, request);
    pollReadable(fds, 1, 1000, ready);
    receiveMessage(fd, buf);
  }
  return ((performance.now() - t0) * 1000) / n;
}

/** The worker thread blocking in poll(2). */
function poller(fd: number, n: number): void {
  const buf = new Uint8Array(64);
  const ack = new Uint8Array(ACK);
  const fds = new Int32Array([fd]);
  const ready = new Uint8Array(1);
  for (let i = 0; i < n; i++) {
    pollReadable(fds, 1, 1000, ready);
    receiveMessage(fd, buf, 0, REQUEST);
    sendMessage(fd, ack);
  }
}

if (!isMainThread) {
  const job = workerData as PeerJob | PollerJob;
  if (job.role === 'peer') parentPort!.postMessage(peer(job.fd, job.n));
  else poller(job.fd, job.n);
}

/** One case in this process: the peer in a worker thread, the answering side as `kind` says. */
async function runCase(kind: Case, n: number, responder: string | null): Promise<number> {
  const [a, b] = socketPair();
  const self = fileURLToPath(import.meta.url);
  if (kind === 'main') {
    const buf = new Uint8Array(4096);
    const ack = new Uint8Array(ACK);
    const watcher = new FdWatcher(b, () => {
      for (let got = receiveMessage(b, buf); got !== null; got = receiveMessage(b, buf)) sendMessage(b, ack);
    });
    try {
      return await peerIn(self, a, n);
    } finally {
      watcher.stop();
    }
  }
  if (kind === 'poll') {
    const answering = new Worker(self, { workerData: { role: 'poller', fd: b, n } satisfies PollerJob });
    const us = await peerIn(self, a, n);
    await answering.terminate();
    return us;
  }
  const child = spawn(responder!, ['3'], { stdio: ['ignore', 'inherit', 'inherit', b] });
  try {
    return await peerIn(self, a, n);
  } finally {
    child.kill();
  }
}

function peerIn(self: string, fd: number, n: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const w = new Worker(self, { workerData: { role: 'peer', fd, n } satisfies PeerJob });
    w.once('message', (us: number) => resolve(us));
    w.once('error', reject);
  });
}

/** The C responder (bench/c/responder.c); null (with the reason printed) when it cannot be built. */
function buildResponder(): string | null {
  try {
    return cProgram('responder');
  } catch (err) {
    console.log(`C responder skipped: ${(err as Error).message}`);
    return null;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { 'round-trips': { type: 'string', default: '20000' }, cpu: { type: 'string' }, child: { type: 'string' }, responder: { type: 'string' } },
    strict: true,
  });
  const n = Number(values['round-trips']);
  if (!(n > 0) || !Number.isInteger(n)) throw new Error(`--round-trips: "${values['round-trips']}" is not a positive integer`);
  if (values.child !== undefined) {
    // one case, in a process of its own (so --cpu confines exactly it)
    console.log(JSON.stringify(await runCase(values.child as Case, n, values.responder ?? null)));
    process.exit(0);
  }
  const responder = buildResponder();
  const cases: Case[] = responder === null ? ['main', 'poll'] : ['main', 'poll', 'c'];
  const results = new Map<Case, number[]>(cases.map((c) => [c, []]));
  for (let round = 0; round < 2; round++) {
    for (const kind of cases) {
      const argv = [process.execPath, fileURLToPath(import.meta.url), '--child', kind, '--round-trips', String(n), ...(responder ? ['--responder', responder] : [])];
      if (values.cpu !== undefined) argv.unshift('taskset', '-c', values.cpu);
      const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${kind}: ${r.stderr || r.error?.message}`);
      results.get(kind)!.push(Number(r.stdout.trim().split('\n').pop()));
    }
  }
  const names: Record<Case, string> = { main: 'main thread (libuv watcher)', poll: 'worker thread blocking in poll', c: 'C responder' };
  console.log(`round trip of a ${REQUEST}-byte request and a ${ACK}-byte ack, ${n} each, ${values.cpu === undefined ? 'placed by the scheduler' : `all on CPU ${values.cpu}`}:`);
  for (const [kind, us] of results) console.log(`  ${names[kind].padEnd(32)} ${us.map((v) => `${v.toFixed(1)} µs`).join(' / ')}`);
}

if (isMainThread) {
  answerHelp(import.meta.url);
  main().catch((err) => {
    console.error(`control-rtt: ${(err as Error).message}`);
    process.exit(2);
  });
}

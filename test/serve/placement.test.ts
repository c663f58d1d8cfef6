/**
 * serve --workers / --cpus: the CPU list parser, a real serve whose worker thread is
 * pinned to the CPU named while its other threads are kept off it (read back from
 * /proc/PID/task/TID/status, as the kernel applied it), and pairs placed on and moved
 * between worker threads as the front-end enables and disables them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseCpuList } from '../../src/serve/placement.js';
import { workersShareCpus } from '../../src/device/queue-pairs.js';
import { DEFAULT_BUSY_POLL_US } from '../../src/datapath/contract.js';
import { startServe } from '../support/serve.js';
import {
  addLoopbackPair, collectLoopbackFrames, loopbackFrames, postLoopbackFrames, setupLoopback, waitFor, type LoopbackRig,
} from '../support/hostile-frontend.js';
import { FrontendRequest as F } from '../../src/protocol/index.js';

test('parseCpuList: numbers and ranges, each CPU once; refuses what this machine lacks', () => {
  assert.deepEqual(parseCpuList('0', 4), [0]);
  assert.deepEqual(parseCpuList('1-3,0,2', 4), [1, 2, 3, 0]);
  assert.throws(() => parseCpuList('4', 4), /CPU 4 does not exist \(this machine has 4\)/);
  assert.throws(() => parseCpuList('3-1', 4), /runs backwards/);
  assert.throws(() => parseCpuList('a', 4), /not a CPU number or range/);
  assert.throws(() => parseCpuList('', 4), /not a CPU number or range/);
});

/** Cpus_allowed_list of every thread of `pid`. */
function allowedByThread(pid: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const m = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      if (m) out.set(Number(tid), m[1]!);
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

test('serve --cpus 1: the worker runs on CPU 1, every other thread on the other CPUs', { skip: availableParallelism() < 2 ? 'needs 2 CPUs' : false }, async () => {
  const last = availableParallelism() - 1;
  const serve = await startServe(['--net', 'loopback', '--cpus', String(last)]);
  try {
    const pid = serve.child.pid!;
    const before = allowedByThread(pid);
    const rest = last === 1 ? '0' : `0-${last - 1}`;
    assert.equal(before.get(pid), rest, 'the main thread is off the workers\' CPU');
    assert.ok([...before.values()].every((cpus) => cpus === rest), `before any worker: ${JSON.stringify([...before])}`);
    const rig = await setupLoopback(serve.socket);
    try {
      await loopbackFrames(rig, 8);
      const during = allowedByThread(pid);
      const pinned = [...during].filter(([, cpus]) => cpus === String(last));
      assert.equal(pinned.length, 1, `one thread (the worker) on CPU ${last}: ${JSON.stringify([...during])}`);
      assert.ok([...during].every(([, cpus]) => cpus === rest || cpus === String(last)), JSON.stringify([...during]));
    } finally {
      rig.dispose();
    }
  } finally {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, lines.slice(-10).join('\n'));
  }
});

test('workersShareCpus: pinned workers share when fewer CPUs than workers or no CPU is left; unpinned when CPUs <= workers', () => {
  assert.equal(workersShareCpus(1, 1, 2), false, 'one worker pinned, one CPU left for the rest');
  assert.equal(workersShareCpus(1, 1, 1), true, 'the only CPU serve has');
  assert.equal(workersShareCpus(2, 1, 4), true, 'two workers on one CPU');
  assert.equal(workersShareCpus(2, 2, 3), false);
  assert.equal(workersShareCpus(1, 0, 2), false, 'unpinned, a CPU to spare');
  assert.equal(workersShareCpus(2, 0, 2), true, 'unpinned, a CPU per worker and none for the rest');
});

/** What inspect says about serve's threads, read through its control socket. */
async function threadsOf(args: string[], prefix?: string[]) {
  const serve = await startServe(['--net', 'loopback', ...args], { prefix });
  try {
    return (await serve.state()).threads;
  } finally {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, lines.slice(-10).join('\n'));
  }
}

// --cpus narrows the main thread's affinity before the device exists: the decision must come
// from the CPUs serve started with (it once took the main thread's one CPU left for "no CPU
// to spare" and gave a pinned worker the shared-CPU defaults: half the rate behind a vIOMMU).
test('serve --cpus N with a CPU left over: the worker has its own CPU (polls on, the IOTLB reader thread reads IOTLB requests)', { skip: availableParallelism() < 2 ? 'needs 2 CPUs' : false }, async () => {
  const last = availableParallelism() - 1;
  assert.deepEqual(await threadsOf(['--cpus', String(last)]), {
    workers: 1, cpus: [last], sharesCpu: false, busyPollUs: DEFAULT_BUSY_POLL_US, yieldWhileParked: false, iotlbReader: 'thread',
  });
});

test('serve under taskset -c 0: one worker sharing the CPU (no idle polling, the worker reads IOTLB requests)', async () => {
  assert.deepEqual(await threadsOf([], ['taskset', '-c', '0']), {
    workers: 1, cpus: [], sharesCpu: true, busyPollUs: 0, yieldWhileParked: true, iotlbReader: 'worker',
  });
});

// A parked TX ring's worker yields so that the thread reading the answer can run on its CPU;
// beside a reader thread of its own it does not (docs/performance.md, where QEMU's main loop runs).
test('serve --iotlb-reader control: a worker whose TX ring waits on a miss yields its CPU; with the reader thread it does not', { skip: availableParallelism() < 2 ? 'needs 2 CPUs' : false }, async () => {
  const control = await threadsOf(['--iotlb-reader', 'control']);
  assert.equal(control.iotlbReader, 'control');
  assert.equal(control.yieldWhileParked, true);
  const thread = await threadsOf(['--iotlb-reader', 'thread']);
  assert.equal(thread.yieldWhileParked, false);
});

test('serve refuses a --cpus list naming a CPU this machine lacks', async () => {
  await assert.rejects(startServe(['--net', 'loopback', '--cpus', '4096']), /CPU 4096 does not exist/);
});

test('serve under taskset refuses --cpus naming a CPU outside what it may use', { skip: availableParallelism() < 2 ? 'needs 2 CPUs' : false }, async () => {
  await assert.rejects(startServe(['--net', 'loopback', '--cpus', '1'], { prefix: ['taskset', '-c', '0'] }), /CPU 1 is not among the CPUs serve may use \(0\)/);
});

test('serve --queues 3 --workers 2: pairs go to the thread with fewer running pairs, and an idle pair moves when re-enabled without losing a descriptor', async () => {
  const serve = await startServe(['--net', 'loopback', '--queues', '3', '--workers', '2']);
  const rigs: LoopbackRig[] = [];
  // One request at a time: each waits for its own ack on the one connection.
  const enable = async (rig: LoopbackRig, pair: number, on: boolean) => {
    for (const index of [2 * pair, 2 * pair + 1]) await rig.fe.ok(F.SET_VRING_ENABLE, { kind: 'vringState', index, num: on ? 1 : 0 });
  };
  const workerOf = async (pair: number) => (await serve.state()).queues.find((q) => q.index === 2 * pair)!.worker;
  try {
    const pair0 = await setupLoopback(serve.socket);
    rigs.push(pair0);
    // Round-robin alone would put pair 2 on worker 0 beside pair 0.
    const pair2 = await addLoopbackPair(pair0, 2);
    rigs.push(pair2);
    assert.equal(await workerOf(0), 0);
    assert.equal(await workerOf(2), 1, 'pair 2 goes to the idle worker');
    await loopbackFrames(pair0, 8);
    await loopbackFrames(pair2, 8);

    // Pair 2 stops; pair 1 starts on worker 1, which now runs nothing.
    await enable(pair0, 2, false);
    const pair1 = await addLoopbackPair(pair0, 1);
    rigs.push(pair1);
    assert.equal(await workerOf(1), 1);
    await loopbackFrames(pair1, 8);

    // Frames posted on the stopped pair wait; pair 0 stops, so worker 0 runs nothing.
    postLoopbackFrames(pair2, 8);
    await enable(pair0, 0, false);
    await waitFor('pair 0 stopped', async () => (await serve.state()).queues.every((q) => q.index > 1 || !q.running));
    // Re-enabled, pair 2 leaves the busy worker 1 for worker 0 and serves what was posted meanwhile.
    await enable(pair0, 2, true);
    await collectLoopbackFrames(pair2, 8);
    assert.equal(await workerOf(2), 0, 'pair 2 moved to the worker with no running pair');
    await loopbackFrames(pair2, 8);
    await loopbackFrames(pair1, 8);
    const state = await serve.state();
    const packets = (index: number) => state.queues.find((q) => q.index === index)!.counters!.packets;
    assert.equal(packets(5), 24, 'pair 2 TX: every frame counted, before and after the move');
    assert.equal(packets(4), 24, 'pair 2 RX');
    assert.ok(serve.log.lines.some((l) => /queue pair 2 moves to worker 0/.test(l)), 'the move is logged');
  } finally {
    for (const rig of rigs.reverse()) rig.dispose();
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, lines.slice(-10).join('\n'));
  }
});

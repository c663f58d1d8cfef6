/**
 * serve --workers / --cpus: the CPU list parser, and a real serve whose worker thread is
 * pinned to the CPU named while its other threads are kept off it (read back from
 * /proc/PID/task/TID/status, as the kernel applied it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseCpuList } from '../../src/serve/placement.js';
import { startServe } from '../support/serve.js';
import { loopbackFrames, setupLoopback } from '../support/hostile-frontend.js';

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

test('serve refuses a --cpus list naming a CPU this machine lacks', async () => {
  await assert.rejects(startServe(['--net', 'loopback', '--cpus', '4096']), /CPU 4096 does not exist/);
});

test('serve under taskset refuses --cpus naming a CPU outside what it may use', { skip: availableParallelism() < 2 ? 'needs 2 CPUs' : false }, async () => {
  await assert.rejects(startServe(['--net', 'loopback', '--cpus', '1'], { prefix: ['taskset', '-c', '0'] }), /CPU 1 is not among the CPUs serve may use \(0\)/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import {
  closeFd,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  fdKind,
  memoryFence,
  openFdCount,
  pollReadable,
  socketPair,
} from '../../src/sys/index.js';

const sysUrl = new URL('../../src/sys/index.js', import.meta.url).href;

/** Runs `body` (CommonJS source with `sys` and `workerData` in scope) in a worker thread. */
function runWorker(body: string, workerData: unknown): Worker {
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(${JSON.stringify(sysUrl)}).then((sys) => { ${body} });`;
  return new Worker(source, { eval: true, workerData });
}

test('eventfd counter semantics', () => {
  const fd = eventfdCreate();
  assert.equal(fdKind(fd).kind, 'eventfd');
  assert.equal(eventfdRead(fd), 0, 'EAGAIN reads as 0');
  eventfdWrite(fd);
  eventfdWrite(fd, 41);
  assert.equal(eventfdRead(fd), 42, 'writes add up');
  assert.equal(eventfdRead(fd), 0, 'a read resets the counter');
  closeFd(fd);
  const preset = eventfdCreate(7);
  assert.equal(eventfdRead(preset), 7);
  assert.throws(() => eventfdWrite(preset, 0), RangeError);
  assert.throws(() => eventfdWrite(preset, -1), RangeError);
  closeFd(preset);
  assert.throws(() => eventfdRead(preset), { code: 'EBADF', syscall: 'read' });
  memoryFence();
});

test('pollReadable reports ready fds and times out', () => {
  const a = eventfdCreate();
  const b = eventfdCreate(1);
  const fds = Int32Array.of(a, b, -1);
  const ready = new Uint8Array(3).fill(9);
  const started = Date.now();
  assert.equal(pollReadable(fds, 1, 50, ready), 0);
  assert.ok(Date.now() - started >= 40);
  assert.equal(ready[0], 0);
  assert.equal(pollReadable(fds, 3, 1000, ready), 1);
  assert.deepEqual([...ready], [0, 1, 0]);
  assert.throws(() => pollReadable(fds, 4, 0, ready), RangeError);
  assert.throws(() => pollReadable(fds, 3, 0, new Uint8Array(2)), RangeError);
  assert.throws(() => pollReadable([a] as unknown as Int32Array, 1, 0, ready), TypeError);
  closeFd(a);
  closeFd(b);
});

test('pollReadable in a worker wakes on an eventfd write from the main thread', async () => {
  const efd = eventfdCreate();
  const worker = runWorker(
    `
      const fds = Int32Array.of(workerData.efd);
      const ready = new Uint8Array(1);
      parentPort.postMessage({ kind: 'timeout', n: sys.pollReadable(fds, 1, 30, ready) });
      const started = Date.now();
      parentPort.postMessage({ kind: 'polling' });
      const n = sys.pollReadable(fds, 1, 10000, ready);
      parentPort.postMessage({ kind: 'woke', n, ready: ready[0], waited: Date.now() - started, value: sys.eventfdRead(workerData.efd) });
    `,
    { efd },
  );
  const messages: Array<Record<string, number | string>> = [];
  const woke = new Promise<void>((resolve, reject) => {
    worker.on('error', reject);
    worker.on('message', (message: Record<string, number | string>) => {
      messages.push(message);
      if (message.kind === 'polling') setTimeout(() => eventfdWrite(efd, 5), 50);
      if (message.kind === 'woke') resolve();
    });
  });
  await woke;
  await once(worker, 'exit');
  assert.deepEqual(messages[0], { kind: 'timeout', n: 0 });
  const last = messages[2]!;
  assert.equal(last.n, 1);
  assert.equal(last.ready, 1);
  assert.equal(last.value, 5);
  assert.ok((last.waited as number) < 5000);
  closeFd(efd);
});

test('a blocking pollReadable on this thread wakes on a write from a worker', async () => {
  const efd = eventfdCreate();
  const worker = runWorker(`setTimeout(() => { sys.eventfdWrite(workerData.efd, 3); }, 50);`, { efd });
  const ready = new Uint8Array(1);
  const started = Date.now();
  const n = pollReadable(Int32Array.of(efd), 1, 10000, ready);
  assert.equal(n, 1);
  assert.ok(Date.now() - started < 5000);
  assert.equal(eventfdRead(efd), 3);
  await once(worker, 'exit');
  closeFd(efd);
});

test('fdKind and openFdCount', () => {
  const before = openFdCount();
  const [a, b] = socketPair();
  assert.equal(openFdCount(), before + 2);
  assert.deepEqual(fdKind(a), { kind: 'socket', size: 0 });
  assert.equal(fdKind(0).kind === 'memfd', false);
  closeFd(a);
  closeFd(b);
  assert.equal(openFdCount(), before);
  assert.throws(() => fdKind(a), { code: 'EBADF' });
});

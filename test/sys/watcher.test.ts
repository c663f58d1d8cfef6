import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { FdWatcher, closeFd, eventfdCreate, eventfdRead, eventfdWrite, readFd, socketPair, writeFd } from '../../src/sys/index.js';

const sysUrl = new URL('../../src/sys/index.js', import.meta.url).href;

/**
 * Resolves after the loop has polled fds `turns` times: a watcher on a fresh eventfd that is
 * left readable fires once per loop iteration (uv_poll is level-triggered). An fd made
 * readable before this is called is in every one of those polls, so a watcher still active
 * on it has run by the time this resolves: no fixed sleep needed to show one is gone.
 */
async function loopPolls(turns: number): Promise<void> {
  const efd = eventfdCreate();
  try {
    await new Promise<void>((resolve) => {
      let fired = 0;
      const probe = new FdWatcher(efd, () => {
        if (++fired < turns) return;
        probe.stop();
        resolve();
      });
      eventfdWrite(efd);
    });
  } finally {
    closeFd(efd);
  }
}

test('FdWatcher fires when the peer writes', async () => {
  const [a, b] = socketPair();
  let calls = 0;
  const into = new Uint8Array(16);
  const received = new Promise<string>((resolve) => {
    const watcher = new FdWatcher(b, (error) => {
      assert.equal(error, undefined);
      calls++;
      const n = readFd(b, into, 0, into.length);
      watcher.stop();
      assert.equal(watcher.active, false);
      watcher.stop(); // idempotent
      resolve(new TextDecoder().decode(into.subarray(0, n)));
    });
    assert.equal(watcher.active, true);
    assert.throws(() => new FdWatcher(b, () => {}), { code: 'EEXIST' });
  });
  setTimeout(() => writeFd(a, new TextEncoder().encode('kick'), 0, 4), 20);
  assert.equal(await received, 'kick');
  assert.equal(calls, 1);
  // Stopped means gone: b readable again must not reach the old callback.
  writeFd(a, new TextEncoder().encode('again'), 0, 5);
  await loopPolls(3);
  assert.equal(calls, 1, 'a stopped FdWatcher ran again when its fd became readable');
  // The fd is free for a new watcher, and the bytes the old one must not have read are there.
  const again = await new Promise<string>((resolve) => {
    const watcher = new FdWatcher(b, () => {
      const n = readFd(b, into, 0, into.length);
      watcher.stop();
      resolve(new TextDecoder().decode(into.subarray(0, n)));
    });
  });
  assert.equal(again, 'again');
  closeFd(a);
  closeFd(b);
});

test('FdWatcher callbacks drain microtasks (napi_make_callback)', async () => {
  const efd = eventfdCreate();
  const order: string[] = [];
  const done = new Promise<void>((resolve) => {
    const watcher = new FdWatcher(efd, () => {
      eventfdRead(efd);
      watcher.stop();
      void Promise.resolve().then(() => {
        order.push('microtask');
        resolve();
      });
      order.push('callback');
    });
  });
  eventfdWrite(efd);
  await done;
  assert.deepEqual(order, ['callback', 'microtask']);
  // Stopped from inside its callback, it stays stopped: readable again, it is not called.
  eventfdWrite(efd);
  await loopPolls(3);
  assert.deepEqual(order, ['callback', 'microtask'], 'a stopped FdWatcher ran again');
  assert.equal(eventfdRead(efd), 1, 'the stopped watcher consumed the eventfd');
  closeFd(efd);
});

test('a stopped FdWatcher does not keep the process alive', async () => {
  const script = `
    const sys = await import(${JSON.stringify(sysUrl)});
    const [a, b] = sys.socketPair();
    const watcher = new sys.FdWatcher(b, () => {
      const buf = new Uint8Array(8);
      sys.readFd(b, buf, 0, 8);
      watcher.stop();
      console.log('fired');
    });
    setTimeout(() => sys.writeFd(a, new Uint8Array([1]), 0, 1), 10);
    // an idle watcher that was never triggered must not hold the loop either once stopped
    const idle = new sys.FdWatcher(a, () => {});
    idle.stop();
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(timer);
  assert.equal(signal, null, `child had to be killed: the watcher kept it alive. Output: ${output}`);
  assert.equal(code, 0, output);
  assert.equal(output.trim(), 'fired');
});

test('an FdWatcher left running in a worker is closed when the worker terminates', async () => {
  const efd = eventfdCreate();
  const worker = new Worker(
    `
      const { parentPort, workerData } = require('node:worker_threads');
      import(${JSON.stringify(sysUrl)}).then((sys) => {
        new sys.FdWatcher(workerData.efd, () => {
          sys.eventfdRead(workerData.efd);
          parentPort.postMessage('fired');
        });
        parentPort.postMessage('watching');
      });
    `,
    { eval: true, workerData: { efd } },
  );
  const [first] = (await once(worker, 'message')) as [string];
  assert.equal(first, 'watching');
  eventfdWrite(efd);
  const [second] = (await once(worker, 'message')) as [string];
  assert.equal(second, 'fired', 'the watcher runs on the worker loop');
  await worker.terminate();
  // The process is still healthy and the fd still usable after the worker's teardown.
  eventfdWrite(efd, 2);
  assert.equal(eventfdRead(efd), 2);
  closeFd(efd);
});

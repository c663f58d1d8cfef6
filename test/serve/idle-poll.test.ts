/**
 * The worker's idle poll as `inspect` shows it live: a front-end that pauses longer than the
 * poll budget between bursts (as a guest's TCP does between its bursts) shrinks the window
 * each spell until the worker sleeps straight away; a worker told never to sleep says so.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServe } from '../support/serve.js';
import { loopbackFrames, setupLoopback } from '../support/hostile-frontend.js';
import { renderState } from '../../src/control/render.js';

test('serve --busy-poll-us 1000: pauses longer than the budget halve the live window to 0, and the worker sleeps', async () => {
  const serve = await startServe(['--net', 'loopback', '--busy-poll-us', '1000']);
  try {
    const rig = await setupLoopback(serve.socket);
    try {
      const first = (await serve.state()).idle;
      assert.equal(first.length, 1, JSON.stringify(first));
      assert.equal(first[0]!.windowUs, 1000, 'the window starts at the budget (no spell has ended yet)');
      // Each 5 ms pause is an idle spell over the 1 ms budget: 1000 µs halves below
      // poll-window.ts's 10 µs floor within seven of them.
      for (let i = 0; i < 10; i++) {
        await loopbackFrames(rig, 4);
        await sleep(5);
      }
      const state = await serve.state();
      const [worker] = state.idle;
      assert.equal(worker!.windowUs, 0, JSON.stringify(state.idle));
      assert.ok(worker!.sleeps >= 10, `a sleep per pause at least: ${worker!.sleeps}`);
      assert.match(renderState(state, null, false), /idle poll window now: worker 0 0 µs \(\d+ sleeps\)/);
    } finally {
      rig.dispose();
    }
  } finally {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, lines.slice(-10).join('\n'));
  }
});

test('serve --busy-poll-us -1: the worker never sleeps, and inspect says so', async () => {
  const serve = await startServe(['--net', 'loopback', '--busy-poll-us', '-1']);
  try {
    const rig = await setupLoopback(serve.socket);
    try {
      await loopbackFrames(rig, 4);
      await sleep(20);
      const state = await serve.state();
      assert.deepEqual(state.idle, [{ worker: 0, windowUs: -1, sleeps: 0 }]);
      const text = renderState(state, null, false);
      assert.match(text, /idle: never sleep/);
      assert.doesNotMatch(text, /idle poll window now/);
    } finally {
      rig.dispose();
    }
  } finally {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, lines.slice(-10).join('\n'));
  }
});

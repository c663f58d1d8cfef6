// Reconnect soak: many cycles of connect / negotiate / traffic / disconnect against ONE serve
// process. Every cycle starts a queue-pair worker, maps guest memory and passes 4 frames
// through the loopback; at the end serve must hold exactly the fds it held at the start, no
// extra threads, and about the same memory.
//
// CI runs 50 cycles; VIT_SOAK=1 runs 1000 (VIT_SOAK_CYCLES=N for any other count).
// RSS tolerance: after 5 warm-up cycles (JIT, first worker start) RSS may grow by at most
// max(32 MiB, 25%), plus 64 KiB per cycle beyond 50: glibc keeps the arenas of exited worker
// threads, so RSS climbs for the first ~1000 cycles and then stays flat (measured: 74 MiB
// at the start, ~112 after 1000 cycles, ~125-130 from 1200 to 3000). Long soaks also check
// the second half alone grows by at most 32 MiB: a leak of one 1 MiB guest mapping, one
// worker isolate or one receive buffer per cycle breaks one bound or the other.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startServe, type ServeProcess } from '../support/serve.js';
import { fdCountOf, loopbackFrames, rssOf, setupLoopback, threadCountOf, waitFor } from '../support/hostile-frontend.js';

const CYCLES = Number(process.env.VIT_SOAK_CYCLES ?? (process.env.VIT_SOAK ? 1000 : 50));
const WARMUP = 5;
const MiB = 1024 * 1024;

describe(`reconnect soak (${CYCLES} cycles)`, () => {
  let serve: ServeProcess;
  let pid: number;

  before(async () => {
    serve = await startServe(['--net', 'loopback', '--quiet']);
    pid = serve.child.pid!;
  });

  after(async () => {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, `serve exited with ${exit.code} / ${exit.signal}:\n${lines.slice(-20).join('\n')}`);
  });

  async function cycle(): Promise<void> {
    try {
      const rig = await setupLoopback(serve.socket, { size: 64 });
      try {
        await loopbackFrames(rig, 4);
      } finally {
        rig.dispose();
      }
    } catch (err) {
      // serve's own words are what explains a failed cycle.
      throw new Error(`${(err as Error).message}\nserve log:\n${serve.log.lines.filter((l) => !/ info: /.test(l)).slice(-15).join('\n')}`);
    }
    await waitFor('serve to see the disconnect', async () => !(await serve.state()).connected, 10_000);
  }

  /** Waits for the worker of the last cycle to finish exiting (threads and fds). */
  async function settled(fds: number, threads: number): Promise<{ fds: number; threads: number }> {
    const end = Date.now() + 3000;
    for (;;) {
      const now = { fds: fdCountOf(pid), threads: threadCountOf(pid) };
      if ((now.fds <= fds && now.threads <= threads) || Date.now() > end) return now;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('fd count, threads and RSS at the end match the start', { timeout: Math.max(120_000, CYCLES * 500) }, async () => {
    for (let i = 0; i < WARMUP; i++) await cycle();
    const start = { fds: fdCountOf(pid), threads: threadCountOf(pid), rss: rssOf(pid) };
    const t0 = Date.now();
    let midRss = 0;
    for (let i = 0; i < CYCLES; i++) {
      await cycle();
      if (i === Math.floor(CYCLES / 2)) midRss = rssOf(pid);
    }
    const ms = Date.now() - t0;
    const end = { ...(await settled(start.fds, start.threads)), rss: rssOf(pid) };
    const state = await serve.state();
    const rx = state.queues[0]!.counters?.packets ?? 0;
    console.log(`soak: ${CYCLES} cycles in ${ms} ms (${(ms / CYCLES).toFixed(1)} ms/cycle); fds ${start.fds} -> ${end.fds}; ` +
      `threads ${start.threads} -> ${end.threads}; RSS ${(start.rss / MiB).toFixed(1)} -> ${(end.rss / MiB).toFixed(1)} MiB`);
    assert.equal(end.fds, start.fds, 'serve holds the same fds as before the cycles');
    assert.equal(end.threads, start.threads, 'every queue-pair worker exited');
    const tolerance = Math.max(32 * MiB, start.rss * 0.25) + Math.max(0, CYCLES - 50) * 64 * 1024;
    assert.ok(end.rss - start.rss <= tolerance,
      `RSS grew by ${((end.rss - start.rss) / MiB).toFixed(1)} MiB over ${CYCLES} cycles (tolerance ${(tolerance / MiB).toFixed(1)} MiB)`);
    if (CYCLES >= 500) {
      assert.ok(end.rss - midRss <= 32 * MiB, `RSS grew by ${((end.rss - midRss) / MiB).toFixed(1)} MiB over the second half alone`);
    }
    assert.equal(state.connections, WARMUP + CYCLES, 'every cycle was a connection');
    assert.equal(rx, 4 * (WARMUP + CYCLES), 'every frame came back');
    assert.ok(state.queues.every((q) => q.broken === null));
  });
});

/**
 * Dirty-page logging (live migration) against the real serve process: SET_LOG_BASE checked
 * before anything is mapped (no fd, a log beyond its fd, a log too small for guest memory:
 * a failure reply, no mapping, no fd kept), then LOG_ALL toggled while the rings run, as QEMU
 * does at the start and end of a migration, with frames looped through: every RX buffer and
 * used ring the device wrote is marked, `inspect` says so, and turning LOG_ALL off unmaps it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { FrontendRequest as F, VirtioFeature, featureMask } from '../../src/protocol/index.js';
import { closeFd, eventfdCreate, mapFd, memfdCreate, unmap } from '../../src/sys/index.js';
import { LOG_PAGE, logBytesFor } from '../../src/memory/dirty-log.js';
import { startServe, type ServeProcess } from '../support/serve.js';
import { layoutRings } from '../support/frontend/split-driver.js';
import { GUEST, expectFdsBack, expectServing, fdCountOf, loopbackFrames, setupLoopback, testFeatures, waitFor } from '../support/hostile-frontend.js';

const LOG_NAME = 'vit-dirty-log';
const logMapped = (pid: number): boolean => readFileSync(`/proc/${pid}/maps`, 'utf8').includes(`memfd:${LOG_NAME}`);
const logBase = (size: number, offset = 0) => ({ kind: 'log' as const, size: BigInt(size), offset: BigInt(offset) });

describe('dirty-page logging through serve', () => {
  let serve: ServeProcess;
  let pid: number;

  before(async () => {
    serve = await startServe(['--net', 'loopback', '--queues', '1']);
    pid = serve.child.pid!;
    await expectServing(serve.socket);
  });

  after(async () => {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, lines.slice(-20).join('\n'));
  });

  it('SET_LOG_FD keeps its eventfd until the connection ends', async () => {
    const rig = await setupLoopback(serve.socket);
    const fds = fdCountOf(pid);
    const ev = eventfdCreate(0);
    try {
      assert.equal(await rig.fe.ack(F.SET_LOG_FD, { kind: 'none' }, [ev]), 0n);
      assert.equal(fdCountOf(pid), fds + 1, 'the log eventfd is kept');
      const ev2 = eventfdCreate(0);
      assert.equal(await rig.fe.ack(F.SET_LOG_FD, { kind: 'none' }, [ev2]), 0n);
      closeFd(ev2);
      await expectFdsBack(pid, fds + 1, 'a replaced log eventfd');
    } finally {
      rig.dispose();
      closeFd(ev);
    }
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    await expectServing(serve.socket);
  });

  it('refuses a log it cannot use, maps nothing and keeps no fd; logs every write while LOG_ALL is on', async () => {
    const rig = await setupLoopback(serve.socket);
    const need = logBytesFor(GUEST.GPA + GUEST.SIZE);
    const logFd = memfdCreate(LOG_NAME, need + LOG_PAGE);
    try {
      const fds = fdCountOf(pid);
      assert.equal(await rig.fe.ack(F.SET_LOG_BASE, logBase(need)), 1n, 'no fd');
      assert.equal(await rig.fe.ack(F.SET_LOG_BASE, logBase(need, 2 * LOG_PAGE), [logFd]), 1n, 'beyond the end of the fd');
      assert.equal(await rig.fe.ack(F.SET_LOG_BASE, logBase(need - 1), [logFd]), 1n, 'too small for guest memory');
      assert.equal(await rig.fe.ack(F.SET_LOG_BASE, logBase(0), [logFd]), 1n, 'size 0');
      await expectFdsBack(pid, fds, 'refused logs');
      assert.equal(logMapped(pid), false, 'a refused log is not mapped');
      await loopbackFrames(rig, 4);

      // A good log (at an offset, as the spec allows), then LOG_ALL with the rings running.
      assert.equal(await rig.fe.ack(F.SET_LOG_BASE, logBase(need, LOG_PAGE), [logFd]), 0n);
      assert.equal(logMapped(pid), false, 'no worker maps the log before LOG_ALL');
      const logAll = featureMask(VirtioFeature.LOG_ALL);
      assert.equal(await rig.fe.ack(F.SET_FEATURES, { kind: 'u64', value: testFeatures() | logAll }), 0n);
      assert.equal(logMapped(pid), true, 'mapped by the worker once LOG_ALL is acked');
      const view = new Uint8Array(mapFd(logFd, 0, need + LOG_PAGE, true), LOG_PAGE, need);
      try {
        // The worker may have marked its used rings already (notification flags): start clean.
        view.fill(0);
        const count = 8;
        await loopbackFrames(rig, count);
        const marked = (gpa: number): boolean => (view[Math.floor(gpa / LOG_PAGE / 8)]! & (1 << (Math.floor(gpa / LOG_PAGE) % 8))) !== 0;
        // loopbackFrames puts RX buffers at bufBase, 2 KiB apart, and the TX buffers after them.
        // A worker applies its marks at the end of the step that wrote them, which may come just
        // after the used index this side waited for: the marks must land, not be there already.
        const rxBuffers = Array.from({ length: count }, (_, i) => rig.bufBase + i * 2048);
        await waitFor('the RX buffers marked', () => rxBuffers.every(marked), 2000).catch(() => undefined);
        for (let i = 0; i < count; i++) assert.ok(marked(rxBuffers[i]!), `RX buffer ${i} marked`);
        assert.ok(!marked(rig.bufBase + count * 2048 + 4 * LOG_PAGE), 'TX buffers are read, not written: not marked');
        // setupLoopback's rings: RX at the start of guest memory, TX on the next page after it.
        const rxRings = layoutRings(64, GUEST.GPA);
        const txRings = layoutRings(64, Math.ceil(rxRings.end / 4096) * 4096);
        assert.ok(marked(rxRings.usedAddr), 'RX used ring marked');
        assert.ok(marked(txRings.usedAddr), 'TX used ring marked');
        assert.ok(!marked(rxRings.descAddr) || rxRings.descAddr >> 12 === rxRings.usedAddr >> 12, 'the descriptor table is not written');
        const state = await serve.state();
        assert.equal(state.dirtyLog.logging, true);
        assert.equal(state.dirtyLog.logBytes, need);
        assert.ok(state.dirtyLog.pagesMarked >= count, `inspect counts ${state.dirtyLog.pagesMarked} marks`);
        assert.equal(state.dirtyLog.outside, 0);

        // End of migration: LOG_ALL off, the log unmapped, frames still flow.
        assert.equal(await rig.fe.ack(F.SET_FEATURES, { kind: 'u64', value: testFeatures() }), 0n);
        assert.equal(logMapped(pid), false, 'unmapped once LOG_ALL is off');
        view.fill(0);
        await loopbackFrames(rig, count);
        assert.ok(view.every((b) => b === 0), 'nothing marked with LOG_ALL off');
        assert.equal((await serve.state()).dirtyLog.logging, false);
      } finally {
        unmap(view.buffer as ArrayBuffer);
      }
    } finally {
      rig.dispose();
      closeFd(logFd);
    }
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    assert.equal(logMapped(pid), false);
    await expectServing(serve.socket);
  });
});

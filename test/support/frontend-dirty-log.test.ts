/**
 * The test front-end's dirty-logging option (what bench/dirty-log.ts switches on for both
 * back-ends): QEMU's migration-start sequence after the rings run (SET_LOG_BASE, SET_FEATURES
 * with LOG_ALL, SET_VRING_ADDR with VHOST_VRING_F_LOG), then frames through loopback. serve
 * must mark the RX buffers and used rings it writes, and nothing once logging is off again;
 * DPDK's vhost must accept the same handshake, keep forwarding and mark pages too. No timings.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VhostUserFrontend } from './frontend/frontend.js';
import { logBytesFor } from '../../src/memory/dirty-log.js';
import { assertClean, loopFrames, startPair, stopPair, type Pair } from '../iotlb-e2e/helpers.js';
import { startTestpmd, testpmdBinary, type Testpmd } from '../peers/dpdk.js';
import { MissingPeerError } from '../peers/util.js';

const LOG_SEQUENCE = ['SET_LOG_BASE', 'SET_FEATURES', 'SET_VRING_ADDR', 'SET_VRING_ADDR'];
const MEMORY = 64 * 1024 * 1024;

describe('front-end dirty logging', () => {
  it('sizes the log at one bit per 4 KiB page of guest memory', () => {
    assert.equal(logBytesFor(MEMORY), MEMORY / 4096 / 8);
    assert.equal(logBytesFor(4096 * 9), 2);
  });

  describe('against serve', () => {
    let pair: Pair | undefined;
    after(async () => {
      await stopPair(pair);
    });

    it('switches logging on like QEMU; serve marks the pages it writes, and none once it is off', async () => {
      pair = await startPair([], { iommu: 'off', slotSize: 2048, memoryBytes: MEMORY, dirtyLog: true });
      const { fe } = pair;
      const sent = fe.conn.sent;
      const enable = sent.lastIndexOf('SET_VRING_ENABLE');
      assert.deepEqual(sent.slice(enable + 1, enable + 1 + LOG_SEQUENCE.length), LOG_SEQUENCE, `sequence ${sent.join(' ')}`);
      const log = fe.dirtyLog!;
      assert.equal(log.size, logBytesFor(MEMORY));
      const state = await pair.serve.state();
      assert.equal(state.dirtyLog.logging, true, 'serve logs after LOG_ALL');
      assert.equal(state.dirtyLog.logBytes, log.size);

      fe.syncDirtyLog();
      const r = await loopFrames(fe, 500);
      assert.deepEqual(r.errors, []);
      assert.equal(r.received, 500);
      assert.ok(log.marked(fe.rx.layout.usedAddr), 'RX used ring marked');
      assert.ok(log.marked(fe.tx.layout.usedAddr), 'TX used ring marked');
      const rxPool = fe.slotGpa(fe.rx, 0);
      const txPool = fe.slotGpa(fe.tx, 0);
      assert.ok(log.marked(rxPool), 'the first RX buffer marked');
      assert.ok(!log.marked(txPool), 'TX buffers are only read: not marked');
      const pages = fe.syncDirtyLog();
      // 500 RX buffers of 2 KiB: at least 250 pages, plus the used rings; nothing beyond the RX pool and rings.
      assert.ok(pages >= 250, `${pages} pages marked`);
      assert.ok(pages <= fe.opts.rxSlots * fe.opts.slotSize / 4096 + 4, `${pages} pages marked`);
      assertClean(fe);

      // Migration end: LOG_ALL off, nothing marked any more.
      fe.setDirtyLogging(false);
      assert.equal((await pair.serve.state()).dirtyLog.logging, false);
      fe.syncDirtyLog();
      const r2 = await loopFrames(fe, 200, { firstSeq: 500 });
      assert.deepEqual(r2.errors, []);
      assert.equal(fe.syncDirtyLog(), 0, 'nothing marked with LOG_ALL off');
      // And on again: the same log, marks again.
      fe.setDirtyLogging(true);
      const r3 = await loopFrames(fe, 200, { firstSeq: 700 });
      assert.deepEqual(r3.errors, []);
      assert.ok(fe.syncDirtyLog() > 0, 'marks again after LOG_ALL is back on');
    });
  });

  describe('against DPDK vhost', () => {
    let tp: Testpmd | undefined;
    let fe: VhostUserFrontend | undefined;
    let dir: string | undefined;
    after(async () => {
      fe?.close();
      await tp?.stop().catch(() => undefined);
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('DPDK vhost (testpmd macswap) accepts the same handshake and loops frames with logging on', async (t) => {
      try {
        testpmdBinary();
      } catch (err) {
        if (!(err instanceof MissingPeerError)) throw err;
        console.error(`SKIPPED: DPDK dirty-log handshake: ${err.message}`);
        return t.skip(`dpdk-testpmd is not installed: ${err.message.trim()}`);
      }
      dir = mkdtempSync(join(tmpdir(), 'vit-dirty-'));
      const socket = join(dir, 'vhost.sock');
      tp = startTestpmd({ role: 'vhost', socket, forwardMode: 'macswap', memMiB: 512 });
      const f = (fe = await VhostUserFrontend.connect({ socket, iommu: 'off', slotSize: 2048, memoryBytes: MEMORY, dirtyLog: true, connectTimeoutMs: 30_000 }));
      f.start();
      const sent = f.conn.sent;
      const enable = sent.lastIndexOf('SET_VRING_ENABLE');
      assert.deepEqual(sent.slice(enable + 1, enable + 1 + LOG_SEQUENCE.length), LOG_SEQUENCE);
      await f.serveUntil(tp.waitForLinkUp(30_000));
      f.syncDirtyLog();
      const r = await loopFrames(f, 500);
      assert.deepEqual(r.errors, []);
      assert.equal(r.received, 500);
      // DPDK logs too (so the bench compares logging with logging): its RX buffers and used rings.
      const pages = f.syncDirtyLog();
      assert.ok(pages >= 250, `DPDK vhost marked ${pages} pages for 500 looped frames`);
      f.setDirtyLogging(false);
      const r2 = await loopFrames(f, 100, { firstSeq: 500 });
      assert.deepEqual(r2.errors, []);
    });
  });
});

// IOTLB semantics through the real serve: ring invalidation stops a ring until it is
// remapped; a write into a read-only mapping is refused; two IOTLB entries contiguous in
// IOVA but not in host address are read as two pieces.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IotlbPerm } from '../../src/protocol/index.js';
import { PAGE_4K } from '../support/frontend/iommu.js';
import { canaryByte } from '../support/frontend/frontend.js';
import { FRAME_DST, FRAME_SRC, writeFrame } from '../support/frontend/frames.js';
import { waitFor } from '../support/hostile-frontend.js';
import { total } from '../support/serve.js';
import { assertClean, loopFrames, startPair, stopPair, STRATEGIES, type Pair } from './helpers.js';

const HDR = 12;

for (const strategy of STRATEGIES) {
  describe(`IOTLB semantics, strategy ${strategy}`, () => {
    let pair: Pair | undefined;
    after(async () => {
      await stopPair(pair);
      pair = undefined;
    });

    it('an INVALIDATE of the TX ring stops it (waitingForMapping, no progress) until it is remapped, then it resumes', async () => {
      await stopPair(pair);
      pair = await startPair(['--iotlb-strategy', strategy], { iommu: 'static', pageSize: PAGE_4K });
      const { fe, serve } = pair;
      let r = await loopFrames(fe, 200);
      assert.deepEqual(r.errors, []);

      // Unmap the whole TX ring (desc, avail, used) in the IOMMU and invalidate it.
      const ring = fe.ringIovaRange(fe.tx);
      fe.unmapPages(ring.iova, ring.size);
      // The guest keeps posting: nothing may move.
      const txBefore = total(await serve.state(), 'tx');
      let posted = 0;
      for (let seq = 200; seq < 232; seq++) if (fe.txSendWith(100, (m, o) => writeFrame(m, o, seq, 100))) posted++;
      assert.equal(posted, 32);
      // Run the front-end until the outcome shows (bounded): the device asked for the ring
      // again and the front-end deferred that miss — or, wrongly, TX moved.
      const stuck = await waitFor('the TX ring to ask for its mapping again (or to move)', async () => {
        await fe.runFor(20);
        const st = await serve.state();
        const waiting = st.queues.find((q) => q.index === 1)!.waitingForMapping && fe.stats.missesDeferred >= 1;
        const moved = total(st, 'tx') !== txBefore || fe.stats.txCompleted !== 200;
        return waiting || moved ? st : null;
      }, 10_000);
      const txq = stuck.queues.find((q) => q.index === 1)!;
      assert.equal(total(stuck, 'tx'), txBefore, 'TX made progress on an unmapped ring');
      assert.equal(fe.stats.txCompleted, 200, 'used entries appeared for an unmapped ring');
      assert.equal(txq.waitingForMapping, true, `TX queue state ${JSON.stringify(txq)}`);
      assert.ok(fe.stats.missesDeferred >= 1, 'the device did not ask for the ring again');

      // Remap: the deferred miss is answered, the ring resumes and the 32 frames come back.
      fe.mapPages(ring.iova, ring.gpa, ring.size, IotlbPerm.RW);
      let got = 0;
      await fe.runUntil(() => fe.stats.txCompleted === 232, 5000, () => got++);
      await fe.runUntil(() => got === 32, 5000, () => got++);
      const resumed = await serve.state();
      assert.equal(resumed.queues.find((q) => q.index === 1)!.waitingForMapping, false);
      r = await loopFrames(fe, 200, { firstSeq: 1000 });
      assert.deepEqual(r.errors, []);
      assertClean(fe);
    });

    it('an RX buffer mapped read-only is never written: the RX queue breaks, ACCESS_FAIL is sent, the buffer keeps its canary', async () => {
      await stopPair(pair);
      // No pool buffers on RX: the read-only one is the only buffer the device can use.
      pair = await startPair(['--iotlb-strategy', strategy], { iommu: 'static', pageSize: PAGE_4K, rxAutoRefill: false });
      const { fe, serve } = pair;
      const gpa = fe.allocGuest(PAGE_4K);
      const iova = 0x300000000; // outside the static window: its own mapping
      fe.mapPages(iova, gpa, PAGE_4K, IotlbPerm.RO);
      assert.ok(fe.rxPostRaw(iova, PAGE_4K) >= 0);
      assert.ok(fe.txSendWith(100, (m, o) => writeFrame(m, o, 51, 100)));
      fe.flush();
      // Run the front-end until the outcome shows (bounded): the RX queue broke and the
      // ACCESS_FAIL arrived — or, wrongly, the frame was delivered into the read-only buffer.
      const state = await waitFor('the RX queue to refuse the read-only buffer (or to use it)', async () => {
        await fe.runFor(20);
        const st = await serve.state();
        const refused = st.queues.find((q) => q.index === 0)!.broken !== null && fe.accessFails.length > 0;
        const used = total(st, 'rx') > 0 || fe.rx.driver.usedCount() > 0;
        return refused || used ? st : null;
      }, 10_000);
      const rxq = state.queues.find((q) => q.index === 0)!;
      assert.ok(rxq.broken !== null, `RX queue not broken: ${JSON.stringify(rxq)}`);
      assert.match(rxq.broken!, /denies write/);
      assert.deepEqual(fe.accessFails, [{ iova, perm: IotlbPerm.WO }], 'ACCESS_FAIL for the refused write');
      assert.equal(fe.canaryMismatch(gpa, gpa + PAGE_4K), -1, 'the read-only buffer was written');
      assert.equal(fe.rx.driver.usedCount(), 0, 'a used entry was published for the read-only buffer');
      assert.equal(total(state, 'rx'), 0);
      // Nothing else changed either (the RO page holds canary, so it needs no hole).
      const bad = fe.verifyCanary();
      assert.deepEqual(bad.slice(0, 3), []);
    });

    it('two IOTLB entries contiguous in IOVA but not in host address are read as two pieces', async () => {
      await stopPair(pair);
      pair = await startPair(['--iotlb-strategy', strategy], { iommu: 'static', pageSize: PAGE_4K });
      const { fe } = pair;
      // IOVA X -> page A, X + 4K -> page B, where B is NOT A + 4K (B is before A, with a gap).
      const b = fe.allocGuest(PAGE_4K);
      fe.allocGuest(3 * PAGE_4K); // gap
      const a = fe.allocGuest(PAGE_4K);
      const afterA = fe.allocGuest(PAGE_4K); // the page a wrong merge would read: canary
      const x = 0x200000000; // IOVA of page A
      fe.mapPages(x, a, PAGE_4K, IotlbPerm.RO);
      fe.mapPages(x + PAGE_4K, b, PAGE_4K, IotlbPerm.RO);
      const frameLen = 300;
      const inA = 100; // header + first 88 frame bytes in A, the rest in B
      const frame = new Uint8Array(frameLen);
      writeFrame(frame, 0, 4242, frameLen);
      const buf = new Uint8Array(HDR + frameLen); // header (zero) + frame
      buf.set(frame, HDR);
      fe.memory.set(buf.subarray(0, inA), a + PAGE_4K - inA);
      fe.memory.set(buf.subarray(inA), b);
      fe.canaryHole(a + PAGE_4K - inA, a + PAGE_4K);
      fe.canaryHole(b, b + buf.length - inA);
      assert.ok(fe.txPostRaw([x + PAGE_4K - inA], [buf.length]) >= 0);
      let got: Uint8Array | null = null;
      await fe.runUntil(() => got !== null, 5000, (m, o, len) => {
        got = m.slice(o, o + len);
      });
      const back = got! as Uint8Array;
      assert.equal(back.length, frameLen);
      const expected = frame.slice();
      expected.set(FRAME_SRC, 0);
      expected.set(FRAME_DST, 6);
      const firstBad = back.findIndex((v, i) => v !== expected[i]);
      assert.equal(firstBad, -1, `looped frame differs at byte ${firstBad}: got ${back[firstBad]}, expected ${expected[firstBad]}` +
        (back[firstBad] === canaryByte(afterA + firstBad - (inA - HDR)) ? ' (the canary of the page after A: the two entries were merged)' : ''));
      assertClean(fe);
    });
  });
}

// receiveFrame's one-descriptor path (VirtQueue.mapSingle / walkSingle) and the wide
// copies under it: exact bytes at every alignment, the MAC swap, multi-piece sources,
// and a buffer the IOTLB maps only in part (translated once, the miss reported for the rest).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPA, UVA, IOVA, StubIotlb, makeRig, makePackedRig, netq, peek, frame } from './helpers.js';
import { ACCESS_WRITE } from '../../src/memory/address-space.js';
import { receiveFrame, NetCounter, RX_DONE, RX_MISS } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { wideOf } from '../../src/memory/wide-view.js';

/** The frame the guest should see: MACs swapped when asked. */
function expected(f: Uint8Array, swap: boolean): Uint8Array {
  const e = f.slice();
  if (swap) {
    e.set(f.subarray(6, 12), 0);
    e.set(f.subarray(0, 6), 6);
  }
  return e;
}

for (const kind of ['split', 'packed'] as const) {
  test(`RX single buffer (${kind}): header and frame exact for every buffer / source alignment mod 8, with and without the MAC swap`, () => {
    for (const swap of [false, true]) {
      for (let bufMis = 0; bufMis < 8; bufMis++) {
        for (let srcMis = 0; srcMis < 8; srcMis++) {
          const rig = kind === 'split' ? makeRig() : makePackedRig();
          const rxq = netq(rig.queue, 12, false);
          const at = rig.bufBase + 0x1000 + bufMis;
          rig.bytes.fill(0xcc, at - GPA - 8, at - GPA + 256);
          const head = rig.driver.addBuffer(at, 200, true);
          rig.driver.publish();
          const len = 60 + ((bufMis * 8 + srcMis) % 37);
          const f = frame(len, bufMis * 8 + srcMis + 1);
          const store = new Uint8Array(len + 16);
          store.set(f, srcMis);
          const src = new ScatterList(2);
          src.push(store, srcMis, len, wideOf(store));
          const what = `buffer +${bufMis} source +${srcMis} swap ${swap}`;
          assert.equal(receiveFrame(rxq, src, 0, len, swap), RX_DONE, what);
          rxq.finish();
          assert.deepEqual(peek(rig, at, 12), Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0), `header, ${what}`);
          assert.deepEqual(peek(rig, at + 12, len), expected(f, swap), `frame, ${what}`);
          assert.equal(rig.bytes[at - GPA + 12 + len], 0xcc, `nothing past the frame, ${what}`);
          assert.equal(rig.bytes[at - GPA - 1], 0xcc, `nothing before the buffer, ${what}`);
          assert.equal(rig.driver.popUsed(), head);
          assert.equal(rig.driver.lastLen, 12 + len);
        }
      }
    }
  });
}

test('RX single buffer: a frame in several source pieces (a chained TX frame looped back) is gathered, MACs swapped', () => {
  const rig = makeRig();
  const rxq = netq(rig.queue, 12, false);
  const at = rig.bufBase + 4;
  rig.driver.addBuffer(at, 300, true);
  rig.driver.publish();
  const f = frame(181, 7);
  const src = new ScatterList(4);
  // Pieces of 5, 100 and 76 bytes: the MAC pair straddles the first boundary.
  const a = f.slice(0, 5);
  const b = new Uint8Array(104);
  b.set(f.subarray(5, 105), 3);
  const c = f.slice(105);
  src.push(a, 0, 5);
  src.push(b, 3, 100, wideOf(b));
  src.push(c, 0, 76, wideOf(c));
  assert.equal(receiveFrame(rxq, src, 0, 181, true), RX_DONE);
  rxq.finish();
  assert.deepEqual(peek(rig, at + 12, 181), expected(f, true));
  rig.driver.popUsed();
  assert.equal(rig.driver.lastLen, 193);
});

test('RX single buffer partly in the IOTLB: one lookup for the mapped part, a miss for the rest, then exact bytes over both entries', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb });
  const rxq = netq(rig.queue, 12, false);
  // The buffer's first 0x40 bytes are the end of one page; the rest starts the next page,
  // which maps elsewhere in host memory (discontiguous uaddr) once the miss is answered.
  const buf = IOVA + 0x200000 - 0x40;
  tlb.insert({ iova: IOVA + 0x1ff000, size: 0x1000, uaddr: UVA + 0x40000, perm: ACCESS_WRITE });
  rig.driver.addBuffer(buf, 0x100, true);
  rig.driver.publish();
  const f = frame(120, 3);
  const src = new ScatterList(1);
  src.push(f, 0, 120, wideOf(f));
  const before = tlb.stats.lookups;
  assert.equal(receiveFrame(rxq, src, 0, 120, false), RX_MISS);
  const q = rig.queue;
  assert.equal(q.missPending, true);
  assert.equal(q.missAddr, IOVA + 0x200000, 'the miss is for the unmapped rest, not the buffer start');
  assert.equal(q.missAccess, ACCESS_WRITE);
  assert.equal(tlb.stats.lookups - before, 2, 'the mapped part is translated once (mapSingle), the rest once (walkSingle)');
  assert.equal(q.lastAvailIdx, 0, 'nothing consumed');
  assert.equal(rxq.counters[NetCounter.misses], 1);
  q.clearMiss();
  tlb.insert({ iova: IOVA + 0x200000, size: 0x1000, uaddr: UVA + 0x80000, perm: ACCESS_WRITE });
  assert.equal(receiveFrame(rxq, src, 0, 120, false), RX_DONE);
  rxq.finish();
  const first = peek(rig, GPA + 0x40fc0, 0x40);
  const rest = peek(rig, GPA + 0x80000, 132 - 0x40);
  const got = new Uint8Array(132);
  got.set(first);
  got.set(rest, 0x40);
  assert.deepEqual(got.subarray(0, 12), Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0));
  assert.deepEqual(got.subarray(12), f);
  assert.equal(rig.driver.popUsed(), 0);
  assert.equal(rig.driver.lastLen, 132);
});

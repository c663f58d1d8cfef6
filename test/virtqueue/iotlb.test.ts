import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPA, UVA, IOVA, HDR, Capture, StubIotlb, iovaOf, makeRig, makePackedRig, netq, poke, frame, txStraddlingBuffer } from './helpers.js';
import { ACCESS_READ, ACCESS_WRITE } from '../../src/memory/address-space.js';
import { RING_OK, RING_MISS, RING_FAULT, WALK_MISS } from '../../src/virtqueue/split.js';
import { transmitBurst, receiveBurst, receiveFrame, RX_BROKEN, RX_MISS, RX_DONE, NetCounter } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { strategies } from '../../src/iotlb/registry.js';

test('IOTLB: a buffer spanning two entries contiguous in IOVA but not in uaddr is read in two pieces', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb });
  txStraddlingBuffer(rig, tlb);
});

test('IOTLB: an indirect table split across two entries (discontiguous uaddr) is read correctly; misaligned table too', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb });
  // Table of 3 entries at IOVA T: the first 32 bytes in one page, the last 16 in another.
  const T = IOVA + 0x300000 - 32;
  tlb.insert({ iova: IOVA + 0x2ff000, size: 0x1000, uaddr: UVA + 0x80000, perm: ACCESS_READ });
  tlb.insert({ iova: IOVA + 0x300000, size: 0x1000, uaddr: UVA + 0x90000, perm: ACCESS_READ });
  const data = IOVA + 0x400000;
  tlb.insert({ iova: data, size: 0x1000, uaddr: UVA + 0xa0000, perm: ACCESS_READ });
  const f = frame(90, 4);
  poke(rig, GPA + 0xa0000, HDR);
  poke(rig, GPA + 0xa0100, f.subarray(0, 40));
  poke(rig, GPA + 0xa0200, f.subarray(40));
  // Build the table in a scratch driver area, then place its halves where the IOTLB says.
  const tableGpa = GPA + 0xb0000;
  rig.driver.writeTable(tableGpa, [data, data + 0x100, data + 0x200], [12, 40, 50], 3);
  const table = rig.bytes.slice(0xb0000, 0xb0000 + 48);
  poke(rig, GPA + 0x80fe0, table.subarray(0, 32));
  poke(rig, GPA + 0x90000, table.subarray(32));
  rig.driver.writeDesc(0, T, 48, 4 /* INDIRECT */, 0);
  rig.driver.pushAvail(0);
  // A second, misaligned (odd address) table in one mapping: the snapshot path too.
  tlb.insert({ iova: IOVA + 0x500000, size: 0x1000, uaddr: UVA + 0xc0000, perm: ACCESS_READ });
  poke(rig, GPA + 0xc0003, table);
  rig.driver.writeDesc(1, IOVA + 0x500003, 48, 4, 0);
  rig.driver.pushAvail(1);
  rig.driver.publish();
  const cap = new Capture();
  assert.equal(transmitBurst(netq(rig.queue), cap, 32), 2, rig.queue.brokenReason);
  assert.deepEqual(cap.frames, [f, f]);
});

test('IOTLB: a miss mid-burst stops without consuming, resumes after the insert', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb });
  const txq = netq(rig.queue);
  const cap = new Capture();
  const bufs = [IOVA + 0x200000, IOVA + 0x300000, IOVA + 0x400000];
  tlb.insert({ iova: bufs[0], size: 0x1000, uaddr: UVA + 0x60000, perm: ACCESS_READ });
  tlb.insert({ iova: bufs[2], size: 0x1000, uaddr: UVA + 0x62000, perm: ACCESS_READ });
  // Frame 1 is a chain: header mapped, payload not.
  tlb.insert({ iova: bufs[1], size: 0x1000, uaddr: UVA + 0x61000, perm: ACCESS_READ });
  const uaddrs = [UVA + 0x60000, UVA + 0x61000, UVA + 0x62000];
  for (let i = 0; i < 3; i++) {
    const w = new Uint8Array(12 + 60);
    w.set(HDR);
    w.set(frame(60, i), 12);
    poke(rig, uaddrs[i] - UVA + GPA, w);
  }
  poke(rig, GPA + 0x70000, frame(60, 1)); // where bufs[1]+0x8000 will map
  rig.driver.addBuffer(bufs[0], 72, false);
  rig.driver.addChain([bufs[1], bufs[1] + 0x8000], [12, 60], 2);
  rig.driver.addBuffer(bufs[2], 72, false);
  rig.driver.publish();

  assert.equal(transmitBurst(txq, cap, 32), 1);
  const q = rig.queue;
  assert.equal(q.missPending, true);
  assert.equal(q.missAddr, bufs[1] + 0x8000);
  assert.equal(q.missAccess, ACCESS_READ);
  assert.equal(q.missLen, 60);
  assert.equal(q.lastAvailIdx, 1);
  assert.equal(rig.driver.usedCount(), 1);
  assert.equal(txq.counters[NetCounter.misses], 1);
  // Still unmapped: still stopped, nothing consumed.
  q.clearMiss();
  assert.equal(transmitBurst(txq, cap, 32), 0);
  assert.equal(q.lastAvailIdx, 1);
  // The front-end answers.
  tlb.insert({ iova: bufs[1] + 0x8000, size: 0x1000, uaddr: UVA + 0x70000, perm: ACCESS_READ });
  q.clearMiss();
  assert.equal(transmitBurst(txq, cap, 32), 2);
  assert.equal(q.missPending, false);
  assert.deepEqual(cap.frames, [frame(60, 0), frame(60, 1), frame(60, 2)]);
});

test('IOTLB: a write into a read-only mapping is refused and no byte changes', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb });
  const rxq = netq(rig.queue, 12, true);
  tlb.insert({ iova: IOVA + 0x200000, size: 0x1000, uaddr: UVA + 0x60000, perm: ACCESS_READ | ACCESS_WRITE });
  tlb.insert({ iova: IOVA + 0x201000, size: 0x1000, uaddr: UVA + 0x61000, perm: ACCESS_READ });
  // First chain writable and fine, the second lands on the read-only page.
  rig.driver.addBuffer(IOVA + 0x200000, 40, true);
  rig.driver.addBuffer(IOVA + 0x201000, 2000, true);
  rig.driver.publish();
  rig.bytes.fill(0x5a, 0x60000, 0x62000);
  const before = rig.bytes.slice();
  const sg = new ScatterList(1);
  sg.push(frame(200), 0, 200);
  assert.equal(receiveFrame(rxq, sg, 0, 200, false), RX_BROKEN);
  assert.match(rig.queue.brokenReason, /desc\[\d+\] \(addr=0x100201000 len=2000\): IOTLB denies write access/);
  assert.deepEqual(rig.bytes, before);
  assert.equal(rig.queue.lastAvailIdx, 0);
});

test('IOTLB: RX miss leaves buffers untouched and unconsumed, then delivers', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb });
  const rxq = netq(rig.queue, 12, false);
  rig.driver.addBuffer(IOVA + 0x200000, 2048, true);
  rig.driver.publish();
  const sg = new ScatterList(1);
  sg.push(frame(64), 0, 64);
  assert.equal(receiveFrame(rxq, sg, 0, 64, false), RX_MISS);
  assert.equal(rig.queue.missAddr, IOVA + 0x200000);
  assert.equal(rig.queue.missAccess, ACCESS_WRITE);
  tlb.insert({ iova: IOVA + 0x200000, size: 0x1000, uaddr: UVA + 0x60000, perm: ACCESS_WRITE });
  assert.equal(receiveFrame(rxq, sg, 0, 64, false), RX_DONE);
  rxq.finish();
  assert.equal(rig.driver.popUsed(), 0);
  assert.equal(rig.driver.lastLen, 76);
  assert.deepEqual(rig.bytes.subarray(0x6000c, 0x6000c + 64), frame(64));
});

test('IOTLB: ring mapping misses one area at a time, then maps; non-contiguous or read-only used ring faults', () => {
  const tlb = new StubIotlb();
  const rig = makeRig({ iotlb: tlb, mapRings: false });
  const q = rig.queue;
  assert.equal(rig.st, RING_MISS);
  assert.equal(q.ready, false);
  assert.equal(q.missAddr, iovaOf(rig.layout.descAddr));
  let rounds = 0;
  let st = RING_MISS;
  while (st === RING_MISS && rounds++ < 5) {
    const page = Math.floor(q.missAddr / 0x1000) * 0x1000;
    tlb.insert({ iova: page, size: 0x1000, uaddr: UVA + (page - IOVA), perm: ACCESS_READ | ACCESS_WRITE });
    st = q.mapRings();
  }
  assert.equal(st, RING_OK);
  assert.equal(q.ready, true);

  // Used ring page remapped to a non-adjacent uaddr for its second half: not contiguous.
  const t2 = new StubIotlb();
  const r2 = makeRig({ iotlb: t2, size: 512 });
  assert.equal(r2.st, RING_OK);
  const usedIova = iovaOf(r2.layout.usedAddr);
  t2.insert({ iova: usedIova + 0x1000, size: 0x1000, uaddr: UVA + 0x90000, perm: 3 });
  assert.equal(r2.queue.mapRings(), RING_FAULT);
  assert.match(r2.queue.error, /used ring at 0x[0-9a-f]+ \(4102 bytes\) is not contiguous in host memory/);

  const t3 = new StubIotlb();
  const r3 = makeRig({ iotlb: t3 });
  t3.insert({ iova: iovaOf(r3.layout.usedAddr), size: 0x1000, uaddr: UVA + (r3.layout.usedAddr - GPA), perm: ACCESS_READ });
  assert.equal(r3.queue.mapRings(), RING_FAULT);
  assert.match(r3.queue.error, /used ring .* access denied by the IOTLB/);
});

// The real strategies: same miss/resume contract. Imported statically: a registry that does
// not load fails this file instead of skipping the test.
test('IOTLB: every registered strategy serves the data path (split buffer, miss, resume)', () => {
  assert.ok(strategies.length > 0, 'no strategy registered: the loop below would check nothing');
  for (const def of strategies) {
    const tlb = def.create({ capacity: 64, seed: 1 });
    const rig = makeRig({ iotlb: tlb });
    assert.equal(rig.st, RING_OK, def.name);
    const txq = netq(rig.queue);
    const cap = new Capture();
    const b = IOVA + 0x100000 + 0xfc0;
    tlb.insert({ iova: IOVA + 0x100000, size: 0x1000, uaddr: UVA + 0x50000, perm: ACCESS_READ });
    const whole = new Uint8Array(112);
    whole.set(HDR);
    whole.set(frame(100), 12);
    poke(rig, GPA + 0x50fc0, whole.subarray(0, 64));
    poke(rig, GPA + 0x20000, whole.subarray(64));
    rig.driver.addBuffer(b, 112, false);
    rig.driver.publish();
    assert.equal(transmitBurst(txq, cap, 32), 0, def.name);
    assert.equal(rig.queue.missAddr, IOVA + 0x101000, def.name);
    tlb.insert({ iova: IOVA + 0x101000, size: 0x1000, uaddr: UVA + 0x20000, perm: ACCESS_READ });
    assert.equal(transmitBurst(txq, cap, 32), 1, def.name);
    assert.deepEqual(cap.frames[0], frame(100), def.name);
  }
});

for (const kind of ['split', 'packed'] as const) {
  test(`IOTLB (${kind}): a receive buffer is translated only as far as the frame reaches: no miss for its unused tail`, () => {
    const tlb = new StubIotlb();
    const rig = kind === 'split' ? makeRig({ iotlb: tlb }) : makePackedRig({ iotlb: tlb });
    const rxq = netq(rig.queue, 12, true);
    // Two 2 KiB buffers that start 0xc00 into a mapped IOVA page and end in the next, unmapped one.
    const bufs = [IOVA + 0x200c00, IOVA + 0x300c00];
    tlb.insert({ iova: IOVA + 0x200000, size: 0x1000, uaddr: UVA + 0x60000, perm: ACCESS_WRITE });
    tlb.insert({ iova: IOVA + 0x300000, size: 0x1000, uaddr: UVA + 0x70000, perm: ACCESS_WRITE });
    for (const b of bufs) rig.driver.addBuffer(b, 2048, true);
    rig.driver.publish();
    // A 64-byte frame fits the mapped first KiB: delivered, no miss, through the run path and the single one.
    const small = new ScatterList(2);
    small.push(frame(64, 1), 0, 64);
    assert.equal(receiveBurst(rxq, small), 1, rig.queue.brokenReason);
    assert.equal(rig.queue.missPending, false);
    assert.equal(rxq.counters[NetCounter.misses], 0);
    assert.deepEqual(rig.bytes.subarray(0x60c0c, 0x60c0c + 64), frame(64, 1));
    // 12 + 1100 bytes reach past the page: the miss is for the next page, where the frame needs it.
    const big = new ScatterList(1);
    big.push(frame(1100, 2), 0, 1100);
    assert.equal(receiveFrame(rxq, big, 0, 1100, false), RX_MISS);
    assert.equal(rig.queue.missAddr, IOVA + 0x301000);
    assert.equal(rig.queue.missAccess, ACCESS_WRITE);
    tlb.insert({ iova: IOVA + 0x301000, size: 0x1000, uaddr: UVA + 0x80000, perm: ACCESS_WRITE });
    assert.equal(receiveFrame(rxq, big, 0, 1100, false), RX_DONE);
    rxq.finish();
    const f = frame(1100, 2);
    assert.deepEqual(rig.bytes.subarray(0x70c0c, 0x71000), f.subarray(0, 0x400 - 12));
    assert.deepEqual(rig.bytes.subarray(0x80000, 0x80000 + 1100 - (0x400 - 12)), f.subarray(0x400 - 12));
    rig.driver.popUsed();
    assert.equal(rig.driver.lastLen, 76);
    rig.driver.popUsed();
    assert.equal(rig.driver.lastLen, 1112);
  });
}

for (const kind of ['split', 'packed'] as const) {
  test(`IOTLB (${kind}): with a miss sink a walk reports every missing page of its readable buffers, direct and indirect; without one it stops at the first`, () => {
    const tlb = new StubIotlb();
    const rig = kind === 'split' ? makeRig({ iotlb: tlb }) : makePackedRig({ iotlb: tlb });
    // A TSO-like chain: a header page that is mapped, then a 2-page buffer and a 1-page buffer
    // that are not, then a writable buffer over two unmapped pages.
    const hdr = IOVA + 0x200000;
    const frags = IOVA + 0x300000;
    const single = IOVA + 0x400000;
    const rx = IOVA + 0x500000;
    tlb.insert({ iova: hdr, size: 0x1000, uaddr: UVA + 0x60000, perm: ACCESS_READ });
    rig.driver.addChain([hdr, frags + 0x800, single, rx], [12, 0x1000, 0x100, 0x2000], 3);
    // The same buffers behind an indirect table (mapped).
    tlb.insert({ iova: IOVA + 0x600000, size: 0x1000, uaddr: UVA + 0x70000, perm: ACCESS_READ });
    rig.driver.addIndirect(GPA + 0x70000, [hdr, frags + 0x800, single, rx], [12, 0x1000, 0x100, 0x2000], 3, 4, IOVA + 0x600000);
    rig.driver.publish();
    const q = rig.queue;
    assert.equal(q.availableCount(), 2);
    const sg = new ScatterList(64);
    for (const ahead of [0, 1]) {
      sg.reset();
      assert.equal(q.walkChain(ahead, sg), WALK_MISS, 'no sink: the walk stops');
      assert.equal(q.missAddr, frags + 0x800);
      q.clearMiss();
      const seen: string[] = [];
      q.missSink = (addr, access) => {
        seen.push(`${(addr - IOVA).toString(16)}:${access}`);
        return true;
      };
      sg.reset();
      assert.equal(q.walkChain(ahead, sg), WALK_MISS, 'the writable buffer still stops the walk');
      assert.equal(q.missAddr, rx, 'at its first page');
      assert.deepEqual(seen, ['300800:1', '301000:1', '400000:1'], 'each missing readable page once, from where it misses');
      // A sink that says no stops the walk where it is.
      q.missSink = () => false;
      sg.reset();
      assert.equal(q.walkChain(ahead, sg), WALK_MISS);
      assert.equal(q.missAddr, frags + 0x800);
      q.missSink = null;
      q.clearMiss();
    }
    assert.equal(q.broken, false, q.brokenReason);
  });
}

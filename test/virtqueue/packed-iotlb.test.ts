// Packed virtqueues through the IOTLB address space: ring areas postponed on a miss,
// buffer misses stop a burst without consuming and resume, split translations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPA, UVA, IOVA, HDR, Capture, StubIotlb, iovaOf, makePackedRig, netq, poke, peek, frame, txStraddlingBuffer } from './helpers.js';
import { ACCESS_READ, ACCESS_WRITE } from '../../src/memory/address-space.js';
import { RING_OK, RING_MISS, RING_FAULT } from '../../src/virtqueue/packed.js';
import { transmitBurst, receiveFrame, RX_MISS, RX_DONE, NetCounter } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';

test('packed IOTLB: a buffer spanning two entries contiguous in IOVA but not in uaddr is read in two pieces', () => {
  const tlb = new StubIotlb();
  const rig = makePackedRig({ iotlb: tlb });
  txStraddlingBuffer(rig, tlb);
  assert.ok(rig.driver.popUsed() >= 0);
});

test('packed IOTLB: a miss mid-burst stops without consuming; the burst resumes after the insert', () => {
  const tlb = new StubIotlb();
  const rig = makePackedRig({ iotlb: tlb, size: 8 });
  const mapped = IOVA + 0x100000;
  const unmapped = IOVA + 0x200000;
  tlb.insert({ iova: mapped, size: 0x1000, uaddr: UVA + 0x30000, perm: ACCESS_READ });
  for (let i = 0; i < 3; i++) {
    const w = new Uint8Array(72);
    w.set(HDR);
    w.set(frame(60, i), 12);
    poke(rig, GPA + 0x30000 + i * 0x100, w);
    poke(rig, GPA + 0x40000 + i * 0x100, w);
  }
  rig.driver.addChain([mapped, mapped + 12], [12, 60], 2);
  rig.driver.addChain([unmapped + 0x100, unmapped + 0x10c], [12, 60], 2); // misses
  rig.driver.addBuffer(mapped + 0x200, 72, false);
  rig.driver.publish();
  const txq = netq(rig.queue);
  const cap = new Capture();
  assert.equal(transmitBurst(txq, cap, 32), 1);
  assert.equal(rig.queue.missPending, true);
  assert.equal(rig.queue.missAddr, unmapped + 0x100);
  assert.equal(rig.queue.missAccess, ACCESS_READ);
  assert.equal(txq.counters[NetCounter.misses], 1);
  assert.equal(rig.driver.usedCount(), 1, 'only the first chain completed');
  rig.queue.clearMiss();
  assert.equal(transmitBurst(txq, cap, 32), 0, 'still missing: nothing consumed');
  rig.queue.clearMiss();
  tlb.insert({ iova: unmapped, size: 0x1000, uaddr: UVA + 0x40000, perm: ACCESS_READ });
  assert.equal(transmitBurst(txq, cap, 32), 2);
  assert.deepEqual(cap.frames.map((f) => f[0]), [frame(60, 0)[0], frame(60, 1)[0], frame(60, 2)[0]]);
  assert.equal(rig.driver.usedCount(), 3);
});

test('packed IOTLB: RX miss leaves buffers untouched and unconsumed, then delivers', () => {
  const tlb = new StubIotlb();
  const rig = makePackedRig({ iotlb: tlb, size: 4 });
  const buf = IOVA + 0x300000;
  rig.driver.addBuffer(buf, 2048, true);
  rig.driver.publish();
  const rxq = netq(rig.queue);
  const f = frame(100, 9);
  const src = new ScatterList(1);
  src.push(f, 0, f.length);
  assert.equal(receiveFrame(rxq, src, 0, f.length, false), RX_MISS);
  assert.equal(rig.queue.missAccess, ACCESS_WRITE);
  rxq.finish();
  assert.equal(rig.driver.usedCount(), 0);
  rig.queue.clearMiss();
  tlb.insert({ iova: buf, size: 0x1000, uaddr: UVA + 0x60000, perm: ACCESS_WRITE });
  assert.equal(receiveFrame(rxq, src, 0, f.length, false), RX_DONE);
  rxq.finish();
  assert.ok(rig.driver.popUsed() >= 0);
  assert.equal(rig.driver.lastLen, 112);
  assert.deepEqual(peek(rig, GPA + 0x60000 + 12, 100), f);
});

test('packed IOTLB: ring areas miss one at a time, then map; read-only desc ring faults; invalidating the ring unmaps it', () => {
  const tlb = new StubIotlb();
  const rig = makePackedRig({ iotlb: tlb, mapRings: false, size: 8 });
  assert.equal(rig.st, RING_MISS);
  assert.equal(rig.queue.missAddr, iovaOf(rig.layout.descAddr));
  assert.equal(rig.queue.missAccess, ACCESS_READ | ACCESS_WRITE, 'the desc ring is written too (used descriptors)');
  tlb.insert({ iova: iovaOf(rig.layout.descAddr), size: 128, uaddr: UVA, perm: ACCESS_READ | ACCESS_WRITE });
  assert.equal(rig.queue.mapRings(), RING_MISS);
  assert.equal(rig.queue.missAddr, iovaOf(rig.layout.driverAddr));
  tlb.insert({ iova: iovaOf(rig.layout.driverAddr), size: 8, uaddr: UVA + 128, perm: ACCESS_READ | ACCESS_WRITE });
  assert.equal(rig.queue.mapRings(), RING_OK);
  // Traffic works now.
  poke(rig, GPA + 0x1000, HDR);
  tlb.insert({ iova: IOVA + 0x1000, size: 0x1000, uaddr: UVA + 0x1000, perm: ACCESS_READ });
  rig.driver.addBuffer(IOVA + 0x1000, 80, false);
  rig.driver.publish();
  assert.equal(transmitBurst(netq(rig.queue), new Capture(), 32), 1);
  // Invalidation covering the desc ring: the runtime unmaps and remaps -> miss.
  assert.equal(rig.queue.ringsOverlap(iovaOf(rig.layout.descAddr) + 64, 1), true);
  assert.equal(rig.queue.ringsOverlap(IOVA + 0x1000, 0x1000), false);
  tlb.invalidate(iovaOf(rig.layout.descAddr), 128);
  rig.queue.unmapRings();
  assert.equal(rig.queue.availableCount(), 0);
  assert.equal(rig.queue.mapRings(), RING_MISS);
  // Read-only desc ring: fault naming it.
  tlb.insert({ iova: iovaOf(rig.layout.descAddr), size: 128, uaddr: UVA, perm: ACCESS_READ });
  assert.equal(rig.queue.mapRings(), RING_FAULT);
  assert.match(rig.queue.error, /desc ring at .*: address .* access denied by the IOTLB/);
});

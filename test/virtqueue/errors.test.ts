import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRig, netq, poke, frame, GPA, MEM_SIZE } from './helpers.js';
import { transmitBurst, receiveBurst, RX_BROKEN, receiveFrame } from '../../src/net/virtio-net.js';
import type { FrameSink } from '../../src/net/endpoint.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import {
  SplitQueue, WALK_BROKEN, RING_FAULT, VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as WRITE,
  VRING_DESC_F_INDIRECT as INDIRECT,
} from '../../src/virtqueue/split.js';
import { GuestPhysicalSpace, UserAddressSpace } from '../../src/memory/address-space.js';

const never: FrameSink = {
  transmit: () => { throw new Error('no frame expected'); },
  flush: () => {},
};

/** Builds a malformed TX (or RX) chain with raw descriptor writes; expects the queue broken with `reason`. */
function expectBroken(build: (rig: ReturnType<typeof makeRig>) => void, reason: RegExp, rx = false): void {
  const rig = makeRig({ size: 8 });
  build(rig);
  rig.driver.publish();
  const before = rig.bytes.slice();
  if (rx) {
    const sg = new ScatterList(1);
    sg.push(frame(64), 0, 64);
    assert.equal(receiveFrame(netq(rig.queue), sg, 0, 64, false), RX_BROKEN);
  } else {
    assert.equal(transmitBurst(netq(rig.queue), never, 32), 0);
  }
  assert.equal(rig.queue.broken, true);
  assert.match(rig.queue.brokenReason, reason);
  assert.equal(rig.queue.lastAvailIdx, 0);
  assert.deepEqual(rig.bytes, before, 'no byte of guest memory changed');
  // A broken queue does nothing more.
  assert.equal(rig.queue.availableCount(), 0);
}

test('descriptor outside guest memory', () => {
  expectBroken((r) => { r.driver.writeDesc(0, GPA + MEM_SIZE + 0x1000, 64, 0, 0); r.driver.pushAvail(0); },
    /desc\[0\]\.addr=0x201000 \(len=64\) is outside guest memory/);
  expectBroken((r) => { r.driver.writeDesc(0, 0x1000, 64, WRITE, 0); r.driver.pushAvail(0); },
    /desc\[0\]\.addr=0x1000 .* outside guest memory/, true);
});

test('length overflow: addr+len runs past memory, and wraps 64 bits', () => {
  expectBroken((r) => { r.driver.writeDesc(0, GPA + MEM_SIZE - 16, 64, WRITE, 0); r.driver.pushAvail(0); },
    /desc\[0\]\.len=64 overflows guest memory/, true);
  expectBroken((r) => {
    r.driver.writeDesc(0, 0, 0xffffffff, 0, 0);
    r.driver.writeDescAddrRaw(0, 0xffffffff, 0xffffff00);
    r.driver.pushAvail(0);
  }, /desc\[0\]\.addr=0xffffffffffffff00 is beyond 2\^53/);
  // Chain total over 2^32-1.
  expectBroken((r) => {
    r.driver.writeDesc(0, GPA, 0xffffff00, NEXT, 1);
    r.driver.writeDesc(1, GPA, 0x200, 0, 0);
    r.driver.pushAvail(0);
  }, /desc\[0\]\.len=4294967040 overflows guest memory|longer than 2\^32-1/);
});

test('loop in a chain', () => {
  expectBroken((r) => {
    r.driver.writeDesc(0, r.bufBase, 16, NEXT, 1);
    r.driver.writeDesc(1, r.bufBase, 16, NEXT, 0);
    r.driver.pushAvail(0);
  }, /more than queue size 8 descriptors \(loop\)/);
  expectBroken((r) => {
    r.driver.writeTable(r.bufBase, [r.bufBase + 0x100, r.bufBase + 0x200], [16, 16], 2);
    poke(r, r.bufBase + 16 + 12, [NEXT, 0, 0, 0]); // entry 1 -> 0
    r.driver.writeDesc(0, r.bufBase, 32, INDIRECT, 0);
    r.driver.pushAvail(0);
  }, /INDIRECT table of desc\[0\] has a loop/);
});

test('index >= size: avail ring head, desc next, indirect next', () => {
  expectBroken((r) => { r.driver.pushAvail(8); }, /avail\.ring\[0\]=8 is not below queue size 8/);
  expectBroken((r) => { r.driver.writeDesc(3, r.bufBase, 16, NEXT, 9); r.driver.pushAvail(3); }, /desc\[3\]\.next=9 is not below queue size 8/);
  expectBroken((r) => {
    r.driver.writeTable(r.bufBase, [r.bufBase + 0x100, r.bufBase + 0x200], [16, 16], 2);
    poke(r, r.bufBase + 16 + 12, [NEXT, 0, 5, 0]);
    r.driver.writeDesc(0, r.bufBase, 32, INDIRECT, 0);
    r.driver.pushAvail(0);
  }, /indirect desc\[1\]\.next=5 of desc\[0\] is not below table length 2/);
});

test('nested indirect, bad indirect length, indirect table outside memory', () => {
  expectBroken((r) => {
    r.driver.writeTable(r.bufBase, [r.bufBase + 0x100], [16], 1);
    poke(r, r.bufBase + 12, [INDIRECT, 0]);
    r.driver.writeDesc(0, r.bufBase, 16, INDIRECT, 0);
    r.driver.pushAvail(0);
  }, /indirect desc\[0\] of desc\[0\] is INDIRECT too \(nested indirect\)/);
  expectBroken((r) => { r.driver.writeDesc(0, r.bufBase, 24, INDIRECT, 0); r.driver.pushAvail(0); },
    /desc\[0\] is INDIRECT with len=24, not a non-zero multiple of 16/);
  expectBroken((r) => { r.driver.writeDesc(0, r.bufBase, 0, INDIRECT, 0); r.driver.pushAvail(0); },
    /INDIRECT with len=0/);
  expectBroken((r) => { r.driver.writeDesc(0, 0x10, 32, INDIRECT, 0); r.driver.pushAvail(0); },
    /desc\[0\]\.addr=0x10 \(INDIRECT table\) is outside guest memory/);
  expectBroken((r) => { r.driver.writeDesc(0, r.bufBase, 16 * 9, INDIRECT, 0); r.driver.pushAvail(0); },
    /INDIRECT table has 9 descriptors, more than queue size 8/);
});

test('direction: writable descriptor in TX, readable in RX, readable after writable', () => {
  expectBroken((r) => { r.driver.writeDesc(0, r.bufBase, 64, WRITE, 0); r.driver.pushAvail(0); }, /TX chain at head 0 has 64 device-writable bytes/);
  expectBroken((r) => { r.driver.writeDesc(0, r.bufBase, 64, 0, 0); r.driver.pushAvail(0); }, /RX chain at head 0 has 64 device-readable bytes/, true);
  expectBroken((r) => {
    r.driver.writeDesc(0, r.bufBase, 64, WRITE | NEXT, 1);
    r.driver.writeDesc(1, r.bufBase + 64, 64, 0, 0);
    r.driver.pushAvail(0);
  }, /desc\[1\] is device-readable but follows a device-writable descriptor/, true);
});

test('avail idx running more than size ahead breaks the queue', () => {
  const rig = makeRig({ size: 8 });
  for (let i = 0; i < 9; i++) rig.driver.pushAvail(0);
  rig.driver.publish();
  assert.equal(rig.queue.availableCount(), 0);
  assert.match(rig.queue.brokenReason, /avail\.idx=9 is 9 entries past last_avail_idx=0/);
});

test('chain longer than the scatter list is refused', () => {
  const rig = makeRig({ size: 8 });
  for (let i = 0; i < 8; i++) rig.driver.writeDesc(i, rig.bufBase + i * 64, 64, i < 7 ? NEXT : 0, i + 1);
  rig.driver.pushAvail(0);
  rig.driver.publish();
  const q = rig.queue;
  assert.equal(q.availableCount(), 1);
  const sg = new ScatterList(4);
  assert.equal(q.walkChain(0, sg), WALK_BROKEN);
  assert.match(q.brokenReason, /needs more than 4 pieces \(chain too long\)/);
  assert.equal(sg.count, 0);
});

test('configure: bad size, misaligned ring, ring outside memory or not contiguous', () => {
  const { memory } = makeRig();
  const base = { ringSpace: new UserAddressSpace(memory), dataSpace: new GuestPhysicalSpace(memory), eventIdx: false, lastAvailIdx: 0 };
  const q = new SplitQueue();
  const uva = 0x7f0000000000;
  assert.equal(q.configure({ ...base, size: 12, descAddr: uva, availAddr: uva + 0x1000, usedAddr: uva + 0x2000 }), RING_FAULT);
  assert.match(q.error, /queue size 12 is not a power of 2/);
  assert.equal(q.configure({ ...base, size: 65536, descAddr: uva, availAddr: uva + 0x1000, usedAddr: uva + 0x2000 }), RING_FAULT);
  assert.equal(q.configure({ ...base, size: 8, descAddr: uva + 8, availAddr: uva + 0x1000, usedAddr: uva + 0x2000 }), RING_FAULT);
  assert.match(q.error, /desc ring address 0x7f0000000008 is not 16-byte aligned/);
  assert.equal(q.configure({ ...base, size: 8, descAddr: uva, availAddr: uva + 0x1000, usedAddr: uva + 0x2002 }), RING_FAULT);
  assert.match(q.error, /used ring .* not 4-byte aligned/);
  assert.equal(q.configure({ ...base, size: 256, descAddr: uva, availAddr: uva + 0x1000, usedAddr: uva + 0x100000 - 0x10 }), RING_FAULT);
  assert.match(q.error, /used ring at 0x7f00000ffff0: address 0x7f0000100000 outside guest memory/);
  assert.equal(q.ready, false);
  assert.equal(q.availableCount(), 0);
  void receiveBurst;
});

test('chains completed before the queue broke are still returned', () => {
  const rig = makeRig({ size: 8 });
  poke(rig, rig.bufBase, new Uint8Array(12));
  poke(rig, rig.bufBase + 12, frame(60));
  rig.driver.addBuffer(rig.bufBase, 72, false);
  rig.driver.writeDesc(5, 0x10, 72, 0, 0);
  rig.driver.pushAvail(5);
  rig.driver.publish();
  let got = 0;
  const ep: FrameSink = { transmit: () => { got++; return true; }, flush: () => {} };
  assert.equal(transmitBurst(netq(rig.queue), ep, 32), 1);
  assert.equal(got, 1);
  assert.equal(rig.queue.broken, true);
  assert.equal(rig.driver.usedIdx(), 1);
});

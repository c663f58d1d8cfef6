// Where a split ring resumes when the base it is given (SET_VRING_BASE: the last avail index a
// previous back-end reported) disagrees with used->idx in guest memory: from used->idx, as
// DPDK's vhost does, so the chains in between are taken again instead of lost, and every used
// entry lands where the driver looks for it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRig, netq, poke, frame, GPA, UVA } from './helpers.js';
import { transmitBurst } from '../../src/net/virtio-net.js';
import type { FrameSink } from '../../src/net/endpoint.js';
import { RING_OK, SplitQueue } from '../../src/virtqueue/split.js';
import { GuestPhysicalSpace, UserAddressSpace } from '../../src/memory/address-space.js';

/** A driver at index 5 with two TX frames posted, and a fresh queue configured with `base`. */
function resumed(base: number): { rig: ReturnType<typeof makeRig>; queue: SplitQueue } {
  const rig = makeRig({ size: 8, startIdx: 5 });
  for (let i = 0; i < 2; i++) {
    const at = rig.bufBase + 128 * i;
    poke(rig, at, new Uint8Array(12));
    poke(rig, at + 12, frame(60, i + 1));
    rig.driver.addBuffer(at, 72, false);
  }
  rig.driver.publish();
  const toUser = (g: number): number => g - GPA + UVA;
  const queue = new SplitQueue();
  const st = queue.configure({
    size: 8, descAddr: toUser(rig.layout.descAddr), availAddr: toUser(rig.layout.availAddr), usedAddr: toUser(rig.layout.usedAddr),
    ringSpace: new UserAddressSpace(rig.memory), dataSpace: new GuestPhysicalSpace(rig.memory), eventIdx: false, lastAvailIdx: base,
  });
  assert.equal(st, RING_OK, queue.error);
  return { rig, queue };
}

function drain(queue: SplitQueue): number {
  let got = 0;
  const sink: FrameSink = { transmit: () => { got++; return true; }, flush: () => {} };
  transmitBurst(netq(queue), sink, 32);
  return got;
}

test('a base that matches used->idx is taken as given', () => {
  const { rig, queue } = resumed(5);
  assert.equal(queue.resumedAt, null);
  assert.equal(queue.lastAvailIdx, 5);
  assert.equal(drain(queue), 2);
  assert.equal(rig.driver.usedIdx(), 7);
});

test('a base past used->idx (chains taken but never returned): resumes at used->idx, the chains are taken again', () => {
  const { rig, queue } = resumed(7);
  assert.deepEqual(queue.resumedAt, { given: 7, used: 5 });
  assert.equal(queue.lastAvailIdx, 5);
  assert.equal(queue.usedIdx, 5);
  assert.equal(drain(queue), 2, 'both frames sent');
  assert.equal(rig.driver.usedIdx(), 7, 'used->idx moves on from where the driver left it');
  assert.equal(rig.driver.usedCount(), 2, 'the driver gets both chains back');
});

// Packed virtqueues (spec 2.8), device side against the packed driver: data, chaining,
// indirect tables, wrap counters over many laps, event suppression, ring base, errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Capture, HDR, addChainedFrame, makePackedRig, makeMemory, netq, poke, peek, frame, txIndirectFrame, GPA, UVA } from './helpers.js';
import { transmitBurst, receiveFrame, NetCounter, RX_DONE, RX_NO_ROOM } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { BufferRun } from '../../src/virtqueue/buffer-run.js';
import { LoopbackEndpoint } from '../../src/net/loopback.js';
import {
  PackedQueue, RING_OK, RING_FAULT, WALK_BROKEN, WALK_OK, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED,
  VRING_PACKED_EVENT_FLAG_DESC, VRING_PACKED_EVENT_FLAG_DISABLE, VRING_PACKED_EVENT_FLAG_ENABLE,
} from '../../src/virtqueue/packed.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/virtqueue/split.js';
import { ACCESS_WRITE, GuestPhysicalSpace, UserAddressSpace } from '../../src/memory/address-space.js';
import { layoutPacked } from '../support/frontend/packed-driver.js';

const USED_BITS = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;

test('packed TX: chained frame delivers exact bytes; one used descriptor at the head, position moves by the chain length', () => {
  const rig = makePackedRig({ size: 8 });
  const { f, head: id } = addChainedFrame(rig);
  const txq = netq(rig.queue);
  const cap = new Capture();
  assert.equal(transmitBurst(txq, cap, 32), 0, 'nothing visible before publish');
  rig.driver.publish();
  assert.equal(transmitBurst(txq, cap, 32), 1);
  assert.deepEqual(cap.frames[0], f);
  assert.equal(cap.pieces[0], 2);
  // The used descriptor sits at position 0 with AVAIL == USED == 1, id of the buffer, len 0.
  const [, len, usedId, flags] = rig.driver.readDesc(0);
  assert.equal(usedId, id);
  assert.equal(len, 0);
  assert.equal(flags & USED_BITS, USED_BITS);
  assert.equal(rig.driver.usedCount(), 1);
  assert.equal(rig.driver.popUsed(), id);
  assert.equal(rig.driver.lastUsed, 3);
  assert.equal(rig.driver.freeCount, 8);
  assert.equal(rig.queue.vringBase(), ((3 | 1 << 15) | ((3 | 1 << 15) << 16)) >>> 0);
  assert.equal(txq.counters[NetCounter.packets], 1);
  assert.equal(txq.counters[NetCounter.bytes], 100);
});

test('packed TX: indirect table (NEXT bits inside it ignored) delivers exact bytes', () => {
  const rig = makePackedRig();
  const id = txIndirectFrame(rig);
  assert.equal(rig.queue.chainDescs, 4);
  assert.equal(rig.driver.popUsed(), id);
  assert.equal(rig.driver.lastUsed, 1);
});

test('packed RX: header + frame, used len; MRG_RXBUF spreads over buffers with exact lens; no room keeps nothing', () => {
  const rig = makePackedRig({ size: 8 });
  const b = rig.bufBase;
  const rxq = netq(rig.queue, 12, true);
  const f = frame(300, 5);
  const src = new ScatterList(4);
  src.push(f, 0, f.length);
  assert.equal(receiveFrame(rxq, src, 0, f.length, false), RX_NO_ROOM);
  const ids = [0, 1, 2].map((i) => rig.driver.addBuffer(b + i * 0x1000, 128, true));
  rig.driver.publish();
  assert.equal(receiveFrame(rxq, src, 0, f.length, false), RX_DONE);
  rxq.finish();
  const lens: number[] = [];
  for (const id of ids) {
    assert.equal(rig.driver.popUsed(), id);
    lens.push(rig.driver.lastLen);
    assert.equal(rig.driver.lastFlags & VRING_DESC_F_WRITE, VRING_DESC_F_WRITE);
  }
  assert.deepEqual(lens, [128, 128, 56]);
  const got = new Uint8Array(312);
  got.set(peek(rig, b, 128), 0);
  got.set(peek(rig, b + 0x1000, 128), 128);
  got.set(peek(rig, b + 0x2000, 56), 256);
  assert.equal(got[10] | (got[11] << 8), 3, 'num_buffers');
  assert.deepEqual(got.subarray(12), f);
  assert.equal(rxq.takeInterrupt(), true);
});

for (const size of [8, 5, 256]) {
  test(`packed loopback over many laps (size ${size}): chains of 1-3 descriptors and indirect ones crossing the ring end`, () => {
    const { memory, region } = makeMemory(0x400000);
    const tx = makePackedRig({ size, memory: { memory, region } });
    const rx = makePackedRig({ size, memory: { memory, region }, ringOffset: 0x10000 });
    const rxq = netq(rx.queue, 12, true);
    const txq = netq(tx.queue);
    const loop = new LoopbackEndpoint(rxq);
    const txBuf = GPA + 0x40000;
    const rxBuf = GPA + 0x200000;
    const total = 40 * size + 7;
    let sent = 0;
    let received = 0;
    let slot = 0;
    const expect: Uint8Array[] = [];
    for (let round = 0; received < total && round < 100000; round++) {
      // Driver: post RX buffers (one 2 KiB buffer each) and TX frames of varied shapes.
      while (rx.driver.freeCount > 0) rx.driver.addBuffer(rxBuf + (slot++ % 512) * 2048, 2048, true);
      rx.driver.publish();
      for (let k = 0; k < 3 && sent < total; k++) {
        const f = frame(60 + (sent % 50), sent);
        const s = slot++ % 512;
        const a = txBuf + s * 0x400;
        const wire = new Uint8Array(12 + f.length);
        wire.set(HDR);
        wire.set(f, 12);
        poke(tx, a, wire);
        const shape = sent % 4;
        let id: number;
        if (shape === 0) id = tx.driver.addBuffer(a, wire.length, false);
        else if (shape === 1) id = tx.driver.addChain([a, a + 12], [12, f.length], 2);
        else if (shape === 2) id = tx.driver.addChain([a, a + 12, a + 40], [12, 28, f.length - 28], 3);
        else id = tx.driver.addIndirect(txBuf + 0x100000 + s * 64, [a, a + 12], [12, f.length], 2);
        if (id < 0) break;
        const swapped = f.slice();
        swapped.set(f.subarray(6, 12), 0);
        swapped.set(f.subarray(0, 6), 6);
        expect.push(swapped);
        sent++;
      }
      tx.driver.publish();
      transmitBurst(txq, loop, 32);
      let n = tx.driver.usedCount();
      while (n-- > 0) tx.driver.takeUsed();
      while (rx.driver.popUsed() >= 0) {
        assert.equal(rx.driver.lastLen, 12 + expect[received].length, `frame ${received} length`);
        received++;
      }
      assert.equal(tx.queue.broken, false, tx.queue.brokenReason);
      assert.equal(rx.queue.broken, false, rx.queue.brokenReason);
    }
    assert.equal(received, total);
    assert.equal(txq.counters[NetCounter.packets], total);
    assert.equal(rxq.counters[NetCounter.packets], total);
    assert.equal(tx.driver.freeCount, size);
    // Device and driver agree on positions and wrap counters after all those laps.
    const base = tx.queue.vringBase();
    assert.equal(base & 0x7fff, tx.driver.nextAvail);
    assert.equal((base >>> 15) & 1, tx.driver.availWrap);
    assert.equal(base >>> 16, base & 0xffff);
  });
}

test('packed RX contents over laps: every frame arrives intact, MACs swapped', () => {
  const { memory, region } = makeMemory(0x400000);
  const tx = makePackedRig({ size: 6, memory: { memory, region } });
  const rx = makePackedRig({ size: 6, memory: { memory, region }, ringOffset: 0x10000 });
  const loop = new LoopbackEndpoint(netq(rx.queue, 12, false));
  const txq = netq(tx.queue);
  const rxAddr = new Map<number, number>();
  for (let i = 0; i < 100; i++) {
    const b = GPA + 0x200000 + (i % 8) * 0x1000;
    const id = rx.driver.addBuffer(b, 2048, true);
    rxAddr.set(id, b);
    rx.driver.publish();
    const f = frame(64 + i, i);
    const a = GPA + 0x100000 + (i % 8) * 0x1000;
    poke(tx, a, HDR);
    poke(tx, a + 0x100, f);
    tx.driver.addChain([a, a + 0x100], [12, f.length], 2);
    tx.driver.publish();
    assert.equal(transmitBurst(txq, loop, 32), 1);
    assert.ok(tx.driver.popUsed() >= 0);
    const got = rx.driver.popUsed();
    assert.ok(got >= 0);
    assert.equal(rx.driver.lastLen, 12 + f.length);
    const data = peek(rx, rxAddr.get(got)!, 12 + f.length).subarray(12);
    assert.deepEqual(data.subarray(0, 6), f.subarray(6, 12));
    assert.deepEqual(data.subarray(6, 12), f.subarray(0, 6));
    assert.deepEqual(data.subarray(12), f.subarray(12));
  }
});

test('packed: batched completions become visible only when the first entry\'s flags are written (last)', () => {
  const rig = makePackedRig({ size: 8 });
  const b = rig.bufBase;
  for (let i = 0; i < 4; i++) {
    poke(rig, b + i * 0x100, HDR);
    poke(rig, b + i * 0x100 + 12, frame(60, i));
    rig.driver.addBuffer(b + i * 0x100, 72, false);
  }
  rig.driver.publish();
  const q = rig.queue;
  assert.equal(q.availableCount(), 4);
  const sg = new ScatterList(8);
  for (let i = 0; i < 4; i++) {
    sg.count = 0;
    assert.equal(q.walkChain(0, sg), WALK_OK);
    q.pushUsed(q.chainHead, 0);
    q.consume(1);
  }
  assert.equal(rig.driver.usedCount(), 0, 'staged entries are invisible');
  assert.equal(q.flushUsed(), 4);
  assert.equal(rig.driver.usedCount(), 4);
});

test('packed: a run shows whole at the flush, whether it starts a batch or follows a staged head', () => {
  const rig = makePackedRig({ size: 16 });
  const b = rig.bufBase;
  const ids: number[] = [];
  for (let i = 0; i < 8; i++) ids.push(rig.driver.addBuffer(b + i * 0x100, 0x100, true));
  rig.driver.publish();
  const q = rig.queue;
  const run = new BufferRun(8);
  // A run that starts a batch: its first descriptor is the head, so nothing shows before the flush.
  assert.equal(q.reserveRun(3, ACCESS_WRITE, 12, run), 3);
  for (let j = 0; j < 3; j++) run.used[j] = 12 + 60 + j;
  q.completeRun(run, 3);
  assert.equal(rig.driver.usedCount(), 0, 'invisible before flushUsed');
  assert.equal(q.flushUsed(), 3);
  assert.equal(rig.driver.usedCount(), 3, 'the whole run at once');
  for (let j = 0; j < 3; j++) {
    assert.equal(rig.driver.popUsed(), ids[j]);
    assert.equal(rig.driver.lastLen, 12 + 60 + j);
  }
  // One chain completed alone heads a batch; a run after it stays behind that head.
  assert.equal(q.availableCount(), 5);
  const sg = new ScatterList(8);
  assert.equal(q.walkChain(0, sg), WALK_OK);
  q.pushUsed(q.chainHead, 12);
  q.consume(1);
  assert.equal(q.reserveRun(2, ACCESS_WRITE, 12, run), 2);
  run.used[0] = run.used[1] = 80;
  q.completeRun(run, 2);
  assert.equal(rig.driver.usedCount(), 0, 'behind the staged head: invisible');
  assert.equal(q.flushUsed(), 3);
  assert.deepEqual([rig.driver.popUsed(), rig.driver.popUsed(), rig.driver.popUsed()], [ids[3], ids[4], ids[5]]);
  assert.equal(q.flushUsed(), 0);
  // A run that wraps the ring (positions 6..15, then 0..5): the head before the wrap, one flush.
  for (let i = 0; i < 14; i++) ids.push(rig.driver.addBuffer(b + (i % 8) * 0x100, 0x100, true));
  rig.driver.publish();
  assert.equal(q.availableCount(), 16);
  const wide = new BufferRun(16);
  const k = q.reserveRun(16, ACCESS_WRITE, 12, wide);
  assert.equal(k, 16, 'one run across the wrap');
  for (let j = 0; j < k; j++) wide.used[j] = 64 + j;
  q.completeRun(wide, k);
  assert.equal(rig.driver.usedCount(), 0);
  assert.equal(q.flushUsed(), k);
  for (let j = 0; j < k; j++) {
    assert.equal(rig.driver.popUsed(), ids[6 + j], `entry ${j} in order`);
    assert.equal(rig.driver.lastLen, 64 + j);
  }
});

test('packed event suppression: driver ENABLE / DISABLE / DESC (EVENT_IDX) decide interrupts', () => {
  for (const eventIdx of [false, true]) {
    const rig = makePackedRig({ size: 8, eventIdx });
    const txq = netq(rig.queue);
    const cap = new Capture();
    const post = (n: number): void => {
      for (let i = 0; i < n; i++) {
        const a = rig.bufBase + i * 0x100;
        poke(rig, a, HDR);
        rig.driver.addBuffer(a, 80, false);
      }
      rig.driver.publish();
    };
    const burst = (): boolean => {
      transmitBurst(txq, cap, 32);
      while (rig.driver.popUsed() >= 0);
      return txq.takeInterrupt();
    };
    post(2);
    assert.equal(burst(), true, 'ENABLE interrupts');
    rig.driver.setNoInterrupt(true);
    post(2);
    assert.equal(burst(), false, 'DISABLE suppresses');
    if (eventIdx) {
      // Used position is now 4 (wrap 1). off_wrap names the entry whose write interrupts.
      rig.driver.setUsedEvent(6, 1);
      post(1);
      assert.equal(burst(), false, 'entry 4 is not the event entry 6');
      post(2);
      assert.equal(burst(), true, 'entries 5..6 include it');
      // Event in the next lap: entry 1 with wrap 0.
      rig.driver.setUsedEvent(1, 0);
      post(1);
      assert.equal(burst(), false, 'entry 7 (this lap)');
      post(1);
      assert.equal(burst(), false, 'entry 0 of the next lap');
      post(1);
      assert.equal(burst(), true, 'entry 1 of the next lap');
    } else {
      rig.driver.setNoInterrupt(false);
      post(1);
      assert.equal(burst(), true);
    }
  }
});

test('packed kick suppression: DISABLE while polling; ENABLE (or DESC at the frontier with EVENT_IDX) and a recheck', () => {
  for (const eventIdx of [false, true]) {
    const rig = makePackedRig({ size: 8, eventIdx });
    const q = rig.queue;
    q.disableNotifications();
    assert.equal(rig.driver.deviceEvent()[1], VRING_PACKED_EVENT_FLAG_DISABLE);
    rig.driver.addBuffer(rig.bufBase, 80, false);
    rig.driver.publish();
    assert.equal(rig.driver.needsKick(), false);
    assert.equal(q.enableNotifications(), 1, 'recheck sees the buffer added while kicks were off');
    const [offWrap, flags] = rig.driver.deviceEvent();
    if (eventIdx) {
      assert.equal(flags, VRING_PACKED_EVENT_FLAG_DESC);
      assert.equal(offWrap, 1 | 1 << 15, 'event at the first position not seen yet');
    } else {
      assert.equal(flags, VRING_PACKED_EVENT_FLAG_ENABLE);
    }
    rig.driver.addBuffer(rig.bufBase, 80, false);
    rig.driver.publish();
    assert.equal(rig.driver.needsKick(), true);
  }
});

test('packed ring base: stop mid-lap and resume on a new queue from vringBase(); DPDK-style 0x8000 base', () => {
  const rig = makePackedRig({ size: 5 });
  const txq = netq(rig.queue);
  const cap = new Capture();
  for (let i = 0; i < 7; i++) {
    const a = rig.bufBase + i * 0x100;
    poke(rig, a, HDR);
    poke(rig, a + 12, frame(60, i));
    rig.driver.addChain([a, a + 12], [12, 60], 2);
    rig.driver.publish();
    assert.equal(transmitBurst(txq, cap, 32), 1);
    assert.ok(rig.driver.popUsed() >= 0);
    if (i === 3) {
      const base = rig.queue.vringBase();
      assert.equal(base & 0xffff, 3 | 0 << 15, 'position 8 mod 5 = 3 in the second lap (wrap 0)');
      const q2 = new PackedQueue();
      const lay = layoutPacked(5, GPA);
      const toUva = (g: number): number => g - GPA + UVA;
      assert.equal(q2.configure({
        size: 5, descAddr: toUva(lay.descAddr), availAddr: toUva(lay.driverAddr), usedAddr: toUva(lay.deviceAddr),
        ringSpace: new UserAddressSpace(rig.memory), dataSpace: new GuestPhysicalSpace(rig.memory), eventIdx: false, lastAvailIdx: base & 0xffff,
      }), RING_OK);
      assert.equal(q2.vringBase(), base, 'upper half 0 means used = avail');
      Object.assign(txq, { queue: q2 });
    }
  }
  assert.equal(cap.frames.length, 7);
  for (let i = 0; i < 7; i++) assert.deepEqual(cap.frames[i], frame(60, i));
});

function brokenBy(setup: (rig: ReturnType<typeof makePackedRig>) => void, rx = false): string {
  const rig = makePackedRig({ size: 8 });
  setup(rig);
  const q = rig.queue;
  const n = q.availableCount();
  if (!q.broken && n > 0) {
    if (rx) {
      const src = new ScatterList(1);
      const f = frame(60);
      src.push(f, 0, 60);
      receiveFrame(netq(q), src, 0, 60, false);
    } else {
      transmitBurst(netq(q), new Capture(), 32);
    }
  }
  assert.equal(q.broken, true, 'queue should be broken');
  assert.equal(rig.driver.usedCount(), 0, 'nothing completed');
  return q.brokenReason;
}

test('packed errors: hostile rings break the queue with the field named, never touching outside memory', () => {
  const af = (rig: ReturnType<typeof makePackedRig>): number => rig.driver.availFlags();
  // Every descriptor has NEXT: a chain longer than the ring.
  assert.match(brokenBy((rig) => {
    for (let i = 0; i < 8; i++) rig.driver.writeDesc(i, rig.bufBase, 64, 0, af(rig) | VRING_DESC_F_NEXT);
  }), /desc\[0\] has NEXT set on 8 descriptors/);
  // Buffer outside guest memory.
  assert.match(brokenBy((rig) => rig.driver.writeDesc(0, 0x10, 64, 0, af(rig))), /desc\[0\]\.addr=0x10 \(len=64\) is outside guest memory/);
  // Length running past memory.
  assert.match(brokenBy((rig) => rig.driver.writeDesc(0, GPA + 0xfff00, 0x1000, 0, af(rig))), /desc\[0\]\.len=4096 overflows guest memory/);
  // Address beyond 2^53.
  assert.match(brokenBy((rig) => {
    rig.driver.writeDesc(0, 0, 64, 0, af(rig));
    rig.driver.writeDescAddrRaw(0, 0xffffffff, 0);
  }), /desc\[0\]\.addr=0xffffffff00000000 is beyond 2\^53/);
  // Readable after writable (RX chain), and writable in TX.
  assert.match(brokenBy((rig) => {
    rig.driver.writeDesc(1, rig.bufBase + 0x100, 64, 3, af(rig));
    rig.driver.writeDesc(0, rig.bufBase, 64, 3, af(rig) | VRING_DESC_F_WRITE | VRING_DESC_F_NEXT);
  }, true), /desc\[1\] is device-readable but follows a device-writable descriptor/);
  assert.match(brokenBy((rig) => rig.driver.writeDesc(0, rig.bufBase, 64, 5, af(rig) | VRING_DESC_F_WRITE)), /TX chain at head 5 has 64 device-writable bytes/);
  // Indirect: bad length, INDIRECT with NEXT, table outside memory.
  assert.match(brokenBy((rig) => rig.driver.writeDesc(0, rig.bufBase, 20, 0, af(rig) | VRING_DESC_F_INDIRECT)), /desc\[0\] is INDIRECT with len=20/);
  assert.match(brokenBy((rig) => {
    rig.driver.writeDesc(1, rig.bufBase, 64, 0, af(rig));
    rig.driver.writeDesc(0, rig.bufBase, 32, 0, af(rig) | VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT);
  }), /desc\[0\] has both INDIRECT and NEXT set/);
  assert.match(brokenBy((rig) => rig.driver.writeDesc(0, 0x1000, 32, 0, af(rig) | VRING_DESC_F_INDIRECT)), /INDIRECT table\) is outside guest memory/);
  assert.match(brokenBy((rig) => rig.driver.writeDesc(0, rig.bufBase, 16 * 9, 0, af(rig) | VRING_DESC_F_INDIRECT)), /INDIRECT table has 9 descriptors, more than queue size 8/);
});

test('packed errors: a driver rewriting an available chain is caught; walking beyond the available chains is refused', () => {
  const rig = makePackedRig({ size: 8 });
  const a = rig.bufBase;
  rig.driver.addChain([a, a + 0x100], [12, 64], 2);
  rig.driver.publish();
  const q = rig.queue;
  assert.equal(q.availableCount(), 1);
  const sg = new ScatterList(8);
  assert.equal(q.walkChain(1, sg), WALK_BROKEN);
  assert.match(q.brokenReason, /walk of chain 1 ahead, but only 1 are available/);

  const rig2 = makePackedRig({ size: 8 });
  rig2.driver.addChain([a, a + 0x100], [12, 64], 2);
  rig2.driver.publish();
  assert.equal(rig2.queue.availableCount(), 1);
  const [, , id, flags] = rig2.driver.readDesc(0);
  rig2.driver.writeDesc(0, a, 12, id, flags & ~VRING_DESC_F_NEXT);
  assert.equal(rig2.queue.walkChain(0, sg), WALK_BROKEN);
  assert.match(rig2.queue.brokenReason, /desc\[0\]\.flags NEXT changed while the descriptor was available/);
});

test('packed configure: sizes that are not a power of two work; bad size, misaligned areas, out-of-range base fault', () => {
  const { memory } = makeMemory();
  const rs = new UserAddressSpace(memory);
  const ds = new GuestPhysicalSpace(memory);
  const cfg = { size: 5, descAddr: UVA, availAddr: UVA + 80, usedAddr: UVA + 84, ringSpace: rs, dataSpace: ds, eventIdx: false, lastAvailIdx: 0x8000 };
  const q = new PackedQueue();
  assert.equal(q.configure(cfg), RING_OK);
  assert.equal(q.configure({ ...cfg, size: 0 }), RING_FAULT);
  assert.match(q.error, /queue size 0 is not in 1\.\.32768/);
  assert.equal(q.configure({ ...cfg, descAddr: UVA + 8 }), RING_FAULT);
  assert.match(q.error, /desc ring address .* is not 16-byte aligned/);
  assert.equal(q.configure({ ...cfg, usedAddr: UVA + 86 }), RING_FAULT);
  assert.match(q.error, /device event area address .* is not 4-byte aligned/);
  assert.equal(q.configure({ ...cfg, lastAvailIdx: 0x8005 }), RING_FAULT);
  assert.match(q.error, /avail index 5 is not below queue size 5/);
  assert.equal(q.configure({ ...cfg, descAddr: 0x1000 }), RING_FAULT);
  assert.match(q.error, /desc ring at 0x1000: address 0x1000 outside guest memory/);
});

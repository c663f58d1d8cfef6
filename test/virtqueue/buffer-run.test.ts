// receiveBurst's run path (VirtQueue.reserveRun / completeRun): a run ends where a buffer
// is not one plain descriptor inside the same region, the general path takes that buffer,
// and the next run goes on; every frame lands exact, in order, and nothing outside.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPA, UVA, MEM_SIZE, StubIotlb, makeMemory, makeRig, makePackedRig, netq, peek, frame } from './helpers.js';
import { ACCESS_WRITE } from '../../src/memory/address-space.js';
import { receiveBurst, NetCounter } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { BufferRun } from '../../src/virtqueue/buffer-run.js';
import { wideOf } from '../../src/memory/wide-view.js';
import { getStrategy } from '../../src/iotlb/registry.js';

function framesOf(list: Uint8Array[]): ScatterList {
  const sg = new ScatterList(list.length);
  for (const f of list) {
    const store = new Uint8Array(f.length + 8);
    store.set(f);
    sg.push(store, 0, f.length, wideOf(store));
  }
  return sg;
}

const rigOf = (kind: 'split' | 'packed', memory = makeMemory()) => (kind === 'split' ? makeRig({ memory }) : makePackedRig({ memory }));

for (const kind of ['split', 'packed'] as const) {
  test(`RX burst (${kind}): runs split at a second region and at a chained buffer, every frame exact and in order`, () => {
    const mem = makeMemory();
    const gpa2 = GPA + MEM_SIZE;
    const bytes2 = new Uint8Array(0x10000);
    mem.memory.addRegion({ guestAddr: gpa2, userAddr: UVA + MEM_SIZE, size: bytes2.length, mmapOffset: 0, bytes: bytes2 });
    const rig = rigOf(kind, mem);
    const rxq = netq(rig.queue, 12, false);
    const b = rig.bufBase;
    rig.bytes.fill(0xcc, b - GPA - 16, b - GPA + 0x8000);
    bytes2.fill(0xcc);
    // Where each frame must land: [region bytes, offset of the header, heads in used order].
    const ids: number[] = [];
    const at: Array<[Uint8Array, number]> = [];
    const plain = (gpa: number, len: number, region: Uint8Array, base: number): void => {
      ids.push(rig.driver.addBuffer(gpa, len, true));
      at.push([region, gpa - base]);
    };
    plain(b, 256, rig.bytes, GPA);
    plain(b + 0x800, 256, rig.bytes, GPA);
    plain(gpa2 + 0x100, 256, bytes2, gpa2); // another region: the run stops before it
    plain(gpa2 + 0x400, 256, bytes2, gpa2); // and a new run starts here
    ids.push(rig.driver.addChain([b + 0x1000, b + 0x1800], [12, 244], 0)); // header and frame apart
    at.push([rig.bytes, -1]);
    plain(b + 0x2000 + 4, 256, rig.bytes, GPA); // 4-byte aligned only
    plain(b + 0x3000, 256, rig.bytes, GPA);
    rig.driver.publish();

    const list = ids.map((_, i) => frame(60 + i * 7, i + 1));
    assert.equal(receiveBurst(rxq, framesOf(list)), list.length);
    const header = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0);
    for (let i = 0; i < list.length; i++) {
      const f = list[i];
      assert.equal(rig.driver.popUsed(), ids[i], `used entry ${i} in order`);
      assert.equal(rig.driver.lastLen, 12 + f.length);
      const [region, off] = at[i];
      if (off < 0) {
        assert.deepEqual(peek(rig, b + 0x1000, 12), header);
        assert.deepEqual(peek(rig, b + 0x1800, f.length), f, `frame ${i}`);
        continue;
      }
      assert.deepEqual(region.slice(off, off + 12), header, `header ${i}`);
      assert.deepEqual(region.slice(off + 12, off + 12 + f.length), f, `frame ${i}`);
      assert.equal(region[off + 12 + f.length], 0xcc, `nothing past frame ${i}`);
      assert.equal(region[off - 1], 0xcc, `nothing before buffer ${i}`);
    }
    assert.equal(rig.driver.popUsed(), -1);
    assert.equal(rxq.counters[NetCounter.packets], list.length);
    assert.equal(rxq.counters[NetCounter.bytes], list.reduce((s, f) => s + f.length, 0));
  });

  test(`RX burst (${kind}): buffers laid out as DPDK's mbufs (header at 4 mod 8, frame 8-byte aligned) take the word-copy path, exact to the byte`, () => {
    const rig = rigOf(kind);
    const rxq = netq(rig.queue, 12, false);
    const b = rig.bufBase;
    rig.bytes.fill(0xcc, b - GPA, b - GPA + 0x4000);
    const lens = [64, 72, 61, 16, 152, 160, 64];
    const gpas = lens.map((_, i) => b + i * 0x400 + (i === 6 ? 0 : 4)); // the last: header 8-byte aligned instead
    const ids = gpas.map((g) => rig.driver.addBuffer(g, 256, true));
    rig.driver.publish();
    const list = lens.map((n, i) => frame(n, i + 1));
    assert.equal(receiveBurst(rxq, framesOf(list)), list.length);
    const header = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0);
    for (let i = 0; i < list.length; i++) {
      const off = gpas[i] - GPA;
      assert.equal(rig.driver.popUsed(), ids[i], `used entry ${i} in order`);
      assert.equal(rig.driver.lastLen, 12 + lens[i]);
      assert.deepEqual(rig.bytes.slice(off, off + 12), header, `header ${i}`);
      assert.deepEqual(rig.bytes.slice(off + 12, off + 12 + lens[i]), list[i], `frame ${i}`);
      assert.equal(rig.bytes[off + 12 + lens[i]], 0xcc, `nothing past frame ${i}`);
      assert.equal(rig.bytes[off - 1], 0xcc, `nothing before buffer ${i}`);
    }
  });

  test(`RX burst (${kind}): a buffer running past guest memory breaks the queue after the frames before it, unwritten`, () => {
    const rig = rigOf(kind);
    const rxq = netq(rig.queue, 12, false);
    const first = rig.driver.addBuffer(rig.bufBase, 256, true);
    const second = rig.driver.addBuffer(rig.bufBase + 0x800, 256, true);
    const end = GPA + MEM_SIZE;
    rig.bytes.fill(0xcc, end - 64 - GPA);
    rig.driver.addBuffer(end - 64, 256, true); // 64 bytes inside, 192 outside
    rig.driver.addBuffer(rig.bufBase + 0x1000, 256, true);
    rig.driver.publish();
    const list = [frame(60, 1), frame(60, 2), frame(60, 3), frame(60, 4)];
    assert.equal(receiveBurst(rxq, framesOf(list)), 2);
    assert.ok(rig.queue.broken, 'queue broken');
    assert.match(rig.queue.brokenReason, /0x[0-9a-f]+/);
    assert.ok(rig.bytes.subarray(end - 64 - GPA).every((x) => x === 0xcc), 'nothing written into the straddling buffer');
    assert.equal(rig.driver.popUsed(), first);
    assert.equal(rig.driver.popUsed(), second);
    assert.equal(rig.driver.popUsed(), -1);
  });
}

test('reserveRun: through an IOTLB without a span, nothing and no lookup spent; without an IOTLB, the region', () => {
  const tlb = new StubIotlb(); // hands out no spans
  const withTlb = makeRig({ iotlb: tlb });
  tlb.insert({ iova: 0x1_0001_0000, size: 0x10000, uaddr: UVA + 0x10000, perm: ACCESS_WRITE });
  withTlb.driver.addBuffer(0x1_0001_0000, 256, true);
  withTlb.driver.publish();
  const run = new BufferRun(8);
  const lookups = tlb.stats.lookups;
  assert.equal(withTlb.queue.reserveRun(8, ACCESS_WRITE, 76, run), 0);
  assert.equal(tlb.stats.lookups, lookups, 'no lookup spent');

  const plain = makeRig();
  for (let i = 0; i < 3; i++) plain.driver.addBuffer(plain.bufBase + i * 0x800, i === 2 ? 64 : 256, true);
  plain.driver.publish();
  assert.equal(plain.queue.reserveRun(8, ACCESS_WRITE, 76, run), 2, 'stops at the buffer shorter than minLen');
  assert.deepEqual([...run.offsets.subarray(0, 2)], [plain.bufBase - GPA, plain.bufBase + 0x800 - GPA]);
  assert.equal(run.bytes, plain.bytes);
  assert.equal(plain.queue.lastAvailIdx, 0, 'nothing consumed');
});

for (const kind of ['split', 'packed'] as const) {
  test(`RX burst (${kind}) through an IOTLB: runs inside the span a lookup vouched for, two pieces at an IOVA-only seam, none after an INVALIDATE`, () => {
    const tlb = getStrategy('interval').create({});
    const rig = kind === 'split' ? makeRig({ iotlb: tlb }) : makePackedRig({ iotlb: tlb });
    const rxq = netq(rig.queue, 12, false);
    // Two entries contiguous in IOVA, not in host memory: buffers 0-3 in the first, 4-7 in the second.
    const B = 0x2_0000_0000;
    tlb.insert({ iova: B, size: 0x2000, uaddr: UVA + 0x10000, perm: ACCESS_WRITE });
    tlb.insert({ iova: B + 0x2000, size: 0x2000, uaddr: UVA + 0x30000, perm: ACCESS_WRITE });
    const hostOf = (j: number): number => (j < 4 ? 0x10000 + j * 0x800 : 0x30000 + (j - 4) * 0x800);
    rig.bytes.fill(0xcc);
    const ids = Array.from({ length: 8 }, (_, j) => rig.driver.addBuffer(B + j * 0x800, 0x800, true));
    rig.driver.publish();
    const run = new BufferRun(8);
    assert.equal(rig.queue.reserveRun(8, ACCESS_WRITE, 76, run), 0, 'no span kept yet: no run (and no lookup)');

    const list = ids.map((_, j) => frame(60 + j, j + 1));
    const before = { ...tlb.stats };
    assert.equal(receiveBurst(rxq, framesOf(list.slice(0, 1))), 1, 'frame by frame: the lookup keeps the first entry as span');
    assert.equal(rig.queue.reserveRun(8, ACCESS_WRITE, 76, run), 3, 'a run of the three buffers left in that entry, stopping at the seam');
    assert.deepEqual([...run.offsets.subarray(0, 3)], [1, 2, 3].map(hostOf));
    assert.equal(receiveBurst(rxq, framesOf(list.slice(1))), 7);
    for (let j = 0; j < 8; j++) {
      assert.equal(rig.driver.popUsed(), ids[j], `used ${j}`);
      const o = hostOf(j);
      assert.deepEqual(rig.bytes.slice(o + 12, o + 12 + list[j].length), list[j], `frame ${j} at its own host bytes`);
      assert.equal(rig.bytes[o + 12 + list[j].length], 0xcc, `nothing past frame ${j}`);
    }
    assert.equal(tlb.stats.lookups - before.lookups, 8, 'a lookup per buffer used (a reservation not completed counts nothing)');
    assert.equal(tlb.stats.misses - before.misses, 0);
    assert.equal(tlb.stats.hits - before.hits, tlb.stats.lookups - before.lookups, 'every translation a hit');

    // INVALIDATE the second entry, the span kept last: no window any more, the buffer misses, nothing is written.
    tlb.invalidate(B + 0x2000, 0x2000);
    const again = rig.driver.addBuffer(B + 0x2800, 0x800, true);
    rig.driver.publish();
    rig.bytes.fill(0xcc, 0x30000, 0x32000);
    assert.equal(rig.queue.reserveRun(8, ACCESS_WRITE, 76, run), 0, 'no window after the INVALIDATE');
    assert.equal(receiveBurst(rxq, framesOf([frame(60, 9)])), 0);
    assert.ok(rig.queue.missPending, 'the general path reports the miss');
    assert.ok(rig.bytes.subarray(0x30000, 0x32000).every((x) => x === 0xcc), 'nothing written through the stale translation');
    assert.equal(rig.driver.popUsed(), -1, `buffer ${again} not used`);
  });
}

for (const kind of ['split', 'packed'] as const) {
  test(`RX burst (${kind}): runs across many laps of a small ring (wrap counters, 16-bit indices), every frame exact`, () => {
    const rig = kind === 'split' ? makeRig({ size: 8, startIdx: 65531 }) : makePackedRig({ size: 8 });
    const rxq = netq(rig.queue, 12, false);
    let seed = 1;
    for (let lap = 0; lap < 12; lap++) {
      const n = 1 + (lap % 7); // 1..7 buffers: runs start and end all around the ring
      const ids: number[] = [];
      for (let i = 0; i < n; i++) ids.push(rig.driver.addBuffer(rig.bufBase + i * 0x800, 256, true));
      rig.driver.publish();
      const list = ids.map(() => frame(60 + (seed % 5), seed++));
      assert.equal(receiveBurst(rxq, framesOf(list)), n, `lap ${lap}`);
      for (let i = 0; i < n; i++) {
        assert.equal(rig.driver.popUsed(), ids[i], `lap ${lap} used ${i}`);
        assert.equal(rig.driver.lastLen, 12 + list[i].length);
        assert.deepEqual(peek(rig, rig.bufBase + i * 0x800 + 12, list[i].length), list[i], `lap ${lap} frame ${i}`);
      }
      assert.equal(rig.driver.popUsed(), -1);
    }
    assert.ok(!rig.queue.broken, rig.queue.brokenReason);
  });
}

for (const kind of ['split', 'packed'] as const) {
  test(`RX burst (${kind}): a run over chains the general path already looked at, and on past them`, () => {
    const rig = rigOf(kind);
    const rxq = netq(rig.queue, 12, false);
    const b = rig.bufBase;
    const plain = (i: number): number => rig.driver.addBuffer(b + i * 0x800, 256, true);
    const ids = [plain(0), rig.driver.addChain([b + 0x800, b + 0x1000], [12, 244], 0), plain(3), plain(4), plain(5)];
    rig.driver.publish();
    let seed = 1;
    const sent: Uint8Array[] = [];
    const burst = (n: number): number => {
      const list = Array.from({ length: n }, () => frame(60, seed++));
      sent.push(...list);
      return receiveBurst(rxq, framesOf(list));
    };
    // A run of one, then the chained buffer frame by frame: the ring now knows of the next three.
    assert.equal(burst(2), 2);
    ids.push(plain(6), plain(7));
    rig.driver.publish();
    assert.equal(burst(1), 1, 'one of the three known chains');
    assert.equal(burst(4), 4, 'the two other known chains and two past them, in one run');
    const at = [0, -1, 3, 4, 5, 6, 7];
    for (let i = 0; i < ids.length; i++) {
      assert.equal(rig.driver.popUsed(), ids[i], `used ${i}`);
      const where = at[i] < 0 ? b + 0x1000 : b + at[i] * 0x800 + 12;
      assert.deepEqual(peek(rig, where, 60), sent[i], `frame ${i}`);
    }
    assert.equal(rig.driver.popUsed(), -1);
    assert.ok(!rig.queue.broken, rig.queue.brokenReason);
  });
}

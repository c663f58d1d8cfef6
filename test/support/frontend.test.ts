// The test front-end itself: allocator, IOMMU table, frames, and a smoke run against serve without IOMMU.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EmulatedIommu, PAGE_2M, PAGE_4K } from './frontend/iommu.js';
import { checkLoopedFrame, writeFrame } from './frontend/frames.js';
import { assertClean, loopFrames, startPair, stopPair, type Pair } from '../iotlb-e2e/helpers.js';

describe('EmulatedIommu', () => {
  it('allocates top-down, size-aligned, and reuses freed IOVAs first (Linux rcache)', () => {
    const m = new EmulatedIommu(PAGE_4K);
    const a = m.allocIova(1);
    const b = m.allocIova(1);
    const c = m.allocIova(3); // rounded to 4 pages, 16 KiB aligned
    assert.equal(a, 2 ** 32 - PAGE_4K);
    assert.equal(b, a - PAGE_4K);
    assert.equal(c % (4 * PAGE_4K), 0);
    assert.ok(c < b);
    m.freeIova(b, 1);
    assert.equal(m.allocIova(1), b);
  });

  it('translates pages with their permission and forgets unmapped ones', () => {
    const m = new EmulatedIommu(PAGE_2M);
    m.map(0x40000000, 0x200000, 2 * PAGE_2M, 1);
    const t = { pageIova: 0, pageGpa: 0, perm: 0 };
    assert.ok(m.translate(0x40000000 + PAGE_2M + 5, t));
    assert.deepEqual(t, { pageIova: 0x40000000 + PAGE_2M, pageGpa: 0x400000, perm: 1 });
    assert.equal(m.unmap(0x40000000, 1), 1);
    assert.equal(m.translate(0x40000000, t), false);
    assert.equal(m.toGpa(0x40000000 + PAGE_2M + 7), 0x400007);
  });
});

describe('test frames', () => {
  it('a looped frame (MACs swapped) checks clean; a changed byte does not', () => {
    const b = new Uint8Array(200);
    writeFrame(b, 0, 77, 200);
    const swapped = b.slice();
    swapped.set(b.subarray(6, 12), 0);
    swapped.set(b.subarray(0, 6), 6);
    assert.equal(checkLoopedFrame(swapped, 0, 200, 77, 200), null);
    swapped[150] ^= 1;
    assert.match(checkLoopedFrame(swapped, 0, 200, 77, 200) ?? '', /payload byte 150/);
  });
});

describe('front-end against serve, no IOMMU', () => {
  let pair: Pair | undefined;
  after(async () => {
    await stopPair(pair);
  });

  it('negotiates like QEMU and loops 2000 frames back intact', async () => {
    pair = await startPair([], { iommu: 'off', slotSize: 1600 });
    const { fe } = pair;
    assert.deepEqual(fe.conn.sent.slice(0, 8), ['GET_FEATURES', 'GET_PROTOCOL_FEATURES', 'SET_PROTOCOL_FEATURES', 'SET_OWNER', 'SET_BACKEND_REQ_FD', 'SET_FEATURES', 'SET_MEM_TABLE', 'SET_VRING_NUM']);
    const r = await loopFrames(fe, 2000);
    assert.deepEqual(r.errors, []);
    assert.equal(r.received, 2000);
    assertClean(fe);
    const state = await pair.serve.state();
    assert.equal(state.iommu, false);
  });
});

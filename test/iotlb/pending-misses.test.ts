import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PendingMisses, DEFAULT_PENDING_CAPACITY } from '../../src/iotlb/pending-misses.js';
import { Access } from '../../src/iotlb/strategy.js';

const K4 = 0x1000;
const { Read: R, Write: W, ReadWrite: RW } = Access;

describe('PendingMisses', () => {
  it('sends a miss once per page', () => {
    const p = new PendingMisses();
    assert.equal(p.add(0x10000, R), true);
    assert.equal(p.add(0x10008, R), false);
    assert.equal(p.add(0x10fff, R), false);
    assert.equal(p.add(0x11000, R), true);
    assert.equal(p.size, 2);
    assert.ok(p.has(0x10800));
    assert.ok(!p.has(0x12000));
    assert.deepEqual(p.entries(), [{ iova: 0x10000, perm: R }, { iova: 0x11000, perm: R }]);
  });

  it('sends again for access bits not yet requested', () => {
    const p = new PendingMisses();
    assert.equal(p.add(0, R), true);
    assert.equal(p.add(8, W), true);
    assert.equal(p.add(16, RW), false);
    assert.ok(p.has(0, RW));
  });

  it('clears pages an update covers, and only the granted access', () => {
    const p = new PendingMisses();
    p.add(0, RW);
    p.add(K4, R);
    p.add(5 * K4, R);
    assert.equal(p.clearCovered(0, 2 * K4, R), 1);
    assert.ok(p.has(0, W));
    assert.ok(!p.has(0, R));
    assert.ok(!p.has(K4));
    assert.equal(p.clearCovered(0, K4, W), 1);
    assert.equal(p.size, 1);
    // an overlapping sub-page update clears the page (a still-missing address re-sends)
    assert.equal(p.clearCovered(5 * K4 + 100, 8), 1);
    assert.equal(p.size, 0);
    assert.equal(p.add(5 * K4, R), true);
  });

  it('handles huge and empty ranges', () => {
    const p = new PendingMisses();
    p.add(2 ** 52, R);
    p.add(0, R);
    assert.equal(p.clearCovered(0, 0), 0);
    assert.equal(p.clearCovered(K4, Number.MAX_SAFE_INTEGER), 1);
    assert.equal(p.clearCovered(0, 2 ** 64), 1);
    assert.equal(p.size, 0);
  });

  it('is bounded: the oldest pending page is dropped', () => {
    assert.equal(new PendingMisses().capacity, DEFAULT_PENDING_CAPACITY);
    const p = new PendingMisses(3);
    for (let i = 0; i < 5; i++) assert.equal(p.add(i * K4, R), true);
    assert.equal(p.size, 3);
    assert.equal(p.dropped, 2);
    assert.deepEqual(p.entries().map((e) => e.iova), [2 * K4, 3 * K4, 4 * K4]);
    assert.equal(p.add(0, R), true, 'a dropped miss is sent again');
    p.clear();
    assert.equal(p.size, 0);
  });
});

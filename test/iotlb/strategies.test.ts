import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Access, LOOKUP_DENIED, LOOKUP_MISS } from '../../src/iotlb/strategy.js';
import type { IotlbStrategy, LookupOut } from '../../src/iotlb/strategy.js';
import { getStrategy, strategies, strategyNames } from '../../src/iotlb/registry.js';
import { CoalescingStrategy } from '../../src/iotlb/strategies/coalescing.js';
import { DpdkStrategy, IOTLB_CACHE_SIZE } from '../../src/iotlb/strategies/dpdk.js';
import { LruStrategy } from '../../src/iotlb/strategies/lru.js';
import { IntervalStrategy } from '../../src/iotlb/strategies/interval.js';

const K4 = 0x1000;
const M2 = 0x200000;
const U = 0x7f00_0000_0000;
const { Read: R, Write: W, ReadWrite: RW } = Access;

function look(s: IotlbStrategy, iova: number, len: number, access: number = R): [number, number] {
  const out: LookupOut = { uaddr: -1, spanStart: 0, spanEnd: 0 };
  const r = s.lookup(iova, len, access, out);
  return [r, r > 0 ? out.uaddr : -1];
}

describe('registry', () => {
  it('lists every strategy once', () => {
    assert.deepEqual(strategyNames(), ['dpdk', 'lru', 'interval', 'coalescing']);
    assert.equal(getStrategy('coalescing').name, 'coalescing');
  });
  it('rejects an unknown name, listing the valid ones', () => {
    assert.throws(() => getStrategy('nope'), /unknown IOTLB strategy "nope".*dpdk, lru, interval, coalescing/);
  });
  it('creates instances named after their definition', () => {
    for (const def of strategies) assert.equal(def.create().name, def.name);
  });
});

for (const def of strategies) {
  describe(`strategy ${def.name}`, () => {
    it('misses on an empty cache and counts it', () => {
      const s = def.create();
      assert.deepEqual(look(s, 0x1000, 64), [LOOKUP_MISS, -1]);
      assert.equal(s.stats.lookups, 1);
      assert.equal(s.stats.misses, 1);
    });

    it('translates a hit at an offset and caps the length at len and at the entry end', () => {
      const s = def.create();
      s.insert({ iova: M2, size: M2, uaddr: U, perm: RW });
      assert.deepEqual(look(s, M2 + 100, 64), [64, U + 100]);
      assert.deepEqual(look(s, 2 * M2 - 10, 64), [10, U + M2 - 10]);
      assert.deepEqual(look(s, M2 - 1, 1), [LOOKUP_MISS, -1]);
      assert.deepEqual(look(s, 2 * M2, 1), [LOOKUP_MISS, -1]);
      assert.equal(s.stats.hits, 2);
      assert.equal(s.stats.misses, 2);
      assert.equal(s.stats.inserts, 1);
      assert.equal(s.stats.entries, 1);
    });

    it('stitches entries contiguous in both IOVA and uaddr', () => {
      const s = def.create();
      s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
      s.insert({ iova: K4, size: K4, uaddr: U + K4, perm: R });
      assert.deepEqual(look(s, K4 - 8, 64), [64, U + K4 - 8]);
      assert.deepEqual(look(s, 8, 3 * K4), [2 * K4 - 8, U + 8]);
    });

    it('keeps entries contiguous in IOVA but not in uaddr as two pieces', () => {
      const s = def.create();
      s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
      s.insert({ iova: K4, size: K4, uaddr: U + 5 * K4, perm: R });
      assert.deepEqual(look(s, K4 - 8, 64), [8, U + K4 - 8]);
      assert.deepEqual(look(s, K4, 64), [64, U + 5 * K4]);
    });

    it('denies an access the entry does not grant', () => {
      const s = def.create();
      s.insert({ iova: 0, size: M2, uaddr: U, perm: R });
      assert.deepEqual(look(s, 64, 64, W), [LOOKUP_DENIED, -1]);
      assert.deepEqual(look(s, 64, 64, RW), [LOOKUP_DENIED, -1]);
      assert.deepEqual(look(s, 64, 64, R), [64, U + 64]);
      assert.equal(s.stats.permissionFaults, 2);
    });

    it('stops a stitched hit at a neighbour lacking the access', () => {
      const s = def.create();
      s.insert({ iova: 0, size: K4, uaddr: U, perm: RW });
      s.insert({ iova: K4, size: K4, uaddr: U + K4, perm: R });
      assert.deepEqual(look(s, 0, 2 * K4, W), [K4, U]);
      assert.deepEqual(look(s, 0, 2 * K4, R), [2 * K4, U]);
    });

    it('lets the newest insert win where it overlaps', () => {
      const s = def.create();
      s.insert({ iova: 0, size: 4 * K4, uaddr: U, perm: R });
      s.insert({ iova: K4, size: K4, uaddr: 0x1000_0000, perm: W });
      assert.deepEqual(look(s, 0, 8 * K4), [K4, U]);
      assert.deepEqual(look(s, K4 + 4, 8, W), [8, 0x1000_0004]);
      assert.deepEqual(look(s, K4 + 4, 8, R), [LOOKUP_DENIED, -1]);
      assert.deepEqual(look(s, 2 * K4, 8 * K4), [2 * K4, U + 2 * K4]);
      s.insert({ iova: 0, size: 4 * K4, uaddr: 0x2000_0000, perm: RW });
      assert.deepEqual(look(s, 0, 8 * K4), [4 * K4, 0x2000_0000]);
      assert.equal(s.entries().length >= 1, true);
    });

    it('invalidates a middle piece and leaves both sides mapped', () => {
      const s = def.create();
      s.insert({ iova: 0, size: M2, uaddr: U, perm: RW });
      assert.equal(s.invalidate(K4, K4), 1);
      assert.deepEqual(look(s, 0, M2), [K4, U]);
      assert.deepEqual(look(s, K4, 1), [LOOKUP_MISS, -1]);
      assert.deepEqual(look(s, 2 * K4 - 1, 1), [LOOKUP_MISS, -1]);
      assert.deepEqual(look(s, 2 * K4, M2), [M2 - 2 * K4, U + 2 * K4]);
      assert.deepEqual(s.entries(), [
        { iova: 0, size: K4, uaddr: U, perm: RW },
        { iova: 2 * K4, size: M2 - 2 * K4, uaddr: U + 2 * K4, perm: RW },
      ]);
      assert.equal(s.stats.invalidations, 1);
    });

    it('invalidates everything with a huge size, and handles iova + size overflow', () => {
      const s = def.create();
      // uaddr gaps so that `coalescing` keeps eight entries too
      for (let i = 0; i < 8; i++) s.insert({ iova: i * M2, size: M2, uaddr: U + i * 2 * M2, perm: RW });
      s.insert({ iova: 2 ** 52, size: K4, uaddr: U, perm: R });
      assert.equal(s.invalidate(3 * M2 + K4, Number.MAX_SAFE_INTEGER), 6);
      assert.deepEqual(look(s, 2 ** 52, 1), [LOOKUP_MISS, -1]);
      assert.deepEqual(look(s, 3 * M2, 2 * K4), [K4, U + 6 * M2]);
      assert.equal(s.invalidate(0, 2 ** 64), 4);
      assert.deepEqual(s.entries(), []);
      assert.equal(s.stats.entries, 0);
      assert.equal(s.stats.peakEntries, 9);
    });

    it('ignores empty inserts and invalidates', () => {
      const s = def.create();
      s.insert({ iova: 0, size: 0, uaddr: U, perm: R });
      assert.deepEqual(s.entries(), []);
      s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
      assert.equal(s.invalidate(0, 0), 0);
      assert.deepEqual(look(s, 0, 1), [1, U]);
    });

    it('does not return a translation an invalidate removed, even right after a hit on it', () => {
      const s = def.create();
      s.insert({ iova: 0, size: M2, uaddr: U, perm: RW });
      assert.deepEqual(look(s, 100, 8), [8, U + 100]);
      s.invalidate(0, K4);
      assert.deepEqual(look(s, 100, 8), [LOOKUP_MISS, -1]);
      s.insert({ iova: 0, size: K4, uaddr: 0x5000, perm: RW });
      assert.deepEqual(look(s, 100, 8), [8, 0x5000 + 100]);
    });

    it('evicts at capacity, and only ever misses for it', () => {
      const s = def.create({ capacity: 4, seed: 1 });
      for (let i = 0; i < 10; i++) s.insert({ iova: i * 2 * K4, size: K4, uaddr: U + i * K4, perm: R });
      assert.equal(s.entries().length, 4);
      assert.equal(s.stats.entries, 4);
      assert.equal(s.stats.evictions, 6);
      assert.equal(s.stats.peakEntries, 4);
      for (let i = 0; i < 10; i++) {
        const [r, u] = look(s, i * 2 * K4 + 1, 4);
        if (r !== LOOKUP_MISS) assert.deepEqual([r, u], [4, U + i * K4 + 1]);
      }
      // The most recent insert always survives its own eviction round.
      assert.deepEqual(look(s, 18 * K4, 4), [4, U + 9 * K4]);
    });

    it('keeps the capacity bound when an invalidate splits an entry', () => {
      const s = def.create({ capacity: 2 });
      s.insert({ iova: 0, size: M2, uaddr: U, perm: R });
      s.insert({ iova: 4 * M2, size: M2, uaddr: U, perm: R });
      s.invalidate(K4, K4);
      assert.ok(s.entries().length <= 2);
    });

    it('clear() empties the cache', () => {
      const s = def.create();
      s.insert({ iova: 0, size: M2, uaddr: U, perm: R });
      look(s, 0, 1);
      s.clear();
      assert.deepEqual(look(s, 0, 1), [LOOKUP_MISS, -1]);
      assert.equal(s.stats.entries, 0);
    });

    it('keeps lookups = hits + misses + permissionFaults', () => {
      const s = def.create();
      s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
      look(s, 0, 1);
      look(s, K4, 1);
      look(s, 0, 1, W);
      const st = s.stats;
      assert.equal(st.lookups, 3);
      assert.equal(st.hits + st.misses + st.permissionFaults, st.lookups);
    });
  });
}

describe('coalescing specifics', () => {
  it('merges 256 contiguous 2 MiB updates into one range', () => {
    const s = new CoalescingStrategy();
    for (let i = 0; i < 256; i++) s.insert({ iova: i * M2, size: M2, uaddr: U + i * M2, perm: RW });
    assert.deepEqual(s.entries(), [{ iova: 0, size: 256 * M2, uaddr: U, perm: RW }]);
    assert.deepEqual(look(s, M2 - 64, 1500), [1500, U + M2 - 64]);
  });

  it('merges out of order and from both sides', () => {
    const s = new CoalescingStrategy();
    s.insert({ iova: 2 * K4, size: K4, uaddr: U + 2 * K4, perm: R });
    s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
    assert.equal(s.entries().length, 2);
    s.insert({ iova: K4, size: K4, uaddr: U + K4, perm: R });
    assert.deepEqual(s.entries(), [{ iova: 0, size: 3 * K4, uaddr: U, perm: R }]);
  });

  it('does not merge across a uaddr gap or a permission change', () => {
    const s = new CoalescingStrategy();
    s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
    s.insert({ iova: K4, size: K4, uaddr: U + 2 * K4, perm: R });
    s.insert({ iova: 2 * K4, size: K4, uaddr: U + 3 * K4, perm: RW });
    assert.equal(s.entries().length, 3);
  });

  it('splits a merged range on a partial invalidate', () => {
    const s = new CoalescingStrategy();
    for (let i = 0; i < 4; i++) s.insert({ iova: i * M2, size: M2, uaddr: U + i * M2, perm: RW });
    assert.equal(s.entries().length, 1);
    assert.equal(s.invalidate(M2 + K4, M2), 1);
    assert.deepEqual(s.entries(), [
      { iova: 0, size: M2 + K4, uaddr: U, perm: RW },
      { iova: 2 * M2 + K4, size: 2 * M2 - K4, uaddr: U + 2 * M2 + K4, perm: RW },
    ]);
    assert.deepEqual(look(s, M2, 2 * K4), [K4, U + M2]);
    assert.deepEqual(look(s, M2 + K4, 1), [LOOKUP_MISS, -1]);
    // Re-inserting the hole with the same mapping heals it back into one range.
    s.insert({ iova: M2 + K4, size: M2, uaddr: U + M2 + K4, perm: RW });
    assert.deepEqual(s.entries(), [{ iova: 0, size: 4 * M2, uaddr: U, perm: RW }]);
  });

  it('re-merges the remainder of an overwritten range when the mapping is identical', () => {
    const s = new CoalescingStrategy();
    s.insert({ iova: 0, size: 4 * K4, uaddr: U, perm: R });
    s.insert({ iova: K4, size: K4, uaddr: U + K4, perm: R });
    assert.deepEqual(s.entries(), [{ iova: 0, size: 4 * K4, uaddr: U, perm: R }]);
  });

  it('re-merging both sides of an overwrite leaves the neighbours below their own permissions', () => {
    // The property test's counterexample: re-merging [4K, 16K) removes a slot, which moves
    // the lower ranges up one; [0, 4K) once took the merged range's permission.
    const s = new CoalescingStrategy();
    s.insert({ iova: 0, size: 2 * M2, uaddr: U, perm: 0 });
    s.insert({ iova: 0, size: M2, uaddr: U, perm: RW });
    s.insert({ iova: 0, size: K4, uaddr: U, perm: 0 });
    s.insert({ iova: 4 * K4, size: K4, uaddr: U + 4 * K4, perm: 0 });
    s.insert({ iova: 2 * K4, size: K4, uaddr: U + 2 * K4, perm: RW });
    assert.deepEqual(s.entries(), [
      { iova: 0, size: K4, uaddr: U, perm: 0 },
      { iova: K4, size: 3 * K4, uaddr: U + K4, perm: RW },
      { iova: 4 * K4, size: K4, uaddr: U + 4 * K4, perm: 0 },
      { iova: 5 * K4, size: M2 - 5 * K4, uaddr: U + 5 * K4, perm: RW },
      { iova: M2, size: M2, uaddr: U + M2, perm: 0 },
    ]);
    assert.deepEqual(look(s, 0, 1), [LOOKUP_DENIED, -1]);
  });
});

describe('eviction policies', () => {
  it('dpdk defaults to 2048 entries and evicts at random, repeatably per seed', () => {
    assert.equal(new DpdkStrategy().capacity, IOTLB_CACHE_SIZE);
    const run = (seed: number): string => {
      const s = new DpdkStrategy({ capacity: 8, seed });
      for (let i = 0; i < 64; i++) s.insert({ iova: i * 2 * K4, size: K4, uaddr: U, perm: R });
      return JSON.stringify(s.entries());
    };
    assert.equal(run(7), run(7));
    assert.notEqual(run(7), run(8));
  });

  it('interval evicts the oldest insert', () => {
    const s = new IntervalStrategy({ capacity: 2 });
    s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
    s.insert({ iova: 2 * K4, size: K4, uaddr: U, perm: R });
    look(s, 0, 1);
    s.insert({ iova: 4 * K4, size: K4, uaddr: U, perm: R });
    assert.deepEqual(s.entries().map((e) => e.iova), [2 * K4, 4 * K4]);
  });

  it('lru evicts the least recently used', () => {
    const s = new LruStrategy({ capacity: 2 });
    s.insert({ iova: 0, size: K4, uaddr: U, perm: R });
    s.insert({ iova: 2 * K4, size: K4, uaddr: U, perm: R });
    look(s, 0, 1);
    s.insert({ iova: 4 * K4, size: K4, uaddr: U, perm: R });
    assert.deepEqual(s.entries().map((e) => e.iova), [0, 4 * K4]);
  });

  it('lru stays correct when cached page indices go stale', () => {
    const s = new LruStrategy({ maxPages: 2 });
    for (let i = 0; i < 8; i++) s.insert({ iova: i * K4, size: K4, uaddr: U + 16 * i * K4, perm: R });
    for (let i = 7; i >= 0; i--) assert.deepEqual(look(s, i * K4 + 1, 4), [4, U + 16 * i * K4 + 1]);
    s.invalidate(0, 3 * K4);
    for (let i = 0; i < 8; i++) {
      assert.deepEqual(look(s, i * K4 + 1, 4), i < 3 ? [LOOKUP_MISS, -1] : [4, U + 16 * i * K4 + 1]);
    }
  });
});

// IotlbAddressSpace keeps the last span a strategy hands out and answers inside it on its
// own, and as a run's window. Random update / invalidate / map / window sequences against
// every strategy and the reference model: a kept span must never answer for an IOVA an
// invalidate (or a later update) changed.
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { IotlbAddressSpace, MAP_FAULT, MAP_MISS, ACCESS_READ, ACCESS_WRITE } from '../../src/memory/address-space.js';
import { LOOKUP_DENIED, LOOKUP_MISS } from '../../src/iotlb/strategy.js';
import { strategies } from '../../src/iotlb/registry.js';
import { CoalescingStrategy } from '../../src/iotlb/strategies/coalescing.js';
import { ReferenceIotlb } from '../../src/iotlb/reference.js';

const K4 = 0x1000;
const U1 = 0x7f00_0000_0000;
const U2 = U1 + 0x100_0000; // a second region, not adjacent to the first
const REGION = 0x40_0000; // 4 MiB each
const NUM_RUNS = Number(process.env.FUZZ_RUNS ?? 150);

function twoRegions(): GuestMemory {
  const m = new GuestMemory();
  m.addRegion({ guestAddr: 0, userAddr: U1, size: REGION, mmapOffset: 0, bytes: new Uint8Array(REGION) });
  m.addRegion({ guestAddr: 0x1000_0000, userAddr: U2, size: REGION, mmapOffset: 0, bytes: new Uint8Array(REGION) });
  return m;
}

type Op =
  | { kind: 'update'; iova: number; pages: number; region: number; page: number; perm: number }
  | { kind: 'invalidate'; iova: number; pages: number }
  | { kind: 'map'; iova: number; len: number; access: number }
  | { kind: 'window'; iova: number; len: number; access: number };

const SPAN = 16 * K4; // IOVAs in [0, 64 KiB): overlaps, merges, splits and stale spans are frequent
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('update' as const), iova: fc.integer({ min: 0, max: 15 }).map((p) => p * K4), pages: fc.integer({ min: 1, max: 6 }),
    region: fc.integer({ min: 0, max: 1 }), page: fc.integer({ min: 0, max: 1000 }), perm: fc.integer({ min: 1, max: 3 }) }),
  fc.record({ kind: fc.constant('invalidate' as const), iova: fc.integer({ min: 0, max: 15 }).map((p) => p * K4), pages: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('map' as const), iova: fc.integer({ min: 0, max: SPAN - 1 }), len: fc.integer({ min: 1, max: 3 * K4 }), access: fc.constantFrom(ACCESS_READ, ACCESS_WRITE, ACCESS_READ | ACCESS_WRITE) }),
  fc.record({ kind: fc.constant('map' as const), iova: fc.integer({ min: 0, max: SPAN - 1 }), len: fc.integer({ min: 1, max: 64 }), access: fc.constantFrom(ACCESS_READ, ACCESS_WRITE) }),
  fc.record({ kind: fc.constant('window' as const), iova: fc.integer({ min: 0, max: SPAN - 1 }), len: fc.integer({ min: 1, max: 2 * K4 }), access: fc.constantFrom(ACCESS_READ, ACCESS_WRITE) }),
);

/**
 * A window the space vouched for (a run's translations without lookups) must be exactly
 * what the reference maps, at both of its ends and at the asked address: same region,
 * same offset, the access granted. Checking the ends checks all of it: a window is one
 * linear piece of one region.
 */
function checkWindow(space: IotlbAddressSpace, ref: ReferenceIotlb, memory: GuestMemory, o: { iova: number; len: number; access: number }): void {
  const what = `window(0x${o.iova.toString(16)}, ${o.len}, ${o.access}) = [0x${space.windowStart.toString(16)}, 0x${space.windowEnd.toString(16)})`;
  assert.ok(space.windowStart <= o.iova && o.iova + o.len <= space.windowEnd, `${what}: does not hold the buffer`);
  assert.equal(space.offset, o.iova - space.windowBase, `${what}: offset is not the window's`);
  for (const a of [space.windowStart, o.iova, o.iova + o.len - 1, space.windowEnd - 1]) {
    const want = ref.lookup(a, 1, o.access);
    assert.ok(want.result >= 1, `${what}: the reference does not map 0x${a.toString(16)} for ${o.access} (result ${want.result})`);
    const region = memory.findUser(want.uaddr);
    assert.equal(space.bytes, region?.bytes, `${what}: 0x${a.toString(16)} is in another region`);
    assert.equal(a - space.windowBase, want.uaddr - region!.userAddr, `${what}: 0x${a.toString(16)} at the wrong offset`);
  }
}

describe('IotlbAddressSpace against the reference model, every strategy', () => {
  for (const def of strategies) {
    it(`${def.name}: maps exactly what the reference maps, never through a stale span or window`, () => {
      fc.assert(fc.property(fc.array(op, { minLength: 1, maxLength: 120 }), (ops) => {
        const memory = twoRegions();
        const tlb = def.create({ capacity: 1 << 16 }); // no eviction: answers must be exact
        const ref = new ReferenceIotlb();
        const space = new IotlbAddressSpace(tlb, memory);
        let lastMap: { iova: number; len: number; access: number } | null = null;
        // Right after a change, the window the last map() left must not outlive it.
        const probeLastWindow = (): void => {
          if (lastMap !== null && space.window(lastMap.iova, lastMap.len, lastMap.access)) checkWindow(space, ref, memory, lastMap);
        };
        for (const o of ops) {
          if (o.kind === 'update') {
            const uaddr = (o.region === 0 ? U1 : U2) + o.page * K4;
            const e = { iova: o.iova, size: o.pages * K4, uaddr, perm: o.perm };
            tlb.insert(e);
            ref.insert(e.iova, e.size, e.uaddr, e.perm);
            probeLastWindow();
          } else if (o.kind === 'invalidate') {
            tlb.invalidate(o.iova, o.pages * K4);
            ref.invalidate(o.iova, o.pages * K4);
            probeLastWindow();
          } else if (o.kind === 'window') {
            const lookups = tlb.stats.lookups;
            if (space.window(o.iova, o.len, o.access)) checkWindow(space, ref, memory, o);
            assert.equal(tlb.stats.lookups, lookups, 'window() looks nothing up');
          } else {
            lastMap = o;
            const want = ref.lookup(o.iova, o.len, o.access);
            const n = space.map(o.iova, o.len, o.access);
            const what = `map(0x${o.iova.toString(16)}, ${o.len}, ${o.access})`;
            if (want.result === LOOKUP_MISS) {
              assert.equal(n, MAP_MISS, `${what}: reference misses`);
              continue;
            }
            if (want.result === LOOKUP_DENIED) {
              assert.equal(n, MAP_FAULT, `${what}: reference denies`);
              continue;
            }
            const region = memory.findUser(want.uaddr);
            if (region === null) {
              assert.equal(n, MAP_FAULT, `${what}: uaddr outside every region`);
              continue;
            }
            assert.ok(n >= 1, `${what}: reference maps 0x${want.uaddr.toString(16)}, space answered ${n}`);
            assert.ok(n <= want.result && n <= region.userEnd - want.uaddr, `${what}: ${n} bytes, more than mapped`);
            assert.equal(space.bytes, region.bytes, `${what}: wrong region`);
            assert.equal(space.offset, want.uaddr - region.userAddr, `${what}: wrong offset`);
          }
        }
      }), { numRuns: NUM_RUNS });
    });
  }
});

test('IotlbAddressSpace: the kept span answers as hits in the strategy stats, and dies with an INVALIDATE or a remapping UPDATE', () => {
  const memory = twoRegions();
  const tlb = new CoalescingStrategy();
  const space = new IotlbAddressSpace(tlb, memory);
  for (let p = 0; p < 512; p++) tlb.insert({ iova: 0x20_0000 + p * K4, size: K4, uaddr: U1 + p * K4, perm: 3 });
  assert.equal(tlb.stats.entries, 1, 'coalesced into one entry');
  assert.equal(space.map(0x20_0000, 64, ACCESS_WRITE), 64);
  const before = { ...tlb.stats };
  for (let i = 1; i < 100; i++) assert.equal(space.map(0x20_0000 + i * 0x800, 64, ACCESS_WRITE), 64);
  assert.equal(tlb.stats.lookups - before.lookups, 99);
  assert.equal(tlb.stats.hits - before.hits, 99);
  assert.equal(space.offset, 99 * 0x800);
  tlb.invalidate(0x20_0000 + 0x1000, K4);
  assert.equal(space.map(0x20_0000 + 0x1000, 64, ACCESS_WRITE), MAP_MISS, 'an invalidated page is a miss at once');
  tlb.insert({ iova: 0x20_0000 + 0x1000, size: K4, uaddr: U2, perm: ACCESS_READ });
  assert.equal(space.map(0x20_0000 + 0x1000, 16, ACCESS_READ), 16);
  assert.equal(space.bytes, memory.findUser(U2)!.bytes, 'the remapped page reads the new place');
  assert.equal(space.offset, 0);
  assert.equal(space.map(0x20_0000 + 0x1000, 16, ACCESS_WRITE), MAP_FAULT, 'and with its new permission');
});

/**
 * Model-based property tests: random sequences of insert / invalidate / lookup run
 * against every strategy and against ReferenceIotlb. Without eviction every answer must
 * match exactly; a strategy at a tiny capacity may answer MISS instead of a hit or a
 * denial, or a shorter hit at the same address, but never a different translation.
 *
 * FUZZ_RUNS sets the number of runs (default 200).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Access, LOOKUP_DENIED, LOOKUP_MISS } from '../../src/iotlb/strategy.js';
import type { IotlbEntry, IotlbStrategy, LookupOut, StrategyDefinition } from '../../src/iotlb/strategy.js';
import { strategies } from '../../src/iotlb/registry.js';
import { ReferenceIotlb } from '../../src/iotlb/reference.js';

const NUM_RUNS = Number(process.env.FUZZ_RUNS ?? 200);
const K4 = 0x1000;
const M2 = 0x200000;
const U = 0x7f00_0000_0000;

type Op =
  | { kind: 'insert'; entry: IotlbEntry }
  | { kind: 'invalidate'; iova: number; size: number }
  | { kind: 'lookup'; iova: number; len: number; access: number };

interface Universe {
  /** Reference granularity; every insert and invalidate is a multiple of it. */
  unit: number;
  /** Page sizes entries are made of. */
  pages: number[];
  /** IOVAs fall in [0, span). */
  span: number;
  maxLookup: number;
}

/** 4 KiB and 2 MiB pages in 8 MiB of IOVA: collisions, merges and splits happen often. */
const PAGES: Universe = { unit: K4, pages: [K4, M2], span: 4 * M2, maxLookup: 3 * M2 };
/** Odd small sizes: 16-byte granularity in 2 KiB, to exercise sub-page trimming. */
const BYTES: Universe = { unit: 16, pages: [16, 48, 256], span: 2048, maxLookup: 600 };

function opArb(u: Universe): fc.Arbitrary<Op> {
  const page = fc.constantFrom(...u.pages);
  const aligned = (p: number) => fc.nat({ max: Math.floor(u.span / p) - 1 }).map((i) => i * p);
  const insert = page.chain((p) => fc.record({
    iova: aligned(p),
    size: fc.integer({ min: 1, max: 3 }).map((n) => n * p),
    // uaddr = iova + delta: equal deltas make neighbours contiguous in user space
    delta: fc.constantFrom(U, U, U + p, U + 2 * M2, U - u.unit),
    perm: fc.constantFrom(0, 1, 2, 3, 3, 3),
  })).map(({ iova, size, delta, perm }): Op => ({ kind: 'insert', entry: { iova, size, uaddr: iova + delta, perm } }));
  const invalidate = fc.oneof(
    { weight: 6, arbitrary: page.chain((p) => fc.record({ iova: aligned(u.unit), n: fc.integer({ min: 0, max: 3 }), p: fc.constant(p) }))
      .map(({ iova, n, p }): Op => ({ kind: 'invalidate', iova, size: n * p })) },
    { weight: 1, arbitrary: fc.record({ iova: aligned(u.unit), size: fc.constantFrom(Number.MAX_SAFE_INTEGER, 2 ** 64, 2 ** 53) })
      .map(({ iova, size }): Op => ({ kind: 'invalidate', iova, size })) },
  );
  const lookup = fc.record({
    iova: fc.nat({ max: u.span + u.pages[u.pages.length - 1] }),
    len: fc.oneof(fc.integer({ min: 1, max: 1500 }), fc.integer({ min: 1, max: u.maxLookup })),
    access: fc.constantFrom(1, 2, 3),
  }).map((l): Op => ({ kind: 'lookup', ...l }));
  return fc.oneof({ weight: 3, arbitrary: insert }, { weight: 1, arbitrary: invalidate }, { weight: 5, arbitrary: lookup });
}

interface Subject {
  s: IotlbStrategy;
  evicts: boolean;
  capacity: number;
}

const out: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };
const st0 = (sub: Subject) => sub.s.stats;

function checkLookup(sub: Subject, ref: ReferenceIotlb, iova: number, len: number, access: number): void {
  const want = ref.lookup(iova, len, access);
  out.uaddr = -1;
  const got = sub.s.lookup(iova, len, access, out);
  const where = `${sub.s.name} lookup(0x${iova.toString(16)}, ${len}, ${access})`;
  if (!sub.evicts) {
    assert.equal(got, want.result, `${where}: result`);
    if (got > 0) assert.equal(out.uaddr, want.uaddr, `${where}: uaddr`);
    return;
  }
  // Only a cache that has evicted something may answer less than the reference (a miss
  // instead of a hit or denial, a shorter hit): without this check a cache that simply
  // lost mappings would pass.
  const evicted = sub.s.stats.evictions > 0;
  if (got === LOOKUP_MISS) {
    if (want.result !== LOOKUP_MISS) assert.ok(evicted, `${where}: miss where the reference says ${want.result}, and nothing was evicted`);
    return;
  }
  if (got === LOOKUP_DENIED) {
    assert.equal(want.result, LOOKUP_DENIED, `${where}: denied but reference says ${want.result}`);
    return;
  }
  assert.ok(want.result > 0, `${where}: hit ${got} but reference says ${want.result}`);
  assert.equal(out.uaddr, want.uaddr, `${where}: uaddr`);
  assert.ok(got >= 1 && got <= want.result, `${where}: length ${got} > reference ${want.result}`);
  if (got < want.result) assert.ok(evicted, `${where}: length ${got} < reference ${want.result}, and nothing was evicted`);
  checkSpan(sub, ref, iova, access, where);
}

/** After a hit: the span the strategy offers (if any) holds iova and translates linearly with the access granted throughout. */
function checkSpan(sub: Subject, ref: ReferenceIotlb, iova: number, access: number, where: string): void {
  out.spanStart = -7;
  out.spanEnd = -7;
  sub.s.span(out);
  const { spanStart: lo, spanEnd: hi } = out;
  if (!(hi > lo)) return;
  assert.ok(lo <= iova && iova < hi, `${where}: span [0x${lo.toString(16)}, 0x${hi.toString(16)}) does not hold the address`);
  for (const probe of [lo, Math.floor((lo + hi) / 2), hi - 1]) {
    const held = ref.lookup(probe, 1, access);
    assert.ok(held.result > 0, `${where}: span [0x${lo.toString(16)}, 0x${hi.toString(16)}) covers 0x${probe.toString(16)}, which the reference does not grant`);
    assert.equal(held.uaddr, out.uaddr + (probe - iova), `${where}: span not linear at 0x${probe.toString(16)}`);
  }
}

/** Entries sorted, non-overlapping, non-empty, in agreement with the reference (sampled). */
function checkEntries(sub: Subject, ref: ReferenceIotlb, unit: number, full: boolean): void {
  const entries = sub.s.entries();
  const name = sub.s.name;
  let prevEnd = -Infinity;
  let bytes = 0;
  for (const e of entries) {
    assert.ok(e.size > 0, `${name}: empty entry`);
    assert.ok(e.iova >= prevEnd, `${name}: entries overlap or are unsorted`);
    prevEnd = e.iova + e.size;
    bytes += e.size;
    const probes = full ? e.size / unit : 3;
    for (let k = 0; k < probes; k++) {
      const off = full ? k * unit : [0, Math.floor(e.size / 2), e.size - 1][k];
      const held = ref.lookup(e.iova + off, 1, Access.None);
      assert.ok(held.result > 0, `${name}: holds 0x${(e.iova + off).toString(16)} the reference does not`);
      assert.equal(held.uaddr, e.uaddr + off, `${name}: wrong uaddr in entries()`);
      assert.equal(held.entryPerm, e.perm, `${name}: wrong perm in entries()`);
    }
  }
  if (!sub.evicts || st0(sub).evictions === 0) assert.equal(bytes, ref.mappedBytes(), `${name}: mapped bytes differ from the reference (evictions: ${st0(sub).evictions})`);
  const st = sub.s.stats;
  assert.equal(st.entries, entries.length, `${name}: stats.entries`);
  assert.ok(st.peakEntries >= st.entries, `${name}: stats.peakEntries`);
  assert.ok(st.peakEntries <= sub.capacity, `${name}: ${st.peakEntries} entries at capacity ${sub.capacity}`);
  assert.equal(st.hits + st.misses + st.permissionFaults, st.lookups, `${name}: lookup counters`);
}

function run(defs: readonly StrategyDefinition[], u: Universe, ops: Op[], capacity: number | undefined, seed: number): IotlbStrategy[] {
  const ref = new ReferenceIotlb();
  const subjects: Subject[] = defs.map((d) => ({
    s: d.create(capacity === undefined ? { seed } : { capacity, seed }),
    evicts: capacity !== undefined,
    capacity: capacity ?? Infinity,
  }));
  for (const op of ops) {
    if (op.kind === 'insert') {
      ref.insert(op.entry.iova, op.entry.size, op.entry.uaddr, op.entry.perm);
      for (const sub of subjects) {
        sub.s.insert(op.entry);
        checkEntries(sub, ref, u.unit, false);
      }
    } else if (op.kind === 'invalidate') {
      ref.invalidate(op.iova, op.size);
      for (const sub of subjects) {
        sub.s.invalidate(op.iova, op.size);
        checkEntries(sub, ref, u.unit, false);
        // Nothing the invalidate removed may still translate.
        if (op.size > 0) {
          const last: number = Math.min(op.iova + op.size, u.span + M2) - 1;
          for (const probe of [op.iova as number, Math.floor((op.iova + last) / 2), last]) {
            for (const access of [1, 2, 3]) {
              const r = sub.s.lookup(probe, 1, access, out);
              assert.equal(r, LOOKUP_MISS, `${sub.s.name}: 0x${probe.toString(16)} still translates after invalidate`);
            }
          }
        }
      }
    } else {
      for (const sub of subjects) checkLookup(sub, ref, op.iova, op.len, op.access);
    }
  }
  for (const sub of subjects) checkEntries(sub, ref, u.unit, true);
  return subjects.map((sub) => sub.s);
}

/** Per strategy, how many runs of a small-capacity property ended with evictions (see `evictingRuns`). */
const evictedRuns = new Map<string, number>();

function property(u: Universe, capacity: number | undefined) {
  // Small capacities get longer sequences, so that most runs fill the cache and evict.
  const length = capacity === undefined ? { minLength: 1, maxLength: 60 } : { minLength: 30, maxLength: 90 };
  return fc.property(fc.array(opArb(u), length), fc.nat(), (ops, seed) => {
    for (const s of run(strategies, u, ops, capacity, seed)) {
      if (s.stats.evictions > 0) evictedRuns.set(s.name, (evictedRuns.get(s.name) ?? 0) + 1);
    }
  });
}

/** Runs a small-capacity property and checks that every strategy evicted in a fair share of the runs. */
function evictingRuns(u: Universe, capacity: number): void {
  evictedRuns.clear();
  fc.assert(property(u, capacity), { numRuns: NUM_RUNS });
  for (const def of strategies) {
    const n = evictedRuns.get(def.name) ?? 0;
    assert.ok(n >= NUM_RUNS / 2, `${def.name}: evicted in only ${n} of ${NUM_RUNS} runs at capacity ${capacity}: the property is nearly vacuous`);
  }
}

describe('every strategy agrees with the reference', () => {
  it('4 KiB / 2 MiB pages, default capacity: exact agreement', () => {
    fc.assert(property(PAGES, undefined), { numRuns: NUM_RUNS });
  });
  it('4 KiB / 2 MiB pages, capacity 3: only misses may differ, and only after evictions', () => {
    evictingRuns(PAGES, 3);
  });
  it('16-byte granular odd sizes, default capacity: exact agreement', () => {
    fc.assert(property(BYTES, undefined), { numRuns: NUM_RUNS });
  });
  it('16-byte granular odd sizes, capacity 2: only misses may differ, and only after evictions', () => {
    evictingRuns(BYTES, 2);
  });
});

describe('the generators exercise every outcome', () => {
  for (const [name, u] of [['pages', PAGES], ['bytes', BYTES]] as const) {
    it(`${name}: hits, misses, denials, partial and stitched hits all occur`, () => {
      const seen = { hit: 0, miss: 0, denied: 0, partial: 0, stitched: 0 };
      for (const ops of fc.sample(fc.array(opArb(u), { minLength: 1, maxLength: 60 }), { numRuns: 200, seed: 42 })) {
        const ref = new ReferenceIotlb();
        for (const op of ops) {
          if (op.kind === 'insert') ref.insert(op.entry.iova, op.entry.size, op.entry.uaddr, op.entry.perm);
          else if (op.kind === 'invalidate') ref.invalidate(op.iova, op.size);
          else {
            const r = ref.lookup(op.iova, op.len, op.access).result;
            if (r === LOOKUP_MISS) seen.miss++;
            else if (r === LOOKUP_DENIED) seen.denied++;
            else {
              seen.hit++;
              if (r < op.len) seen.partial++;
              const unitEnd = (Math.floor(op.iova / u.unit) + 1) * u.unit;
              if (op.iova + r > unitEnd) seen.stitched++;
            }
          }
        }
      }
      for (const [k, v] of Object.entries(seen)) assert.ok(v >= 10, `${name}: only ${v} ${k} lookups`);
    });
  }
});

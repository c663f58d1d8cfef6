/**
 * Micro-benchmark: IOTLB lookups per second for every registered strategy on two
 * synthetic static workloads (no misses after warm-up, no invalidates):
 *
 *   2M-static  a 512 MiB guest mapped in 2 MiB pages = 256 IOTLB entries, IOVA = GPA,
 *              user addresses contiguous (one QEMU RAM block) -> `coalescing` merges them
 *   4K-static  8 MiB of buffers in 4 KiB pages = 2048 entries (DPDK's cache size), user
 *              addresses shuffled (guest-physical pages scattered) -> nothing merges
 *
 * Each benchmark call performs BATCH lookups of 64..1500 bytes at random IOVAs within
 * the mapped range; lookups/s = calls/s x BATCH.
 *
 * Then, where the time goes on fixtures/traces/dynamic.vhtrace (a buffer mapped and unmapped
 * per packet): each strategy replays the trace's ops in order with and without its lookups
 * (lookups change no state without evictions, so both runs see the same tables), interleaved
 * round by round, best of the rounds; ns per mutation = mutations-only time / mutations, ns
 * per lookup = the difference / lookups.
 *
 *   node dist/bench/strategies-micro.js          (BENCH_MAX_TIME=seconds per case, default 2)
 */
import b from 'benny';
import Table from 'cli-table3';
import { strategies } from '../src/iotlb/registry.js';
import { Access } from '../src/iotlb/strategy.js';
import type { IotlbEntry, IotlbStrategy, LookupOut, StrategyDefinition } from '../src/iotlb/strategy.js';
import { Prng } from '../src/iotlb/prng.js';
import { loadOps, OP_LOOKUP, OP_UPDATE, type OpStream } from '../src/replay/ops.js';
import { fixtureTraces } from '../src/replay/fixtures.js';
import { answerHelp, refuseArguments } from './options.js';

const K4 = 0x1000;
const M2 = 0x200000;
const U = 0x7f3a_0000_0000;
const BATCH = 4096;

interface Workload {
  name: string;
  entries: IotlbEntry[];
  iova: Float64Array;
  len: Float64Array;
  access: Uint8Array;
}

function shuffle<T>(items: T[], rng: Prng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

function workload(name: string, pageSize: number, pages: number, contiguousUaddr: boolean, seed: number): Workload {
  const rng = new Prng(seed);
  const slots = shuffle(Array.from({ length: pages }, (_, i) => i), rng);
  const entries: IotlbEntry[] = [];
  for (let i = 0; i < pages; i++) {
    const uslot = contiguousUaddr ? i : slots[i];
    entries.push({ iova: i * pageSize, size: pageSize, uaddr: U + uslot * pageSize, perm: Access.ReadWrite });
  }
  // Updates arrive in miss order, not address order.
  shuffle(entries, rng);
  const span = pages * pageSize;
  const iova = new Float64Array(BATCH);
  const len = new Float64Array(BATCH);
  const access = new Uint8Array(BATCH);
  for (let i = 0; i < BATCH; i++) {
    len[i] = 64 + rng.below(1500 - 64 + 1);
    iova[i] = rng.below(span - len[i]);
    access[i] = (rng.nextU32() & 1) === 0 ? Access.Read : Access.Write;
  }
  return { name, entries, iova, len, access };
}

let sink = 0;

function warm(def: StrategyDefinition, w: Workload): IotlbStrategy {
  const s = def.create({ seed: 1 });
  for (const e of w.entries) s.insert(e);
  return s;
}

/** Runs one batch; returns the bytes translated (so nothing is optimised away). */
function batch(s: IotlbStrategy, w: Workload, out: LookupOut): number {
  const { iova, len, access } = w;
  let bytes = 0;
  for (let i = 0; i < BATCH; i++) {
    const r = s.lookup(iova[i], len[i], access[i], out);
    if (r > 0) bytes += r;
  }
  return bytes;
}

interface Row {
  workload: string;
  strategy: string;
  lookupsPerSec: number;
  margin: number;
  entries: number;
  hitRate: number;
}

async function runWorkload(w: Workload, maxTime: number): Promise<Row[]> {
  const rows: Row[] = [];
  const cases = strategies.map((def) => b.add(def.name, () => {
    const s = warm(def, w);
    const out: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };
    return () => {
      sink += batch(s, w, out);
    };
  }));
  const summary = await b.suite(
    `IOTLB lookups, ${w.name}`,
    ...cases,
    b.configure({ cases: { maxTime } }),
    b.cycle(),
    b.complete(),
  );
  for (const def of strategies) {
    const result = summary.results.find((r) => r.name === def.name);
    if (result === undefined) continue;
    const s = warm(def, w);
    batch(s, w, { uaddr: 0, spanStart: 0, spanEnd: 0 });
    rows.push({
      workload: w.name,
      strategy: def.name,
      lookupsPerSec: result.ops * BATCH,
      margin: result.margin,
      entries: s.stats.entries,
      hitRate: s.stats.hits / s.stats.lookups,
    });
  }
  return rows;
}

function fmtRate(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : `${(n / 1e3).toFixed(1)} k`;
}

/** One pass over `ops` on `caches` (one per slot), lookups included or not; caches cleared after. */
type Pass = (ops: OpStream, caches: IotlbStrategy[], out: LookupOut, entry: IotlbEntry) => number;

function pass(withLookups: boolean): Pass {
  // A private copy per strategy and mode keeps the calls monomorphic (see src/replay/replay.ts, replayFor).
  return new Function('ops', 'caches', 'out', 'entry', `
    const { kind, slot, iova, size, uaddr, perm } = ops;
    let acc = 0;
    for (let i = 0; i < ops.count; i++) {
      const c = caches[slot[i]];
      const k = kind[i];
      if (k === ${OP_LOOKUP}) { ${withLookups ? 'acc += c.lookup(iova[i], size[i], perm[i], out);' : ''} }
      else if (k === ${OP_UPDATE}) { entry.iova = iova[i]; entry.size = size[i]; entry.uaddr = uaddr[i]; entry.perm = perm[i]; c.insert(entry); }
      else c.invalidate(iova[i], size[i]);
    }
    for (const c of caches) c.clear();
    return acc;`) as Pass;
}

interface SplitRow { strategy: string; full: number; mutations: number; nsPerMutation: number; nsPerLookup: number }

async function dynamicSplit(rounds: number): Promise<SplitRow[]> {
  const file = fixtureTraces().find((f) => /[\\/]dynamic\.vhtrace$/.test(f));
  if (file === undefined) return [];
  const ops = await loadOps(file);
  let lookups = 0;
  for (let i = 0; i < ops.count; i++) if (ops.kind[i] === OP_LOOKUP) lookups++;
  const mutations = ops.count - lookups;
  const out: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };
  const entry: IotlbEntry = { iova: 0, size: 0, uaddr: 0, perm: 0 };
  const cases = strategies.flatMap((def) => [true, false].map((withLookups) => {
    return { def, withLookups, run: pass(withLookups), caches: ops.slots.map(() => def.create({ seed: 1 })), best: Infinity };
  }));
  for (let round = 0; round < rounds; round++) {
    for (const c of cases) {
      const n = 100;
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < n; k++) sink += c.run(ops, c.caches, out, entry);
      const ns = Number(process.hrtime.bigint() - t0) / n;
      if (ns < c.best) c.best = ns;
    }
  }
  return strategies.map((def) => {
    const full = cases.find((c) => c.def === def && c.withLookups)!.best;
    const mut = cases.find((c) => c.def === def && !c.withLookups)!.best;
    return { strategy: def.name, full, mutations: mut, nsPerMutation: mut / mutations, nsPerLookup: (full - mut) / lookups };
  });
}

async function main(): Promise<void> {
  const maxTime = Number(process.env.BENCH_MAX_TIME ?? 2);
  const workloads = [
    workload('2M-static (512 MiB, 256 x 2 MiB)', M2, 256, true, 2),
    workload('4K-static (8 MiB, 2048 x 4 KiB, scattered)', K4, 2048, false, 4),
  ];
  const rows: Row[] = [];
  for (const w of workloads) rows.push(...(await runWorkload(w, maxTime)));

  const table = new Table({
    head: ['workload', 'strategy', 'entries', 'hit rate', 'lookups/s', '±%', 'vs dpdk'],
    style: { head: [], border: [] },
  });
  for (const row of rows) {
    const base = rows.find((r) => r.workload === row.workload && r.strategy === 'dpdk');
    table.push([
      row.workload, row.strategy, String(row.entries), `${(row.hitRate * 100).toFixed(1)}%`,
      fmtRate(row.lookupsPerSec), row.margin.toFixed(1),
      base === undefined ? '-' : `${(row.lookupsPerSec / base.lookupsPerSec).toFixed(2)}x`,
    ]);
  }
  console.log(table.toString());

  const split = await dynamicSplit(Number(process.env.BENCH_ROUNDS ?? 20));
  if (split.length > 0) {
    const t2 = new Table({
      head: ['dynamic.vhtrace', 'replay µs', 'mutations only µs', 'ns / insert or invalidate', 'ns / lookup'],
      style: { head: [], border: [] },
    });
    for (const row of split) {
      t2.push([row.strategy, (row.full / 1000).toFixed(1), (row.mutations / 1000).toFixed(1), row.nsPerMutation.toFixed(1), row.nsPerLookup.toFixed(1)]);
    }
    console.log(t2.toString());
  }
  if (sink === 0) console.log('(no bytes translated?)');
}

answerHelp(import.meta.url);
refuseArguments('strategies-micro');
await main();

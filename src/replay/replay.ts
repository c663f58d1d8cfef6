/**
 * The replay engine: runs an op stream (src/replay/ops.ts) in order against empty caches
 * of one strategy — one cache per slot (connection + virtqueue) — and checks every
 * lookup against the reference answer computed when the stream was built. analyse()
 * does one replay on new instances with the pending-miss model and returns the metrics;
 * Replayer does the timed replays (instances created once, cleared between replays).
 *
 * The loop allocates nothing: ops come from typed arrays, UPDATEs reuse one entry
 * object, lookups one LookupOut, counters are locals written to a Float64Array at the
 * end. (Only the analysis pass, which also models the pending-miss list, allocates —
 * inside PendingMisses.) Each strategy gets its own copy of the loop (replayFor), and each
 * Replayer one more (newReplayCopy).
 *
 * A lookup answer is accepted when
 *   - hit:    the reference hits too, at the same user address, for at most the reference
 *             length (a shorter length only from a cache that has evicted something);
 *   - miss:   the reference misses, or the cache has evicted something (an "extra miss":
 *             the replay then does what the front-end would do after the IOTLB miss — it
 *             re-sends the mapping, i.e. the reference range is inserted into that cache);
 *   - denied: the reference is denied too.
 * Anything else — a wrong address or length, a hit or a denial where the reference misses
 * (a stale entry after an INVALIDATE), a miss from a cache that never evicted — throws a
 * ReplayMismatchError naming the strategy, the trace and the op index.
 */
import { PendingMisses } from '../iotlb/pending-misses.js';
import { LOOKUP_DENIED, LOOKUP_MISS } from '../iotlb/strategy.js';
import type { IotlbEntry, IotlbStats, IotlbStrategy, LookupOut, StrategyDefinition } from '../iotlb/strategy.js';
import { OP_INVALIDATE, OP_LOOKUP, OP_UPDATE, RECORDED_RESULTS, type OpStream } from './ops.js';
import { approxBytes, memoryModel } from './memory.js';

/** Indices into the counters array replay() fills. */
export const C_HITS = 0;
export const C_MISSES = 1;
export const C_EXTRA_MISSES = 2;
export const C_DENIED = 3;
export const C_MISSES_SENT = 4;
export const COUNTER_COUNT = 5;

/** Seed every cache gets, so random eviction replays identically in every pass. */
export const REPLAY_SEED = 1;

export class ReplayMismatchError extends Error {
  override readonly name = 'ReplayMismatchError';
  constructor(
    readonly strategy: string,
    readonly source: string,
    /** Index of the op in the op stream. */
    readonly op: number,
    /** Index of the trace record it came from. */
    readonly record: number,
    detail: string,
  ) {
    super(`strategy "${strategy}" gave a wrong translation on ${source} at op ${op} (trace record ${record}): ${detail}`);
  }
}

const hex = (n: number): string => `0x${n.toString(16)}`;
const accessName = (a: number): string => ['-', 'R', 'W', 'RW'][a] ?? String(a);

function describeAnswer(result: number, uaddr: number): string {
  if (result > 0) return `hit, ${result} bytes at uaddr ${hex(uaddr)}`;
  if (result === LOOKUP_MISS) return 'miss';
  if (result === LOOKUP_DENIED) return 'denied';
  return `invalid result ${result}`;
}

/** Cold path: builds the error for op i. */
function mismatch(ops: OpStream, i: number, strategy: string, cache: IotlbStrategy, result: number, uaddr: number): ReplayMismatchError {
  const slot = ops.slots[ops.slot[i]];
  const ref = ops.refResult[i];
  let why = '';
  if (result > 0 && ref === LOOKUP_MISS) why = ' (a stale entry: hit on an address that is not mapped — missed INVALIDATE?)';
  else if (result === LOOKUP_DENIED && ref === LOOKUP_MISS) why = ' (a stale entry: denied on an address that is not mapped)';
  else if (result > 0 && ref === LOOKUP_DENIED) why = ' (granted an access the mapping does not allow)';
  else if (result > 0 && uaddr !== ops.refUaddr[i]) why = ' (wrong user address)';
  else if (result > 0 && result > ref) why = ' (length runs past what is contiguous and permitted)';
  else if (result > 0) why = ' (short length from a cache that never evicted)';
  else if (result === LOOKUP_MISS) why = ' (miss from a cache that never evicted: it lost a mapping)';
  const recorded = ops.recorded[i] < RECORDED_RESULTS.length ? `; trace recorded ${RECORDED_RESULTS[ops.recorded[i]]}` : '';
  return new ReplayMismatchError(strategy, ops.source, i, ops.record[i],
    `lookup on connection ${slot.connection} queue ${slot.queue} of iova ${hex(ops.iova[i])}, ${ops.size[i]} bytes, `
    + `access ${accessName(ops.perm[i])}: answered ${describeAnswer(result, uaddr)}; reference: `
    + `${describeAnswer(ref, ops.refUaddr[i])}${recorded}; cache has evicted ${cache.stats.evictions} entries${why}`);
}

/**
 * Runs every op of `ops` against `caches` (one per slot, already created). Adds to
 * `counters` (C_* indices). With `pending` (one list per slot), also counts the IOTLB
 * misses a back-end would send (PendingMisses semantics); without, allocates nothing.
 */
export function replay(
  ops: OpStream, caches: readonly IotlbStrategy[], strategy: string, counters: Float64Array,
  pending: readonly PendingMisses[] | null = null, from = 0, to = ops.count,
): void {
  const { kind, slot, iova, size, uaddr, perm, refResult, refUaddr, refEntryIova, refEntrySize, refEntryUaddr, refEntryPerm } = ops;
  const entry = scratchEntry;
  const out = scratchOut;
  const n = to;
  let hits = 0;
  let misses = 0;
  let extra = 0;
  let denied = 0;
  let sent = 0;
  for (let i = from; i < n; i++) {
    const s = slot[i];
    const cache = caches[s];
    const k = kind[i];
    if (k === OP_LOOKUP) {
      const r = cache.lookup(iova[i], size[i], perm[i], out);
      const ref = refResult[i];
      if (r > 0) {
        if (!(ref >= r) || out.uaddr !== refUaddr[i] || (r < ref && cache.stats.evictions === 0)) {
          throw mismatch(ops, i, strategy, cache, r, out.uaddr);
        }
        hits++;
      } else if (r === LOOKUP_MISS) {
        misses++;
        if (pending !== null && pending[s].add(iova[i], perm[i])) sent++;
        if (ref !== LOOKUP_MISS) {
          if (cache.stats.evictions === 0) throw mismatch(ops, i, strategy, cache, r, 0);
          extra++;
          // The front-end answers the miss: the mapping comes back.
          entry.iova = refEntryIova[i];
          entry.size = refEntrySize[i];
          entry.uaddr = refEntryUaddr[i];
          entry.perm = refEntryPerm[i];
          cache.insert(entry);
          if (pending !== null) pending[s].clearCovered(entry.iova, entry.size, entry.perm);
        }
      } else {
        if (r !== LOOKUP_DENIED || ref !== LOOKUP_DENIED) throw mismatch(ops, i, strategy, cache, r, 0);
        denied++;
      }
    } else if (k === OP_UPDATE) {
      entry.iova = iova[i];
      entry.size = size[i];
      entry.uaddr = uaddr[i];
      entry.perm = perm[i];
      cache.insert(entry);
      if (pending !== null) pending[s].clearCovered(iova[i], size[i], perm[i]);
    } else if (k === OP_INVALIDATE) {
      cache.invalidate(iova[i], size[i]);
    }
  }
  counters[C_HITS] += hits;
  counters[C_MISSES] += misses;
  counters[C_EXTRA_MISSES] += extra;
  counters[C_DENIED] += denied;
  counters[C_MISSES_SENT] += sent;
}

const scratchEntry: IotlbEntry = { iova: 0, size: 0, uaddr: 0, perm: 0 };
const scratchOut: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };

export type ReplayFn = typeof replay;

/**
 * A private copy of replay() for one strategy. The loop's calls into the cache
 * (lookup/insert/invalidate) are then monomorphic: sharing one loop between strategies
 * makes those call sites megamorphic, which in measurements halves every strategy's
 * throughput after the first one benchmarked and would rank strategies by run order.
 * (Benchmark.js compiles its test loops from source for the same reason.) analyse() uses
 * this one copy per strategy; a Replayer takes a copy of its own (newReplayCopy).
 */
const copies = new WeakMap<StrategyDefinition, ReplayFn>();
let copyCounter = 0;

export function replayFor(def: StrategyDefinition): ReplayFn {
  let fn = copies.get(def);
  if (fn === undefined) {
    fn = newReplayCopy(def);
    copies.set(def, fn);
  }
  return fn;
}

/**
 * A new copy of replay() for `def`, sharing no type feedback with any other (see replayFor).
 * The timed replays of each trace get one: a loop that has replayed other traces first keeps
 * their feedback and inlining decisions, and `bench` over every fixture then measured the
 * one-entry `static-1g` at 0.96x of the `dpdk` model for `coalescing` where the trace alone,
 * or its own copy, gives 1.0-1.1x.
 */
export function newReplayCopy(def: StrategyDefinition): ReplayFn {
  const deps: Record<string, unknown> = {
    OP_LOOKUP, OP_UPDATE, OP_INVALIDATE, LOOKUP_MISS, LOOKUP_DENIED, mismatch, scratchEntry, scratchOut,
    C_HITS, C_MISSES, C_EXTRA_MISSES, C_DENIED, C_MISSES_SENT,
  };
  const tag = `${def.name.replace(/[^\w-]/g, '_')}-${++copyCounter}`;
  const factory = new Function(...Object.keys(deps),
    `return (${replay.toString()});\n//# sourceURL=vhost-iotlb-replay-${tag}.js`) as (...args: unknown[]) => ReplayFn;
  return factory(...Object.values(deps));
}

/** Fresh caches, one per slot, into `into` (reused between replays). */
export function freshCaches(def: StrategyDefinition, ops: OpStream, into: IotlbStrategy[] = []): IotlbStrategy[] {
  const n = ops.slots.length;
  into.length = n;
  for (let i = 0; i < n; i++) into[i] = def.create({ seed: REPLAY_SEED });
  return into;
}

/** What one checked replay of a trace with a strategy measured (no timing). */
export interface ReplayMetrics {
  strategy: string;
  lookups: number;
  hits: number;
  /** All misses, including extraMisses. */
  misses: number;
  /** Misses where the reference hit (the cache had evicted the mapping). */
  extraMisses: number;
  denied: number;
  /** hits / lookups (NaN without lookups). */
  hitRate: number;
  /** IOTLB MISS messages a back-end would send: distinct 4 KiB pages per cache, as PendingMisses dedups them. */
  missesSent: number;
  evictions: number;
  /** Largest peak entry count of any one cache. */
  peakEntries: number;
  /** Sum of every cache's peak entry count. */
  totalPeakEntries: number;
  /** Approximate bytes for totalPeakEntries (see memory.ts), or null if the strategy has no model. */
  approxBytes: number | null;
  /** How approxBytes was estimated. */
  memoryModel: string;
}

/** One checked replay with fresh caches and pending-miss lists; throws ReplayMismatchError. */
export function analyse(ops: OpStream, def: StrategyDefinition): ReplayMetrics {
  const caches = freshCaches(def, ops);
  const pending = ops.slots.map(() => new PendingMisses());
  const counters = new Float64Array(COUNTER_COUNT);
  replayFor(def)(ops, caches, def.name, counters, pending);
  let evictions = 0;
  let peak = 0;
  let totalPeak = 0;
  let bytes: number | null = 0;
  for (const cache of caches) {
    evictions += cache.stats.evictions;
    peak = Math.max(peak, cache.stats.peakEntries);
    totalPeak += cache.stats.peakEntries;
    const b = approxBytes(def.name, cache, cache.stats.peakEntries);
    bytes = b === null || bytes === null ? null : bytes + b;
  }
  return {
    strategy: def.name,
    lookups: ops.lookups,
    hits: counters[C_HITS],
    misses: counters[C_MISSES],
    extraMisses: counters[C_EXTRA_MISSES],
    denied: counters[C_DENIED],
    hitRate: ops.lookups > 0 ? counters[C_HITS] / ops.lookups : NaN,
    missesSent: counters[C_MISSES_SENT],
    evictions,
    peakEntries: peak,
    totalPeakEntries: totalPeak,
    approxBytes: bytes,
    memoryModel: memoryModel(def.name),
  };
}

/**
 * A reusable timed replay for benchmarks. The caches are created once; before each replay
 * they are emptied with clear() and their stats zeroed, so every replay starts from empty
 * caches without timing the allocation of new ones (which would otherwise dominate short
 * traces for the typed-array strategies). A clear() that leaves anything behind shows up
 * as a stale hit in the check. The replay skips the pending-miss model (analyse() has it).
 * The first error is kept in `error` (benchmark loops must not throw) and stops further runs.
 */
export class Replayer {
  error: Error | null = null;
  readonly counters = new Float64Array(COUNTER_COUNT);
  private readonly caches: IotlbStrategy[];
  private readonly replay: ReplayFn;
  replays = 0;
  /** Ops before the first lookup: the mappings a guest sets up before traffic starts. */
  private readonly warmupEnd: number;
  /** Whether any UPDATE/INVALIDATE follows the first lookup (dynamic mappings). */
  private readonly mutatesAfterWarmup: boolean;
  private warm = false;

  constructor(readonly ops: OpStream, readonly def: StrategyDefinition) {
    this.replay = newReplayCopy(def);
    this.caches = freshCaches(def, ops);
    let first = 0;
    while (first < ops.count && ops.kind[first] !== OP_LOOKUP) first++;
    this.warmupEnd = first;
    let mutates = false;
    for (let i = first; i < ops.count && !mutates; i++) mutates = ops.kind[i] !== OP_LOOKUP;
    this.mutatesAfterWarmup = mutates;
  }

  /**
   * One timed replay. A static trace (all mappings made before traffic, as DPDK in a guest
   * does) replays its set-up once and then times only its traffic, the steady state DPDK
   * 17.11's IOTLB series measured; a trace whose mappings change during traffic replays everything every time.
   */
  run(): void {
    if (this.error !== null) return;
    try {
      const caches = this.caches;
      if (this.mutatesAfterWarmup || !this.warm) {
        for (let i = 0; i < caches.length; i++) {
          caches[i].clear();
          resetStats(caches[i].stats);
        }
        this.replay(this.ops, caches, this.def.name, this.counters, null, 0, this.warmupEnd);
        this.warm = true;
      }
      this.replay(this.ops, caches, this.def.name, this.counters, null, this.warmupEnd, this.ops.count);
      this.replays++;
    } catch (err) {
      this.error = err as Error;
    }
  }
}

function resetStats(stats: IotlbStats): void {
  stats.lookups = 0;
  stats.hits = 0;
  stats.misses = 0;
  stats.permissionFaults = 0;
  stats.evictions = 0;
  stats.inserts = 0;
  stats.invalidations = 0;
  stats.entries = 0;
  stats.peakEntries = 0;
}

/**
 * Benchmarks strategies on one op stream with benny: per trace, `rounds` suites with one case
 * per strategy, the order reversed every other round; a case call is one whole replay starting
 * from empty caches, so lookups/s = replays/s x lookups in the trace (the time includes the
 * trace's UPDATEs and INVALIDATEs, not creating the caches: see Replayer). Before timing,
 * every strategy gets one checked analysis replay (hit rate, misses sent, evictions, memory);
 * a strategy that answers wrongly is reported as an error and not timed.
 *
 * Why rounds: benny's margin of error is the spread of samples within one case, a fraction of
 * a percent here, while the same case run again a few seconds later, or after another
 * strategy, moves by several percent on a shared machine (frequency, neighbours, where the JIT
 * placed the code). Each strategy's figure is the mean of its rounds and its margin the larger
 * of benny's and half the spread between its rounds; a strategy whose margin reaches the best
 * one's is marked as within the margin rather than beaten. Four rounds by default: this
 * machine has phases of seconds in which single-threaded code runs ~1.5x slower, and with two
 * rounds one phase change could land between two strategies of a round and decide their
 * ratio (the 12-lookup qemu-dpdk-iommu gave coalescing 0.67-0.93x of the dpdk model over four
 * runs; with four rounds in the same total time, 0.96-1.00x over three).
 */
import { format } from 'node:util';
import { renameSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { basename, dirname, extname, join } from 'node:path';
import b from 'benny';
import type { StrategyDefinition } from '../iotlb/strategy.js';
import type { OpStream, ReplayKind } from './ops.js';
import { Replayer, analyse, type ReplayMetrics } from './replay.js';
import { makeChartSelfContained } from './chart.js';

/** Rounds per trace unless --rounds says otherwise (see the header). */
export const DEFAULT_ROUNDS = 4;

export interface BenchRow extends ReplayMetrics {
  trace: string;
  /** Where the lookups came from: translation records, or the back-end's revealed misses. */
  replay: ReplayKind;
  /** Lookups per second over whole replays (replays/s x lookups). */
  lookupsPerSec: number;
  /** Replays (whole trace) per second — what benny measured. */
  replaysPerSec: number;
  /** Relative margin, in percent: the larger of benny's margin of error (any round) and half the spread between rounds. */
  marginPct: number;
  /** Lookups/s in each round, in run order. */
  roundLookupsPerSec: number[];
  /** benny's samples, over all rounds. */
  samples: number;
  /** Lookups/s relative to the fastest strategy on this trace (1 = fastest). */
  relative: number;
  /** Fastest on this trace. */
  best: boolean;
  /** Not the fastest, but the two overlap within their margins: this run cannot tell them apart. */
  withinMargin: boolean;
}

export interface BenchError {
  trace: string;
  strategy?: string;
  message: string;
}

export interface BenchOptions {
  /** Seconds of sampling per strategy, split over the rounds (benny maxTime per case: time / rounds). */
  time: number;
  /** Suites per trace, strategies in reverse order every other round (default 2). */
  rounds?: number;
  /** Write a chart of the rows' lookups/s (benny's page, viewable offline: chart.ts) to this .html file. */
  chart?: string;
  /** Progress lines (meant for stderr). */
  progress?: (line: string) => void;
}

export interface TraceResult {
  rows: BenchRow[];
  errors: BenchError[];
}

const rate = (n: number): string => (n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : `${(n / 1e3).toFixed(1)}k`);

/** Runs `fn` with console.log (benny's own chatter) redirected to `sink`. */
async function withConsole<T>(sink: (line: string) => void, fn: () => Promise<T>): Promise<T> {
  const saved = console.log;
  console.log = (...args: unknown[]) => sink(format(...args));
  try {
    return await fn();
  } finally {
    console.log = saved;
  }
}

export async function benchStrategies(
  trace: string, ops: OpStream, defs: readonly StrategyDefinition[], options: BenchOptions,
): Promise<TraceResult> {
  const progress = options.progress ?? (() => {});
  const errors: BenchError[] = [];
  const checked: { def: StrategyDefinition; metrics: ReplayMetrics; replayer: Replayer }[] = [];
  for (const def of defs) {
    try {
      checked.push({ def, metrics: analyse(ops, def), replayer: new Replayer(ops, def) });
    } catch (err) {
      errors.push({ trace, strategy: def.name, message: (err as Error).message });
      progress(`${trace}: ${def.name}: FAILED: ${(err as Error).message}`);
    }
  }
  if (checked.length === 0) return { rows: [], errors };

  const lookups = ops.lookups;
  const rounds = Math.max(1, Math.floor(options.rounds ?? DEFAULT_ROUNDS));
  const results = new Map<string, { ops: number[]; margin: number; samples: number }>();
  for (const { def } of checked) results.set(def.name, { ops: [], margin: 0, samples: 0 });
  // Warm-up: without it the first round of the first trace runs partly in unoptimised code.
  for (const { replayer } of checked) warmUp(replayer, WARM_UP_MS);
  // benny's chart page comes from the last round in table order (then its bars are replaced by the means).
  const chartRound = (rounds - 1) & ~1;
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? checked : [...checked].reverse();
    const summary = await suite(`${trace}${rounds > 1 ? ` (round ${round + 1}/${rounds})` : ''}`, order, {
      time: options.time / rounds, lookups, progress, chart: round === chartRound ? options.chart : undefined,
    });
    for (const r of summary.results) {
      const acc = results.get(r.name);
      if (acc === undefined) continue;
      acc.ops.push(r.ops);
      acc.margin = Math.max(acc.margin, r.margin);
      acc.samples += r.samples;
    }
  }

  const rows: BenchRow[] = [];
  for (const { def, metrics, replayer } of checked) {
    if (replayer.error !== null) {
      errors.push({ trace, strategy: def.name, message: replayer.error.message });
      continue;
    }
    const result = results.get(def.name);
    if (result === undefined || result.ops.length === 0) continue;
    const mean = result.ops.reduce((a, v) => a + v, 0) / result.ops.length;
    const spreadPct = ((Math.max(...result.ops) - Math.min(...result.ops)) / mean) * 50;
    rows.push({
      trace, replay: ops.replay, ...metrics,
      lookupsPerSec: mean * lookups,
      replaysPerSec: mean,
      marginPct: Math.max(result.margin, spreadPct),
      roundLookupsPerSec: result.ops.map((v) => v * lookups),
      samples: result.samples,
      relative: 0,
      best: false,
      withinMargin: false,
    });
  }
  markBest(rows);
  if (options.chart !== undefined) {
    makeChartSelfContained(options.chart, lookups, new Map(rows.map((r) => [r.strategy, r.replaysPerSec])));
    progress(`${trace}: chart written to ${options.chart}`);
  }
  return { rows, errors };
}

/** What benchIsolated() hands its worker (bench-worker.ts): strategies by name, the rest as given. */
export interface IsolatedJob {
  trace: string;
  ops: OpStream;
  strategies: string[];
  options: Omit<BenchOptions, 'progress'>;
}

export type FromBenchWorker =
  | { type: 'progress'; line: string }
  | { type: 'done'; result: TraceResult }
  | { type: 'failed'; message: string };

const BENCH_WORKER = new URL('./bench-worker.js', import.meta.url);

/**
 * benchStrategies() in a worker thread of its own: a fresh V8 isolate per trace, as a process
 * serving that one workload would have. In one isolate the code V8 shaped for the traces run
 * before (type feedback and inlining, in the strategies' methods as in the replay loop) runs
 * the next one too: `qemu-serve-tcp-recv` measured `coalescing` at 1.04x of the `dpdk` model
 * alone and 0.97-0.99x after the other fixtures. The op stream is copied to the worker.
 */
export function benchIsolated(
  trace: string, ops: OpStream, defs: readonly StrategyDefinition[], options: BenchOptions,
): Promise<TraceResult> {
  const { progress, ...rest } = options;
  const job: IsolatedJob = { trace, ops, strategies: defs.map((d) => d.name), options: rest };
  return new Promise((resolve, reject) => {
    let settled = false;
    const worker = new Worker(fileURLToPath(BENCH_WORKER), { workerData: job, name: `bench-${trace}` });
    worker.on('message', (message: FromBenchWorker) => {
      if (message.type === 'progress') {
        progress?.(message.line);
        return;
      }
      settled = true;
      if (message.type === 'done') resolve(message.result);
      else reject(new Error(`bench of ${trace} failed in its worker: ${message.message}`));
    });
    worker.on('error', (err) => {
      settled = true;
      reject(err);
    });
    worker.on('exit', (code) => {
      if (!settled) reject(new Error(`bench worker for ${trace} exited (code ${code}) without a result`));
    });
  });
}

/** Milliseconds each strategy replays before its first timed round. */
const WARM_UP_MS = 20;

function warmUp(replayer: Replayer, ms: number): void {
  const until = performance.now() + ms;
  do {
    for (let i = 0; i < 16; i++) replayer.run();
  } while (performance.now() < until && replayer.error === null);
}

/** Sets relative, best (the fastest) and withinMargin (the fastest's lower bound reached by this one's upper bound). */
export function markBest(rows: BenchRow[]): void {
  const fastest = rows.reduce<BenchRow | null>((f, r) => (f === null || r.replaysPerSec > f.replaysPerSec ? r : f), null);
  if (fastest === null) return;
  const floor = fastest.replaysPerSec * (1 - fastest.marginPct / 100);
  for (const row of rows) {
    row.relative = row.replaysPerSec / fastest.replaysPerSec;
    row.best = row === fastest;
    row.withinMargin = !row.best && row.replaysPerSec * (1 + row.marginPct / 100) >= floor;
  }
}

interface SuiteOptions {
  time: number;
  lookups: number;
  progress: (line: string) => void;
  chart?: string;
}

/** One benny suite over `cases` in the order given; with `chart`, benny's chart page of it, at that path. */
async function suite(name: string, cases: readonly { def: StrategyDefinition; replayer: Replayer }[], options: SuiteOptions) {
  const { lookups, progress } = options;
  const extras: ReturnType<typeof b.save>[] = [];
  let saved: string | undefined;
  if (options.chart) {
    // benny writes FOLDER/NAME.chart.html; it is renamed to the path asked for below.
    const file = options.chart;
    const base = basename(file, extname(file));
    saved = join(dirname(file), `${base}.chart.html`);
    extras.push(b.save({ file: base, folder: dirname(file), format: 'chart.html' }));
  }
  const summary = await withConsole((line) => {
    if (!/Saved to:/.test(line)) progress(line.trim());
  }, () => b.suite(
    name,
    ...cases.map(({ def, replayer }) => b.add(def.name, () => () => replayer.run())),
    // Benchmark.js's default 50 ms per sample would make 5 samples outlast a short maxTime.
    b.configure({ cases: { maxTime: options.time, minSamples: 5, minTime: Math.min(0.05, options.time / 8) } }),
    b.cycle((result) => {
      progress(`${name}: ${result.name.padEnd(12)} ${rate(result.ops * lookups).padStart(7)} lookups/s ±${result.margin.toFixed(1)}%`);
    }),
    b.complete(() => {}),
    ...extras,
  ));
  if (saved !== undefined && options.chart !== undefined && saved !== options.chart) renameSync(saved, options.chart);
  return summary;
}

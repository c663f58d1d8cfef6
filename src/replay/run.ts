/**
 * Benchmarks strategies on one op stream with benny: one suite per trace, one case per
 * strategy; a case call is one whole replay starting from empty caches, so
 * lookups/s = replays/s x lookups in the trace (the time includes the trace's UPDATEs and
 * INVALIDATEs, not creating the caches: see Replayer). Before timing, every strategy gets one checked
 * analysis replay (hit rate, misses sent, evictions, memory); a strategy that answers
 * wrongly is reported as an error and not timed.
 */
import { format } from 'node:util';
import { renameSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import b from 'benny';
import type { StrategyDefinition } from '../iotlb/strategy.js';
import type { OpStream, ReplayKind } from './ops.js';
import { Replayer, analyse, type ReplayMetrics } from './replay.js';
import { makeChartSelfContained } from './chart.js';

export interface BenchRow extends ReplayMetrics {
  trace: string;
  /** Where the lookups came from: translation records, or the back-end's revealed misses. */
  replay: ReplayKind;
  /** Lookups per second over whole replays (replays/s x lookups). */
  lookupsPerSec: number;
  /** Replays (whole trace) per second — what benny measured. */
  replaysPerSec: number;
  /** benny's relative margin of error, in percent. */
  marginPct: number;
  samples: number;
  /** Lookups/s relative to the fastest strategy on this trace (1 = fastest). */
  relative: number;
  /** Fastest on this trace. */
  best: boolean;
}

export interface BenchError {
  trace: string;
  strategy?: string;
  message: string;
}

export interface BenchOptions {
  /** Seconds of sampling per case (benny maxTime). */
  time: number;
  /** Write benny's chart (lookups/s per strategy, viewable offline: chart.ts) to this .html file. */
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
  const extras: ReturnType<typeof b.save>[] = [];
  let saved: string | undefined;
  if (options.chart) {
    // benny writes FOLDER/NAME.chart.html; it is renamed to the path asked for below.
    const file = options.chart;
    const name = basename(file, extname(file));
    saved = join(dirname(file), `${name}.chart.html`);
    extras.push(b.save({ file: name, folder: dirname(file), format: 'chart.html' }));
  }
  const summary = await withConsole((line) => {
    if (!/Saved to:/.test(line)) progress(line.trim());
  }, () => b.suite(
    trace,
    ...checked.map(({ def, replayer }) => b.add(def.name, () => () => replayer.run())),
    b.configure({ cases: { maxTime: options.time, minSamples: 5 } }),
    b.cycle((result) => {
      progress(`${trace}: ${result.name.padEnd(12)} ${rate(result.ops * lookups).padStart(7)} lookups/s ±${result.margin.toFixed(1)}%`);
    }),
    b.complete(() => {}),
    ...extras,
  ));

  if (saved !== undefined && options.chart !== undefined && saved !== options.chart) renameSync(saved, options.chart);
  if (options.chart !== undefined) makeChartSelfContained(options.chart, lookups);
  if (options.chart !== undefined) progress(`${trace}: chart written to ${options.chart}`);

  const rows: BenchRow[] = [];
  for (const { def, metrics, replayer } of checked) {
    if (replayer.error !== null) {
      errors.push({ trace, strategy: def.name, message: replayer.error.message });
      continue;
    }
    const result = summary.results.find((r) => r.name === def.name);
    if (result === undefined) continue;
    rows.push({
      trace, replay: ops.replay, ...metrics,
      lookupsPerSec: result.ops * lookups,
      replaysPerSec: result.ops,
      marginPct: result.margin,
      samples: result.samples,
      relative: 0,
      best: false,
    });
  }
  const fastest = Math.max(...rows.map((r) => r.replaysPerSec));
  for (const row of rows) {
    row.relative = row.replaysPerSec / fastest;
    row.best = row.replaysPerSec === fastest;
  }
  return { rows, errors };
}

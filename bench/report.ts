/**
 * bench/report.md: a list of sections, each rendered to Markdown. bench/run-all.ts builds
 * the sections (one builder per section, in order) and writes the file; a new section =
 * one more builder in its `sections` array.
 */
import os from 'node:os';
import { DEFAULT_ROUNDS, type BenchError, type BenchRow } from '../src/replay/run.js';
import { formatBytes, formatRate } from '../src/replay/render.js';

export interface ReportSection {
  title: string;
  /** Markdown body (without the heading). */
  body: string;
}

/** What every section builder gets: the results measured so far in this run. */
export interface ReportContext {
  /** Seconds of sampling per case. */
  time: number;
  /** Registered strategies on every fixture trace. */
  rows: BenchRow[];
  /** The bench-only `one-entry` strategy on every fixture trace (replay-engine ceiling). */
  engineRows: BenchRow[];
  errors: BenchError[];
  /** Chart files written, by trace. */
  charts: Map<string, string>;
  /** Path of the report, for relative links. */
  reportDir: string;
}

export type SectionBuilder = (ctx: ReportContext) => ReportSection | null | Promise<ReportSection | null>;

export interface Target {
  name: string;
  value: number | null;
  goal: number;
  unit: string;
}

export const TARGET_COALESCING_VS_DPDK_2M = 2;
export const TARGET_ENGINE_LOOKUPS = 10e6;

const cell = (s: string): string => s.replace(/\|/g, '\\|');
const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '-');

export function markdownTable(head: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const sep = head.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  return [head, sep, ...rows].map((r) => `| ${r.map(cell).join(' | ')} |`).join('\n');
}

function rowsByTrace(rows: readonly BenchRow[]): Map<string, BenchRow[]> {
  const map = new Map<string, BenchRow[]>();
  for (const r of rows) {
    const list = map.get(r.trace) ?? [];
    list.push(r);
    map.set(r.trace, list);
  }
  return map;
}

/** lookups/s of `strategy` over `baseline` on `trace`, measured side by side in one suite. */
export function ratio(rows: readonly BenchRow[], trace: string, strategy: string, baseline = 'dpdk'): number | null {
  const a = rows.find((r) => r.trace === trace && r.strategy === strategy);
  const b = rows.find((r) => r.trace === trace && r.strategy === baseline);
  return a && b ? a.lookupsPerSec / b.lookupsPerSec : null;
}

export function environmentSection(ctx: ReportContext): ReportSection {
  const cpus = os.cpus();
  const [l1, l5] = os.loadavg();
  return {
    title: 'Environment',
    body: [
      `- date: ${new Date().toISOString()}`,
      `- node ${process.version} (${process.arch}), ${cpus.length} CPU(s): ${cpus[0]?.model ?? 'unknown'}`,
      `- load average at the end of the run: ${l1.toFixed(2)} (1 min), ${l5.toFixed(2)} (5 min) — margins grow with load`,
      `- ${ctx.time} s of sampling per strategy and trace (benny / benchmark.js); \`BENCH_TIME=s npm run bench\` to change`,
    ].join('\n'),
  };
}

export function targetsSection(ctx: ReportContext): ReportSection {
  const targets: Target[] = [];
  for (const trace of [...new Set(ctx.rows.map((r) => r.trace))].filter((t) => /2m/.test(t) && /static/.test(t))) {
    targets.push({ name: `coalescing / dpdk lookups/s on ${trace}`, value: ratio(ctx.rows, trace, 'coalescing'), goal: TARGET_COALESCING_VS_DPDK_2M, unit: '×' });
  }
  const engineBest = ctx.engineRows.reduce<BenchRow | null>((best, r) => (best === null || r.lookupsPerSec > best.lookupsPerSec ? r : best), null);
  targets.push({
    name: `replay engine with a trivial strategy (one-entry${engineBest ? `, best trace: ${engineBest.trace}` : ''})`,
    value: engineBest?.lookupsPerSec ?? null, goal: TARGET_ENGINE_LOOKUPS, unit: 'lookups/s',
  });
  const fmt = (v: number, unit: string): string => (unit === '×' ? `${v.toFixed(2)}×` : `${formatRate(v)} ${unit}`);
  return {
    title: 'Targets',
    body: markdownTable(['target', 'goal', 'measured', ''], targets.map((t) => [
      t.name, `≥ ${fmt(t.goal, t.unit)}`, t.value === null ? 'not measured' : fmt(t.value, t.unit),
      t.value === null ? '?' : t.value >= t.goal ? 'met' : '**missed**',
    ]), ['l', 'r', 'r', 'l']),
  };
}

export function strategiesSection(ctx: ReportContext): ReportSection {
  const parts: string[] = [
    'Each fixture trace replayed against empty caches of every strategy (one cache per virtqueue; IOTLB',
    'updates to every queue\'s cache), all strategies of a trace side by side in benny suites in a worker',
    `thread of its own (a fresh V8 isolate per trace), ${DEFAULT_ROUNDS} rounds`,
    'with the order reversed every other round; a figure is the mean of the rounds, ±% the larger of benny\'s',
    'margin and half the spread between rounds; ✓ fastest, ≈ within the margin of the fastest. One',
    'benchmark call = one whole replay, so lookups/s = replays/s × lookups in the trace and includes the',
    'trace\'s updates and invalidates (caches are created once and cleared between replays). Every lookup is checked against an exact',
    'reference IOTLB. "misses sent": IOTLB misses a back-end would send (PendingMisses: once per 4 KiB',
    'page until answered); "extra": misses on mappings the cache had evicted. Memory is a model:',
    'peak entries × bytes per entry of the strategy\'s structure (src/replay/memory.ts).',
    '',
  ];
  for (const [trace, rows] of rowsByTrace(ctx.rows)) {
    const chart = ctx.charts.get(trace);
    parts.push(`### ${trace}${chart ? ` ([chart](${chart}))` : ''}`, '');
    parts.push(markdownTable(
      ['strategy', 'lookups/s', '±%', 'vs dpdk', 'hit rate', 'extra misses', 'misses sent', 'evictions', 'peak entries', 'memory ≈'],
      rows.map((r) => [
        r.best ? `**${r.strategy}** ✓` : r.withinMargin ? `${r.strategy} ≈` : r.strategy,
        formatRate(r.lookupsPerSec), r.marginPct.toFixed(1),
        (() => { const x = ratio(ctx.rows, trace, r.strategy); return x === null ? '-' : `${x.toFixed(2)}×`; })(),
        pct(r.hitRate), String(r.extraMisses), String(r.missesSent), String(r.evictions),
        r.totalPeakEntries === r.peakEntries ? String(r.peakEntries) : `${r.peakEntries} (${r.totalPeakEntries} total)`,
        formatBytes(r.approxBytes),
      ]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ), '');
  }
  return { title: 'IOTLB strategies on recorded traces', body: parts.join('\n').trimEnd() };
}

export function engineSection(ctx: ReportContext): ReportSection {
  return {
    title: 'Replay engine ceiling',
    body: [
      'The bench-only `one-entry` strategy (src/replay/trivial.ts) remembers only the latest mapping: about',
      'the cheapest cache possible, so its lookups/s is what the replay loop itself (op decoding, reference',
      'check, refills after its many evictions) allows. It stays well above the real strategies on every',
      'trace except where one of them is itself trivial (static-1g: a single 1 GiB entry), so the engine',
      'does not hide their differences.',
      '',
      markdownTable(['trace', 'lookups/s', '±%', 'hit rate', 'extra misses'], ctx.engineRows.map((r) => [
        r.trace, formatRate(r.lookupsPerSec), r.marginPct.toFixed(1), pct(r.hitRate), String(r.extraMisses),
      ]), ['l', 'r', 'r', 'r', 'r']),
    ].join('\n'),
  };
}

export function errorsSection(ctx: ReportContext): ReportSection | null {
  if (ctx.errors.length === 0) return null;
  return {
    title: 'Errors',
    body: ctx.errors.map((e) => `- ${e.trace}${e.strategy ? ` / ${e.strategy}` : ''}: ${e.message}`).join('\n'),
  };
}

export function renderReport(sections: readonly ReportSection[]): string {
  const out = [
    '# Benchmark report',
    '',
    'Generated by `npm run bench` (bench/run-all.ts); do not edit by hand.',
    '',
  ];
  for (const s of sections) out.push(`## ${s.title}`, '', s.body, '');
  return out.join('\n');
}

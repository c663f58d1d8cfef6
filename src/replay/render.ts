/** Output of `bench`: a table per trace, CSV rows, and the JSON document. */
import type { ChalkInstance } from 'chalk';
import Table from 'cli-table3';
import type { BenchError, BenchRow } from './run.js';
import { renderProfile, type WorkloadProfile } from './profile.js';

export function formatRate(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(0);
}

export function formatBytes(n: number | null): string {
  if (n === null) return '-';
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

const pct = (x: number): string => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '-');

/**
 * One table for one trace's rows; the fastest strategy gets a ✓ (and green, with colour), any
 * other whose margin reaches it a ≈. With `profile`, the kind of replay and of workload go
 * between the title and the table.
 */
export function renderTable(
  trace: string, rows: readonly BenchRow[], chalk: ChalkInstance, baseline = 'dpdk', profile?: WorkloadProfile,
): string {
  const base = rows.find((r) => r.strategy === baseline);
  const table = new Table({
    head: ['strategy', 'lookups/s', '±%', `vs ${baseline}`, 'hit rate', 'extra misses', 'misses sent', 'evictions', 'peak entries', 'memory ≈'],
    colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    style: { head: chalk.level > 0 ? ['cyan'] : [], border: [], compact: true },
  });
  for (const r of rows) {
    const name = r.best ? chalk.green.bold(`✓ ${r.strategy}`) : r.withinMargin ? chalk.green(`≈ ${r.strategy}`) : `  ${r.strategy}`;
    const speed = formatRate(r.lookupsPerSec);
    table.push([
      name,
      r.best ? chalk.green.bold(speed) : speed,
      r.marginPct.toFixed(1),
      base === undefined ? '-' : `${(r.lookupsPerSec / base.lookupsPerSec).toFixed(2)}×`,
      pct(r.hitRate),
      String(r.extraMisses),
      String(r.missesSent),
      String(r.evictions),
      r.totalPeakEntries === r.peakEntries ? String(r.peakEntries) : `${r.peakEntries} (${r.totalPeakEntries} total)`,
      formatBytes(r.approxBytes),
    ]);
  }
  const about = profile === undefined ? '' : `${renderProfile(profile).map((l) => chalk.dim(l)).join('\n')}\n`;
  const rounds = rows[0]?.roundLookupsPerSec.length ?? 0;
  const key = chalk.dim(`✓ fastest · ≈ within the margin of the fastest · ±%: larger of benny's margin and half the spread of ${rounds} round(s)`);
  return `${chalk.bold(trace)}\n${about}${table.toString()}\n${key}`;
}

export const CSV_COLUMNS = [
  'trace', 'replay', 'strategy', 'lookups', 'lookupsPerSec', 'marginPct', 'replaysPerSec', 'samples', 'relative', 'best', 'withinMargin',
  'hits', 'misses', 'extraMisses', 'denied', 'hitRate', 'missesSent', 'evictions', 'peakEntries', 'totalPeakEntries',
  'approxBytes', 'memoryModel',
] as const satisfies readonly (keyof BenchRow)[];

function csvField(v: unknown): string {
  const s = v === null || v === undefined || (typeof v === 'number' && Number.isNaN(v)) ? '' : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function renderCsv(rows: readonly BenchRow[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const r of rows) lines.push(CSV_COLUMNS.map((c) => csvField(r[c])).join(','));
  return `${lines.join('\n')}\n`;
}

/** What `bench` returns (its --json document; NaN hit rates print as null). */
export interface BenchJson {
  /** Seconds of sampling per strategy and trace (all rounds). */
  time: number;
  /** Rounds per trace (strategies in reverse order every other round). */
  rounds: number;
  node: string;
  /** One per trace that ran: the kind of replay and of workload (profile.ts). */
  traces: WorkloadProfile[];
  rows: BenchRow[];
  errors: BenchError[];
  /** Bundled traces left out of a run without TRACE arguments (nothing to replay, e.g. no IOMMU). */
  skipped: { trace: string; reason: string }[];
}

/**
 * `npm run bench`: the offline IOTLB strategy benchmark on the bundled fixture traces (the set
 * `vhost-iotlb bench` runs without arguments: fixtures/traces/*.vhtrace and recorded/*.vhtrace,
 * real sessions first), written to bench/report.md (+ one benny chart per trace under bench/charts/).
 * A bundled trace with nothing to replay (a session without an IOMMU) is skipped, not an error.
 *
 *   BENCH_TIME=seconds   sampling per strategy and trace (default 1)
 *   BENCH_LIVE=0         skip the sections measured against live peers (bench/live-sections.ts,
 *                        and dirty logging: bench/dirty-log.ts)
 *   BENCH_QUEUE_PAIRS=1  the data path against DPDK with one queue pair only (default 1,2,4:
 *                        with 2 and 4, one and two workers; ~7 minutes in all)
 *                        Workers across cores (bench/worker-scaling.ts) runs where there are 4 CPUs
 *                        or more, and says "not measured" on fewer.
 *   BENCH_GUEST_IOMMU=1  also run bench/guest-iommu.ts (QEMU guests behind a vIOMMU through each
 *                        back-end, one round; opt-in: it takes ~10 minutes)
 *
 * The report is a list of sections (`sections` below): each builder gets the results of
 * this run and returns one Markdown section. To add one (e.g. the data path against DPDK),
 * write a SectionBuilder in bench/report.ts or here and add it to the array.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { strategies } from '../src/iotlb/registry.js';
import { EmptyTraceError, loadOps } from '../src/replay/ops.js';
import { bundledTraces, packageRoot, traceName } from '../src/replay/fixtures.js';
import { benchIsolated } from '../src/replay/run.js';
import { oneEntry } from '../src/replay/trivial.js';
import { TraceFormatError } from '../src/trace/format.js';
import {
  engineSection, environmentSection, errorsSection, renderReport, strategiesSection, targetsSection,
  type ReportContext, type ReportSection, type SectionBuilder,
} from './report.js';
import { datapathSection, iommuTableSection, missPolicySection, workerScalingSection } from './live-sections.js';
import { columnsFor, guestIommuMarkdown, runGuestIommuBench } from './guest-iommu.js';
import { answerHelp, refuseArguments } from './options.js';

/** bench/guest-iommu.ts, one round, only with BENCH_GUEST_IOMMU=1 (and not with BENCH_LIVE=0). */
const guestIommuSection: SectionBuilder = async (): Promise<ReportSection | null> => {
  if (process.env.BENCH_LIVE === '0' || process.env.BENCH_GUEST_IOMMU !== '1') return null;
  const title = 'A real QEMU guest behind a vIOMMU through each back-end (guest pktgen / guest rx count)';
  try {
    // 120 s a cell at most: DPDK's vhost with its INVALIDATE end fixed stalls now and then behind a lazy guest.
    const cells = await runGuestIommuBench({ rounds: 1, jobTimeoutS: 120, progress: (l) => process.stderr.write(`  ${l}\n`) });
    return {
      title,
      body: 'One round per cell, every cell a fresh back-end and guest (`node dist/bench/guest-iommu.js --rounds 3` for more); ' +
        'frames per second as the guest counts them (pktgen\'s rate; rx_packets over the guest\'s uptime).\n\n' +
        guestIommuMarkdown(cells, columnsFor({})),
    };
  } catch (err) {
    return { title, body: `**not measured**: ${(err as Error).message}` };
  }
};

/**
 * Dirty-page logging on the data path (bench/dirty-log.ts: serve and DPDK's vhost, LOG_ALL off
 * and on, same run), one round in a child process (it pins itself to a CPU); a live section,
 * so not with BENCH_LIVE=0.
 */
const dirtyLogSection: SectionBuilder = (): ReportSection | null => {
  if (process.env.BENCH_LIVE === '0') return null;
  const title = 'Data path with dirty-page logging (live migration): serve and DPDK vhost, LOG_ALL off vs on';
  const script = join(dirname(fileURLToPath(import.meta.url)), 'dirty-log.js');
  const run = spawnSync(process.execPath, [script, '--seconds', '2', '--rounds', '1'], { encoding: 'utf8', timeout: 20 * 60_000 });
  const out = run.stdout ?? '';
  const at = out.indexOf('| back-end');
  if (run.status !== 0 || at < 0) return { title, body: `**not measured** (exit ${run.status}): ${(run.stderr ?? '').slice(-2000)}` };
  return {
    title,
    body: '64-byte frames through loopback with the repo\'s front-end, logging switched on as QEMU does at a migration\'s start; one round '
      + '(`node dist/bench/dirty-log.js --rounds 3` for more), the four back-ends alternated in 100 ms slices.\n\n' + out.slice(at).trim(),
  };
};

/** The report, in order. Add sections here. */
const sections: SectionBuilder[] = [
  targetsSection,
  strategiesSection,
  engineSection,
  datapathSection,
  workerScalingSection,
  dirtyLogSection,
  iommuTableSection,
  missPolicySection,
  guestIommuSection,
  errorsSection,
  environmentSection,
];

async function main(): Promise<void> {
  const root = packageRoot();
  const time = Number(process.env.BENCH_TIME ?? 1);
  if (!(time > 0)) throw new Error(`BENCH_TIME must be a positive number of seconds, got "${process.env.BENCH_TIME}"`);
  const benchDir = join(root, 'bench');
  const chartDir = join(benchDir, 'charts');
  mkdirSync(chartDir, { recursive: true });
  const progress = (line: string): void => {
    process.stderr.write(`${line}\n`);
  };

  const ctx: ReportContext = { time, rows: [], engineRows: [], errors: [], charts: new Map(), reportDir: benchDir };
  const traces = bundledTraces(root);
  if (traces.length === 0) throw new Error(`no fixture traces in ${join(root, 'fixtures', 'traces')}`);
  const skipped: string[] = [];
  for (const [i, file] of traces.entries()) {
    const trace = traceName(file);
    progress(`[${i + 1}/${traces.length}] ${trace}`);
    let ops;
    try {
      ops = await loadOps(file, relative(root, file));
    } catch (err) {
      // As `vhost-iotlb bench` does: a bundled session without IOTLB traffic is a fixture for other tests.
      if (err instanceof EmptyTraceError) {
        skipped.push(trace);
        progress(`${trace}: skipped: ${err.message}`);
        continue;
      }
      if (!(err instanceof TraceFormatError)) throw err;
      ctx.errors.push({ trace, message: err.message });
      progress(`error: ${err.message}`);
      continue;
    }
    const chart = join(chartDir, `${trace}.html`);
    const result = await benchIsolated(trace, ops, strategies, { time, chart, progress: (l) => progress(`  ${l}`) });
    ctx.rows.push(...result.rows);
    ctx.errors.push(...result.errors);
    ctx.charts.set(trace, relative(benchDir, chart));
    const engine = await benchIsolated(trace, ops, [oneEntry], { time, progress: (l) => progress(`  ${l}`) });
    ctx.engineRows.push(...engine.rows);
    ctx.errors.push(...engine.errors);
  }

  const built: ReportSection[] = [];
  for (const build of sections) {
    const section = await build(ctx);
    if (section !== null) built.push(section);
  }
  const report = join(benchDir, 'report.md');
  writeFileSync(report, renderReport(built));
  process.stdout.write(`${built.find((s) => s.title === 'Targets')?.body ?? ''}\n\nwrote ${relative(process.cwd(), report)}\n`);
  if (skipped.length > 0) process.stderr.write(`skipped (nothing to replay): ${skipped.join(', ')}\n`);
  if (ctx.errors.length > 0) {
    process.stderr.write(`${ctx.errors.length} error(s):\n${ctx.errors.map((e) => `  ${e.message}`).join('\n')}\n`);
    process.exitCode = 1;
  }
}

answerHelp(import.meta.url);
refuseArguments('run-all');
await main();

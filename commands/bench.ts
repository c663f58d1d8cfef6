import { writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Args, Flags } from '@oclif/core';
import { ColorCommand } from '../src/cli/base-command.js';
import { TraceFormatError } from '../src/trace/format.js';
import { strategyNames } from '../src/iotlb/registry.js';
import { EmptyTraceError, loadOps, type OpStream } from '../src/replay/ops.js';
import { bundledTraces, parseStrategies, traceName } from '../src/replay/fixtures.js';
import { workloadProfile, type WorkloadProfile } from '../src/replay/profile.js';
import { benchIsolated, DEFAULT_ROUNDS, type BenchError, type BenchRow } from '../src/replay/run.js';
import { renderCsv, renderTable, type BenchJson } from '../src/replay/render.js';
import { outputPathProblem } from '../src/cli/paths.js';

const DEFAULT_TIME = 1;
/**
 * Without --time, the sampling seconds of a whole run are at most this (split evenly over
 * traces x strategies, at most DEFAULT_TIME each), so that `bench` on a fresh clone stays
 * under a minute with load, checked replays and benny's calibration on top, however many
 * fixtures are bundled.
 */
const DEFAULT_BUDGET = 26;

export default class Bench extends ColorCommand {
  static override summary = 'Benchmark IOTLB cache strategies by replaying recorded traces.';
  static override description = [
    'Each trace\'s IOTLB UPDATE/INVALIDATE messages and translation records are replayed, in order, against empty '
    + 'caches of each strategy (one cache per virtqueue, as in DPDK; updates go to every queue\'s cache). Every lookup '
    + 'is checked against an exact reference IOTLB: a strategy that answers a wrong address or length, or hits on an '
    + 'invalidated mapping, fails with the op index instead of winning.',
    'A trace with no translation records (recorded by the `trace record` proxy, which sees none) is replayed from the '
    + 'misses the back-end revealed: each back-end IOTLB MISS is a lookup of that IOVA and access, at that moment, '
    + 'that the recorded back-end missed (one cache per connection). Its counts are then about those misses only: hit '
    + 'rate is the share of them a strategy would have answered from its cache (possible only where the front-end had '
    + 'mapped the page and not invalidated it), lookups/s is replays/s x misses. The lookups the back-end hit are not '
    + 'in the trace. Each trace\'s table says which replay ran (JSON: traces[].replay, rows[].replay); see '
    + 'docs/trace-format.md, "Replaying a trace".',
    'Above each table: the workload — most mappings live at once, UPDATEs and INVALIDATEs per 1000 lookups, the span '
    + 'of IOVAs touched and the UPDATE sizes (JSON: traces[]).',
    'Each trace runs in a worker thread of its own (a fresh V8 isolate, so code compiled for one trace does not run the '
    + 'next) and in --rounds rounds (default ' + DEFAULT_ROUNDS + '), the strategies in reverse order every other round, the sampling time '
    + 'split over them. Reported per trace and strategy: lookups/s (whole replays per second x lookups, the mean of the '
    + 'rounds; its margin is the larger of benny\'s margin of error and half the spread between rounds; the fastest is '
    + 'marked ✓, any other whose margin reaches the fastest\'s ≈), '
    + 'hit rate, extra misses (on mappings the cache evicted), IOTLB misses a back-end would send (one per 4 KiB page '
    + 'until answered), evictions, peak entries, and approximate memory (peak entries x the strategy\'s bytes per entry).',
    'Without TRACE, every bundled trace runs: fixtures/traces/*.vhtrace and the proxy recordings in '
    + 'fixtures/traces/recorded/, real sessions first; a bundled one with nothing to replay (a session without an '
    + 'IOMMU) is listed as skipped. Without --time, the sampling time per strategy is 1 s, less when that would make '
    + `the whole run sample for more than ${DEFAULT_BUDGET} s. A damaged or empty trace given as TRACE is reported (with the `
    + 'byte offset) and skipped; the others still run, and the command exits with status 2 at the end. Progress goes '
    + 'to stderr. With --json, one document on stdout: { time, node, traces (one workload profile per trace), rows '
    + '(one per trace and strategy), errors, skipped }.',
  ].join('\n\n');

  static override examples = [
    '<%= config.bin %> <%= command.id %>',
    '<%= config.bin %> <%= command.id %> fixtures/traces/static-2m.vhtrace --strategy dpdk,coalescing',
    '<%= config.bin %> <%= command.id %> my.vhtrace --time 3 --chart out/my.html --csv out/my.csv',
    '<%= config.bin %> <%= command.id %> --json --time 0.2 | jq \'.rows[] | {trace, strategy, lookupsPerSec}\'',
  ];

  static override strict = false;
  static override enableJsonFlag = true;

  static override args = {
    trace: Args.string({ description: 'trace files (default: every bundled fixtures/traces/*.vhtrace and recorded/*.vhtrace)' }),
  };

  static override flags = {
    strategy: Flags.string({
      multiple: true,
      summary: `strategies to compare, comma separated or repeated, or "all" (default): ${strategyNames().join(', ')}`,
    }),
    csv: Flags.string({ summary: 'also write the rows as CSV to this file' }),
    chart: Flags.string({
      summary: 'also write benny\'s chart (lookups/s; works offline) to this .html file; with several traces one file per trace (FILE-TRACE.html)',
    }),
    rounds: Flags.integer({
      summary: `rounds per trace, strategies in reverse order every other round; --time is split over them (default ${DEFAULT_ROUNDS})`,
      min: 1,
      max: 20,
      default: DEFAULT_ROUNDS,
    }),
    time: Flags.string({
      char: 't',
      summary: `seconds of sampling per strategy and trace (default ${DEFAULT_TIME}, or less to keep a run's sampling within ${DEFAULT_BUDGET} s)`,
    }),
  };

  async run(): Promise<BenchJson> {
    const { argv, flags } = await this.parse(Bench);
    let defs;
    try {
      defs = parseStrategies(flags.strategy);
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    const asked = Number(flags.time);
    if (flags.time !== undefined && !(asked > 0 && asked <= 3600)) {
      this.error(`--time must be a number of seconds in (0, 3600], got "${flags.time}"`, { exit: 2 });
    }
    for (const [flag, path] of [['--csv', flags.csv], ['--chart', flags.chart]] as const) {
      const problem = path === undefined ? null : outputPathProblem(flag, path);
      if (problem) this.error(problem, { exit: 2 });
    }
    const bundled = (argv as string[]).length === 0;
    const traces = bundled ? bundledTraces(this.config.root) : (argv as string[]);
    if (traces.length === 0) this.error('no traces given and no fixtures/traces/*.vhtrace found', { exit: 2 });
    const time = flags.time !== undefined ? asked : Math.min(DEFAULT_TIME, DEFAULT_BUDGET / (traces.length * defs.length));

    const json = this.jsonEnabled();
    const chalk = this.chalkFor(flags.color, json);
    const progress = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    const rows: BenchRow[] = [];
    const profiles: WorkloadProfile[] = [];
    const skipped: BenchJson['skipped'] = [];
    const errors: BenchError[] = [];
    const fail = (error: BenchError): void => {
      errors.push(error);
      process.stderr.write(`error: ${error.message}\n`);
    };

    for (const [index, file] of traces.entries()) {
      const trace = traceName(file);
      progress(`[${index + 1}/${traces.length}] ${file}`);
      let ops: OpStream;
      try {
        ops = await loadOps(file);
      } catch (err) {
        // A bundled session without IOTLB traffic (no IOMMU) is a fixture for other tests, not a failure.
        if (bundled && err instanceof EmptyTraceError) {
          skipped.push({ trace, reason: err.message });
          progress(`${trace}: skipped: ${err.message}`);
        } else if (err instanceof TraceFormatError || err instanceof EmptyTraceError) fail({ trace, message: err.message });
        else if ((err as NodeJS.ErrnoException).code === 'ENOENT') fail({ trace, message: `${file}: no such file` });
        else if ((err as NodeJS.ErrnoException).code === 'EISDIR') fail({ trace, message: `${file}: is a directory` });
        else throw err;
        continue;
      }
      progress(`${trace}: ${ops.lookups} lookups (${ops.replay}), ${ops.updates} updates, ${ops.invalidates} invalidates, `
        + `${ops.slots.length} cache(s)${ops.rejected ? `, ${ops.rejected} IOTLB messages rejected` : ''}`);
      const profile = workloadProfile(trace, ops);
      const result = await benchIsolated(trace, ops, defs, {
        time,
        rounds: flags.rounds,
        chart: flags.chart === undefined ? undefined : chartFile(flags.chart, trace, traces.length > 1),
        progress: (line) => progress(`  ${line}`),
      });
      for (const e of result.errors) fail(e);
      rows.push(...result.rows);
      profiles.push(profile);
      if (!json && result.rows.length > 0) process.stdout.write(`${renderTable(trace, result.rows, chalk, 'dpdk', profile)}\n`);
    }

    if (flags.csv !== undefined) {
      writeFileSync(flags.csv, renderCsv(rows));
      progress(`CSV written to ${flags.csv}`);
    }
    if (errors.length > 0) {
      process.stderr.write(`${errors.length} error(s); see above\n`);
      // The rows that did run are still the result (printed with --json); the status says not all did.
      process.exitCode = 2;
    }
    return { time, rounds: flags.rounds, node: process.version, traces: profiles, rows, errors, skipped };
  }
}

/** FILE.html for one trace; FILE-TRACE.html when there are several. */
function chartFile(file: string, trace: string, several: boolean): string {
  if (!several) return file;
  const ext = extname(file) || '.html';
  return `${file.slice(0, file.length - extname(file).length)}-${trace}${ext}`;
}

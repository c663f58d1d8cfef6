import { writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Args, Flags } from '@oclif/core';
import { ColorCommand } from '../src/cli/base-command.js';
import { TraceFormatError } from '../src/trace/format.js';
import { strategyNames } from '../src/iotlb/registry.js';
import { EmptyTraceError, loadOps, type OpStream } from '../src/replay/ops.js';
import { fixtureTraces, parseStrategies, traceName } from '../src/replay/fixtures.js';
import { benchStrategies, type BenchError, type BenchRow } from '../src/replay/run.js';
import { renderCsv, renderTable, type BenchJson } from '../src/replay/render.js';
import { outputPathProblem } from '../src/cli/paths.js';

const DEFAULT_TIME = 1;

export default class Bench extends ColorCommand {
  static override summary = 'Benchmark IOTLB cache strategies by replaying recorded traces.';
  static override description = [
    'Each trace\'s IOTLB UPDATE/INVALIDATE messages and translation records are replayed, in order, against empty '
    + 'caches of each strategy (one cache per virtqueue, as in DPDK; updates go to every queue\'s cache). Every lookup '
    + 'is checked against an exact reference IOTLB: a strategy that answers a wrong address or length, or hits on an '
    + 'invalidated mapping, fails with the op index instead of winning.',
    'Reported per trace and strategy: lookups/s (whole replays per second x lookups, with benny\'s margin of error), '
    + 'hit rate, extra misses (on mappings the cache evicted), IOTLB misses a back-end would send (one per 4 KiB page '
    + 'until answered), evictions, peak entries, and approximate memory (peak entries x the strategy\'s bytes per entry).',
    'Without TRACE, every bundled fixtures/traces/*.vhtrace is used. A damaged or empty trace is reported (with the '
    + 'byte offset) and skipped; the others still run, and the command exits with status 2 at the end. Progress goes '
    + 'to stderr. With --json, one document on stdout: { time, node, rows (one per trace and strategy), errors }.',
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
    trace: Args.string({ description: 'trace files (default: every bundled fixtures/traces/*.vhtrace)' }),
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
    time: Flags.string({ char: 't', summary: `seconds of sampling per strategy and trace (default ${DEFAULT_TIME})` }),
  };

  async run(): Promise<BenchJson> {
    const { argv, flags } = await this.parse(Bench);
    let defs;
    try {
      defs = parseStrategies(flags.strategy);
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    const time = flags.time === undefined ? DEFAULT_TIME : Number(flags.time);
    if (!(time > 0 && time <= 3600)) this.error(`--time must be a number of seconds in (0, 3600], got "${flags.time}"`, { exit: 2 });
    for (const [flag, path] of [['--csv', flags.csv], ['--chart', flags.chart]] as const) {
      const problem = path === undefined ? null : outputPathProblem(flag, path);
      if (problem) this.error(problem, { exit: 2 });
    }
    const traces = (argv as string[]).length > 0 ? (argv as string[]) : fixtureTraces(this.config.root);
    if (traces.length === 0) this.error('no traces given and no fixtures/traces/*.vhtrace found', { exit: 2 });

    const json = this.jsonEnabled();
    const chalk = this.chalkFor(flags.color, json);
    const progress = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    const rows: BenchRow[] = [];
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
        if (err instanceof TraceFormatError || err instanceof EmptyTraceError) fail({ trace, message: err.message });
        else if ((err as NodeJS.ErrnoException).code === 'ENOENT') fail({ trace, message: `${file}: no such file` });
        else if ((err as NodeJS.ErrnoException).code === 'EISDIR') fail({ trace, message: `${file}: is a directory` });
        else throw err;
        continue;
      }
      progress(`${trace}: ${ops.lookups} lookups, ${ops.updates} updates, ${ops.invalidates} invalidates, `
        + `${ops.slots.length} cache(s)${ops.rejected ? `, ${ops.rejected} IOTLB messages rejected` : ''}`);
      const result = await benchStrategies(trace, ops, defs, {
        time,
        chart: flags.chart === undefined ? undefined : chartFile(flags.chart, trace, traces.length > 1),
        progress: (line) => progress(`  ${line}`),
      });
      for (const e of result.errors) fail(e);
      rows.push(...result.rows);
      if (!json && result.rows.length > 0) process.stdout.write(`${renderTable(trace, result.rows, chalk)}\n`);
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
    return { time, node: process.version, rows, errors };
  }
}

/** FILE.html for one trace; FILE-TRACE.html when there are several. */
function chartFile(file: string, trace: string, several: boolean): string {
  if (!several) return file;
  const ext = extname(file) || '.html';
  return `${file.slice(0, file.length - extname(file).length)}-${trace}${ext}`;
}

import { Args, Flags } from '@oclif/core';
import { ColorCommand } from '../../src/cli/base-command.js';
import { decodeTrace, headerLine, parseFilters } from '../../src/trace/print.js';
import { TraceFormatError } from '../../src/trace/format.js';
import { LineOutput } from '../../src/trace/output.js';
import { readTrace } from '../../src/trace/reader.js';

export default class TraceDecode extends ColorCommand {
  static override summary = 'Print a trace file: one line per vhost-user message, with decoded fields.';
  // One line per paragraph: oclif wraps help to the terminal's width.
  static override description = [
    'Messages show the relative time, the direction (→ front-end to back-end, ← back-end to front-end), the channel '
    + '(frontend or backend), the request and its key fields; SET_MEM_TABLE adds a table of regions. Runs of translation '
    + 'records are summarised in one line unless --translations.',
    '--stats prints counts per request, IOTLB message counts, the translation hit rate and the IOTLB round trips '
    + 'measured from the time stamps: back-end MISS → the UPDATE that covers it, and UPDATE / INVALIDATE → the '
    + 'back-end\'s ack (count, mean, p50, p90, p99, max, unanswered, and a histogram; with --json under "roundTrips"). '
    + 'See docs/trace-format.md.',
    'A damaged trace is decoded up to the damage, then the error (with its byte offset) is printed and the command '
    + 'exits with status 2.',
  ].join('\n\n');

  static override examples = [
    '<%= config.bin %> <%= command.id %> fixtures/traces/recorded/qemu-dpdk.vhtrace',
    '<%= config.bin %> <%= command.id %> fixtures/traces/recorded/qemu-dpdk-iommu.vhtrace --filter IOTLB_MSG --filter set_mem_table',
    '<%= config.bin %> <%= command.id %> fixtures/traces/dynamic.vhtrace --filter backend --translations',
    '<%= config.bin %> <%= command.id %> fixtures/traces/dynamic.vhtrace --stats',
    '<%= config.bin %> <%= command.id %> fixtures/traces/recorded/qemu-dpdk-iommu.vhtrace --json | jq -c \'select(.iotlbType == "MISS")\'',
  ];

  static override args = {
    file: Args.string({ description: 'trace file (from `trace record` or `trace synth`)', required: true }),
  };

  static override flags = {
    json: Flags.boolean({ summary: 'one JSON object per line (bigints as "0x..." strings)' }),
    filter: Flags.string({
      char: 'f', multiple: true,
      summary: 'only messages of this request (any case, e.g. IOTLB_MSG) or channel (frontend, backend); repeatable',
    }),
    stats: Flags.boolean({ summary: 'print counts per request, IOTLB message counts, IOTLB round-trip latencies and the translation hit rate instead of the records' }),
    translations: Flags.boolean({ summary: 'print every translation record instead of a summary line per run' }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(TraceDecode);
    let filter;
    try {
      filter = flags.filter?.length ? parseFilters(flags.filter) : undefined;
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    const chalk = this.chalkFor(flags.color, flags.json);
    const out = new LineOutput();
    try {
      const records = readTrace(args.file, {
        onHeader: (header) => {
          if (!flags.json && !flags.stats) out.line(chalk.dim(headerLine(header, args.file)));
        },
      });
      const stats = await decodeTrace(records, { json: flags.json, filter, stats: flags.stats, translations: flags.translations, chalk }, out.line);
      if (flags.stats) out.line(flags.json ? JSON.stringify(stats.toJson()) : stats.render(chalk));
      out.flush();
    } catch (err) {
      out.flush();
      if (err instanceof TraceFormatError) this.error(err.message, { exit: 2 });
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') this.error(`${args.file}: no such file`, { exit: 2 });
      if ((err as NodeJS.ErrnoException).code === 'EISDIR') this.error(`${args.file}: is a directory, not a trace file`, { exit: 2 });
      throw err;
    }
  }
}

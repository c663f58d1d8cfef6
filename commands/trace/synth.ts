import { Flags } from '@oclif/core';
import { BaseCommand } from '../../src/cli/base-command.js';
import { SCENARIOS, SCENARIO_NAMES, writeSynthTrace, type ScenarioName, type SynthSummary } from '../../src/trace/synth.js';
import { outputPathProblem } from '../../src/cli/paths.js';

export default class TraceSynth extends BaseCommand {
  static override summary = 'Generate a synthetic trace: IOTLB messages plus datapath translations for a known workload.';
  static override description = `Scenarios (see docs/trace-format.md, "Synthetic scenarios"):
${SCENARIOS.map((s) => `  ${s.name.padEnd(11)} ${s.summary}`).join('\n')}

The same options and --seed always produce the same bytes.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> --scenario dynamic -o dynamic.vhtrace',
    '<%= config.bin %> <%= command.id %> --scenario static-4k --guest-mib 16 --packets 2000 -o static-4k.vhtrace',
    '<%= config.bin %> <%= command.id %> --scenario multiqueue --queues 8 --seed 7 -o mq.vhtrace --json',
  ];

  static override enableJsonFlag = true;

  static override flags = {
    scenario: Flags.string({ summary: 'workload to generate', options: SCENARIO_NAMES, required: true }),
    output: Flags.string({ char: 'o', summary: 'trace file to write', required: true }),
    seed: Flags.integer({ summary: 'PRNG seed', default: 1 }),
    packets: Flags.integer({ summary: 'packets the guest receives (default per scenario: 10000)', min: 0 }),
    queues: Flags.integer({ summary: 'queue pairs (default 1; multiqueue 4)', min: 1, max: 256 }),
    'guest-mib': Flags.integer({ summary: 'static: DPDK hugepage area; dynamic: guest RAM (MiB)', min: 1 }),
    'ring-size': Flags.integer({ summary: 'descriptors per ring (power of two, 64..1024)', default: 256, min: 64, max: 1024 }),
  };

  async run(): Promise<SynthSummary> {
    const { flags } = await this.parse(TraceSynth);
    const problem = outputPathProblem('--output', flags.output);
    if (problem) this.error(problem, { exit: 2 });
    let summary: SynthSummary;
    // Progress on stderr, at most once a second, so a big area does not look hung.
    const started = Date.now();
    let said = started;
    const progress = (messages: number): void => {
      const now = Date.now();
      if (now - said < 1000) return;
      said = now;
      process.stderr.write(`${flags.output}: ${messages} messages written (${((now - started) / 1000).toFixed(0)} s)\n`);
    };
    try {
      summary = writeSynthTrace(flags.output, {
        scenario: flags.scenario as ScenarioName, seed: flags.seed, packets: flags.packets, queues: flags.queues,
        guestMib: flags['guest-mib'], ringSize: flags['ring-size'],
      }, progress);
    } catch (err) {
      if (err instanceof RangeError) this.error(err.message, { exit: 2 });
      throw err;
    }
    const hitRate = summary.translations ? ((summary.hits / summary.translations) * 100).toFixed(2) : '-';
    this.log(`${flags.output}: ${summary.scenario} seed ${summary.seed}, ${summary.packets} packets on ${summary.queues} queue pair(s): ` +
      `${summary.messages} messages (${summary.updates} updates, ${summary.invalidates} invalidates, ${summary.iotlbMissMessages} misses), ` +
      `${summary.translations} translations (${hitRate}% hit)`);
    return summary;
  }
}

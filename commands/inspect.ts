import { Flags } from '@oclif/core';
import { ColorCommand } from '../src/cli/base-command.js';
import { controlRequest } from '../src/control/control-client.js';
import { renderState, type Rates } from '../src/control/render.js';
import type { DeviceState } from '../src/control/state.js';

export default class Inspect extends ColorCommand {
  static override summary = 'Show the live state of a running serve: features, memory, rings, IOTLB caches.';
  static override examples = [
    '<%= config.bin %> inspect --control /tmp/vhost.sock.ctl',
    '<%= config.bin %> inspect --control /tmp/vhost.sock.ctl --watch --entries 20',
    '<%= config.bin %> inspect --control /tmp/vhost.sock.ctl --json --queue 1',
    '<%= config.bin %> inspect --control /tmp/vhost.sock.ctl --clear-iotlb 1',
  ];

  static override enableJsonFlag = true;

  static override flags = {
    control: Flags.string({ char: 'c', summary: 'control socket of the serve process (serve prints it)', required: true }),
    watch: Flags.boolean({ char: 'w', summary: 'redraw every --interval seconds with rates, like top' }),
    interval: Flags.integer({ summary: 'seconds between redraws with --watch', default: 1, min: 1 }),
    queue: Flags.integer({ summary: 'only this vring index' }),
    entries: Flags.integer({ summary: 'list up to N IOTLB entries per queue', min: 0 }),
    'clear-iotlb': Flags.integer({ summary: 'clear the IOTLB cache of this vring, then show the state' }),
  };

  /** The state (printed as one JSON document with --json); with --watch, nothing: it streams. */
  async run(): Promise<DeviceState | undefined> {
    const { flags } = await this.parse(Inspect);
    const json = this.jsonEnabled();
    const chalk = this.chalkFor(flags.color, json);
    if (flags['clear-iotlb'] !== undefined) await controlRequest(flags.control, 'clear-iotlb', { queue: flags['clear-iotlb'] });
    const params = { entries: flags.entries !== undefined && flags.entries > 0, queue: flags.queue, limit: flags.entries };
    const fetchState = async (): Promise<DeviceState> => (await controlRequest(flags.control, 'state', params)) as DeviceState;
    if (!flags.watch) {
      const state = await fetchState();
      if (!json) this.log(renderState(state, null, params.entries, chalk));
      return state;
    }
    let previous: { at: number; state: DeviceState } | null = null;
    let stop = false;
    process.once('SIGINT', () => (stop = true));
    while (!stop) {
      const state = await fetchState();
      const at = Date.now();
      let rates: Rates | null = null;
      if (previous) {
        const seconds = (at - previous.at) / 1000;
        rates = { packetsPerSecond: new Map() };
        for (const q of state.queues) {
          const before = previous.state.queues.find((p) => p.index === q.index)?.counters?.packets ?? 0;
          rates.packetsPerSecond.set(q.index, ((q.counters?.packets ?? 0) - before) / seconds);
        }
      }
      previous = { at, state };
      // With --json, one line per redraw (JSON lines; oclif's --json prints only a returned result).
      if (json) process.stdout.write(`${JSON.stringify({ at, state, rates: rates ? Object.fromEntries(rates.packetsPerSecond) : null })}\n`);
      // A terminal is redrawn in place; a pipe or file gets each snapshot after a time-stamped rule.
      else process.stdout.write((process.stdout.isTTY ? '\x1b[2J\x1b[H' : `--- ${new Date(at).toISOString()}\n`) + renderState(state, rates, params.entries, chalk) + '\n');
      await new Promise((r) => setTimeout(r, flags.interval * 1000));
    }
    return undefined;
  }
}

/**
 * serve vs DPDK's own vhost backend, same virtio-user front-end (dpdk-testpmd), same run,
 * 64-byte frames, each direction. Rates come from the front-end's port counters sampled
 * over a steady window, so both backends are measured by the same instrument.
 *
 *   node dist/bench/datapath-vs-dpdk.js [--seconds S] [--queues N] [--packed] [--repeat R] [--direction rx|tx]
 */
import { startTestpmd, type NicStats, type Testpmd } from '../test/peers/dpdk.js';
import { sleep } from '../test/peers/util.js';
import { startServe } from '../test/support/serve.js';
import { median } from './median.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface DatapathResult {
  direction: 'guest→backend' | 'backend→guest';
  queues: number;
  ring: 'split' | 'packed';
  oursMpps: number;
  dpdkMpps: number;
  /** Median of the per-round ratios (serve and DPDK measured back to back in each round). */
  ratio: number;
  minRatio: number;
  maxRatio: number;
  rounds: number;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/**
 * CPU placement, the same shape for both back-ends on this 2-core machine: the back-end's
 * forwarding thread on one core, the front-end's on the other (DPDK pins its lcores; serve
 * is pinned with taskset, which also holds its idle main thread). Without it the scheduler
 * sometimes stacks serve's worker on the front-end's busy core and a run loses half.
 */
const BACKEND_CORE = 0;
const FRONTEND_LCORES: [number, number] = [BACKEND_CORE, 1 - BACKEND_CORE]; // main, forwarding

/**
 * Mpps seen by the front-end's port 0: the mean of testpmd's own per-period rate ("Rx-pps" /
 * "Tx-pps", timed by its TSC) over `seconds` one-second stats blocks, after a warm-up.
 * Differencing packet counters against our clock instead would mix in when the blocks
 * happen to reach us.
 */
async function measure(pmd: Testpmd, field: 'rxPps' | 'txPps', seconds: number): Promise<number> {
  const count = field === 'rxPps' ? 'rxPackets' : 'txPackets';
  await pmd.waitForStats((s) => (s[0]?.[count] ?? 0) > 0, 30_000);
  await sleep(1500);
  const samples: number[] = [];
  let last: NicStats | undefined = pmd.stats()[0];
  await pmd.waitForStats((s) => {
    const cur = s[0];
    if (cur !== undefined && cur !== last) {
      last = cur;
      samples.push(cur[field]);
    }
    return samples.length >= seconds;
  }, (seconds + 10) * 1000);
  return samples.reduce((a, b) => a + b, 0) / samples.length / 1e6;
}

type Direction = DatapathResult['direction'];

async function oursRate(direction: Direction, queues: number, packed: boolean, seconds: number): Promise<number> {
  const pin = queues === 1 ? ['taskset', '-c', String(BACKEND_CORE)] : undefined;
  const serve = await startServe(['--net', direction === 'guest→backend' ? 'sink' : 'source', '--frame-size', '64', '--queues', String(queues), '--quiet'], { prefix: pin });
  try {
    const pmd = startTestpmd({ role: 'virtio-user', socket: serve.socket, queues, packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly', lcores: FRONTEND_LCORES, extraArgs: ['--txpkts=64'] });
    await pmd.waitForLinkUp();
    const rate = await measure(pmd, direction === 'guest→backend' ? 'txPps' : 'rxPps', seconds);
    await pmd.stop();
    return rate;
  } finally {
    await serve.stop();
  }
}

async function dpdkRate(direction: Direction, queues: number, packed: boolean, seconds: number): Promise<number> {
  const socket = join(mkdtempSync(join(tmpdir(), 'vit-bench-')), 'dpdk.sock');
  // Back-end forwarding lcore on BACKEND_CORE, front-end's on the other, as for serve.
  const backend = startTestpmd({ role: 'vhost', socket, queues, forwardMode: direction === 'guest→backend' ? 'rxonly' : 'txonly', lcores: [1 - BACKEND_CORE, BACKEND_CORE], extraArgs: ['--txpkts=64'] });
  try {
    await backend.waitFor(/Port 0: /, 30_000).catch(() => undefined);
    const pmd = startTestpmd({ role: 'virtio-user', socket, queues, packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly', lcores: FRONTEND_LCORES, extraArgs: ['--txpkts=64'] });
    await pmd.waitForLinkUp();
    const rate = await measure(pmd, direction === 'guest→backend' ? 'txPps' : 'rxPps', seconds);
    await pmd.stop();
    return rate;
  } finally {
    await backend.stop();
  }
}

export interface DatapathOptions {
  seconds: number;
  queues: number;
  packed: boolean;
  /** Rounds, each measuring serve then DPDK back to back; the ratio is the median of the rounds' ratios. */
  repeat?: number;
  directions?: Direction[];
  progress?: (line: string) => void;
}

export async function runDatapathBench(opts: DatapathOptions): Promise<DatapathResult[]> {
  const results: DatapathResult[] = [];
  const repeat = opts.repeat ?? 3;
  for (const direction of opts.directions ?? ['guest→backend', 'backend→guest'] as const) {
    const ours: number[] = [];
    const dpdk: number[] = [];
    const ratios: number[] = [];
    for (let round = 0; round < repeat; round++) {
      const o = await oursRate(direction, opts.queues, opts.packed, opts.seconds);
      const d = await dpdkRate(direction, opts.queues, opts.packed, opts.seconds);
      ours.push(o);
      dpdk.push(d);
      ratios.push(o / d);
      opts.progress?.(`[${round + 1}/${repeat}] ${direction} ${opts.packed ? 'packed' : 'split'}: serve ${o.toFixed(2)} Mpps, DPDK ${d.toFixed(2)} Mpps, ${(o / d).toFixed(2)}x`);
    }
    results.push({
      direction, queues: opts.queues, ring: opts.packed ? 'packed' : 'split',
      oursMpps: median(ours), dpdkMpps: median(dpdk), ratio: median(ratios),
      minRatio: Math.min(...ratios), maxRatio: Math.max(...ratios), rounds: repeat,
    });
  }
  return results;
}

export function datapathMarkdown(results: DatapathResult[]): string {
  const rows = results.map((r) => `| ${r.direction} | ${r.ring} | ${r.queues} | ${r.oursMpps.toFixed(2)} | ${r.dpdkMpps.toFixed(2)} | ${r.ratio.toFixed(2)}× | ${r.minRatio.toFixed(2)}–${r.maxRatio.toFixed(2)} (${r.rounds}) |`);
  return ['| direction | ring | queue pairs | serve Mpps (median) | DPDK vhost Mpps (median) | serve / DPDK (median of paired rounds) | range (rounds) |', '|---|---|---|---|---|---|---|', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv.indexOf('--direction');
  const directions: Direction[] | undefined = dir < 0 ? undefined : process.argv[dir + 1] === 'rx' ? ['backend→guest'] : ['guest→backend'];
  const results = await runDatapathBench({
    seconds: arg('--seconds', 4), queues: arg('--queues', 1), packed: process.argv.includes('--packed'),
    repeat: arg('--repeat', 3), directions, progress: (l) => console.log(l),
  });
  console.log(datapathMarkdown(results));
}

/**
 * Aggregate Mpps as serve's workers are added, each on a CPU of its own, beside DPDK's vhost
 * with as many forwarding lcores on the same CPUs: does the rate grow with workers up to the
 * cores there are? One dpdk-testpmd virtio-user front-end per back-end, its forwarding lcores
 * on CPUs of their own and the same for every row (only the back-end changes), 64-byte
 * frames, no IOMMU. Each back-end runs alone with its front-end; a round measures W = 1 ..
 * max for serve and for DPDK, alternating which goes first.
 *
 *   node dist/bench/worker-scaling.js [--max-workers W] [--queues Q] [--packed] [--direction rx|tx]
 *        [--seconds S] [--rounds R] [--backend-cpus LIST] [--frontend-cpus LIST] [--allow-overlap]
 *
 * Defaults: W = half the CPUs this process may use (at most 4); the back-end's CPUs are the
 * first W of them, the front-end's (its W forwarding lcores; both processes' main lcores, which
 * only print statistics, go on its first) the next W; Q = 2 W queue pairs, so one worker
 * serves them all and W workers serve two each; both directions, split ring, 4 s, 3 rounds.
 * It needs 4 CPUs (2 workers, 2 front-end lcores): on fewer it says so and exits 1 without
 * measuring. --allow-overlap accepts CPU lists that share CPUs, to check the bench itself on a
 * small machine; its figures then measure time-slicing, not scaling.
 * Prints per row serve's and DPDK's Mpps (median of the rounds), serve / DPDK, and each
 * back-end's rate over its own with one worker (lcore). Not a test: figures depend on the machine.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startTestpmd, type Testpmd } from '../test/peers/dpdk.js';
import { startServe } from '../test/support/serve.js';
import { allowedCpus, parseCpuList } from '../src/serve/placement.js';
import { measure } from './datapath-vs-dpdk.js';
import type { Direction } from './interleaved.js';
import { median } from './median.js';
import { answerHelp, listOf, optionsOrExit, positiveInt } from './options.js';

/** Where each side runs: the back-end's CPUs (worker / lcore k on backend[k]) and the front-end's. */
export interface ScalingLayout {
  backend: number[];
  frontend: number[];
}

export interface ScalingOptions {
  layout: ScalingLayout;
  /** Rows W = 1 .. maxWorkers. */
  maxWorkers: number;
  queues: number;
  packed: boolean;
  directions: Direction[];
  seconds: number;
  rounds: number;
  progress?: (line: string) => void;
}

export interface ScalingRow {
  direction: Direction;
  ring: 'split' | 'packed';
  queues: number;
  workers: number;
  /** Medians over the rounds. */
  oursMpps: number;
  dpdkMpps: number;
  /** This row's rate over the same back-end's rate with one worker / lcore. */
  oursGrowth: number;
  dpdkGrowth: number;
}

const MAX_DEFAULT_WORKERS = 4;

/**
 * The default layout on the CPUs this process may use: the back-end on the first half, the
 * front-end on the second (at most MAX_DEFAULT_WORKERS each). Throws, naming the count, where
 * there are fewer than 4: with one CPU per side, workers have nowhere to scale to.
 */
export function defaultScalingLayout(cpus: readonly number[] = allowedCpus()): ScalingLayout {
  const per = Math.min(MAX_DEFAULT_WORKERS, Math.floor(cpus.length / 2));
  if (per < 2) {
    throw new Error(`needs 4 CPUs (2 for serve's workers or DPDK's lcores, 2 for the front-end's lcores); this process may use ${cpus.length} (${cpus.join(',')})`);
  }
  return { backend: cpus.slice(0, per), frontend: cpus.slice(per, 2 * per) };
}

/** Checks a layout for `maxWorkers` rows; overlapping lists only when allowed. */
export function checkScalingLayout(layout: ScalingLayout, maxWorkers: number, allowOverlap: boolean): void {
  if (layout.backend.length < maxWorkers) throw new Error(`--max-workers ${maxWorkers}: --backend-cpus names ${layout.backend.length} CPU(s), one per worker is needed`);
  if (layout.frontend.length < maxWorkers) throw new Error(`--max-workers ${maxWorkers}: --frontend-cpus names ${layout.frontend.length} CPU(s), the front-end needs as many lcores as the most workers`);
  const shared = layout.backend.filter((cpu) => layout.frontend.includes(cpu));
  if (shared.length > 0 && !allowOverlap) {
    throw new Error(`CPU(s) ${shared.join(',')} are in both --backend-cpus and --frontend-cpus: the sides would time-slice, not scale (--allow-overlap to run anyway)`);
  }
}

function frontend(socket: string, direction: Direction, o: ScalingOptions, lcores: number): Testpmd {
  const cpus = o.layout.frontend.slice(0, lcores);
  return startTestpmd({
    role: 'virtio-user', socket, queues: o.queues, packed: o.packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly',
    lcores: [cpus[0]!, cpus[0]!], forwardCpus: cpus, extraArgs: ['--txpkts=64'],
  });
}

async function rateBehind(socket: string, direction: Direction, o: ScalingOptions): Promise<number> {
  const pmd = frontend(socket, direction, o, o.maxWorkers);
  try {
    await pmd.waitForLinkUp();
    return await measure(pmd, direction === 'guest→backend' ? 'txPps' : 'rxPps', o.seconds);
  } finally {
    await pmd.stop();
  }
}

async function serveRate(direction: Direction, workers: number, o: ScalingOptions): Promise<number> {
  const cpus = o.layout.backend.slice(0, workers).join(',');
  const serve = await startServe(['--net', direction === 'guest→backend' ? 'sink' : 'source', '--frame-size', '64',
    '--queues', String(o.queues), '--workers', String(workers), '--cpus', cpus, '--quiet']);
  try {
    return await rateBehind(serve.socket, direction, o);
  } finally {
    await serve.stop();
  }
}

async function dpdkRate(direction: Direction, workers: number, o: ScalingOptions): Promise<number> {
  const socket = join(mkdtempSync(join(tmpdir(), 'vit-scaling-')), 'dpdk.sock');
  const main = o.layout.frontend[0]!;
  const backend = startTestpmd({
    role: 'vhost', socket, queues: o.queues, forwardMode: direction === 'guest→backend' ? 'rxonly' : 'txonly',
    lcores: [main, main], forwardCpus: o.layout.backend.slice(0, workers), extraArgs: ['--txpkts=64'],
  });
  try {
    await backend.waitFor(/Port 0: /, 30_000).catch(() => undefined);
    return await rateBehind(socket, direction, o);
  } finally {
    await backend.stop();
  }
}

export async function runWorkerScaling(o: ScalingOptions): Promise<ScalingRow[]> {
  const rows: ScalingRow[] = [];
  const ring = o.packed ? 'packed' as const : 'split' as const;
  for (const direction of o.directions) {
    const ours: number[][] = [];
    const dpdk: number[][] = [];
    for (let w = 1; w <= o.maxWorkers; w++) {
      ours.push([]);
      dpdk.push([]);
    }
    for (let round = 0; round < o.rounds; round++) {
      for (let w = 1; w <= o.maxWorkers; w++) {
        // Alternate who goes first: the machine's speed drifts over a run.
        const order = (round + w) % 2 === 0 ? ['serve', 'dpdk'] as const : ['dpdk', 'serve'] as const;
        for (const who of order) {
          const rate = who === 'serve' ? await serveRate(direction, w, o) : await dpdkRate(direction, w, o);
          (who === 'serve' ? ours : dpdk)[w - 1]!.push(rate);
          o.progress?.(`[${round + 1}/${o.rounds}] ${direction} ${ring}, ${w} worker(s): ${who === 'serve' ? 'serve' : 'DPDK vhost'} ${rate.toFixed(2)} Mpps`);
        }
      }
    }
    const oursOne = median(ours[0]!);
    const dpdkOne = median(dpdk[0]!);
    for (let w = 1; w <= o.maxWorkers; w++) {
      const oursMpps = median(ours[w - 1]!);
      const dpdkMpps = median(dpdk[w - 1]!);
      rows.push({ direction, ring, queues: o.queues, workers: w, oursMpps, dpdkMpps, oursGrowth: oursMpps / oursOne, dpdkGrowth: dpdkMpps / dpdkOne });
    }
  }
  return rows;
}

export function workerScalingMarkdown(rows: ScalingRow[], layout: ScalingLayout): string {
  const lines = rows.map((r) => `| ${r.direction} | ${r.ring} | ${r.queues} | ${r.workers} | ${r.oursMpps.toFixed(2)} | ${r.dpdkMpps.toFixed(2)} | ${(r.oursMpps / r.dpdkMpps).toFixed(2)}× | ${r.oursGrowth.toFixed(2)}× | ${r.dpdkGrowth.toFixed(2)}× |`);
  return [
    `Back-end CPUs ${layout.backend.join(',')} (worker / lcore k on the k-th), front-end lcores on ${layout.frontend.join(',')}.`,
    '',
    '| direction | ring | queue pairs | workers (serve) / lcores (DPDK) | serve Mpps | DPDK vhost Mpps | serve / DPDK | serve / serve with 1 | DPDK / DPDK with 1 |',
    '|---|---|---|---|---|---|---|---|---|', ...lines,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  answerHelp(import.meta.url);
  const opts = optionsOrExit('worker-scaling', () => {
    const { values: v } = parseArgs({
      options: {
        'max-workers': { type: 'string' }, queues: { type: 'string' }, packed: { type: 'boolean', default: false },
        direction: { type: 'string' }, seconds: { type: 'string', default: '4' }, rounds: { type: 'string', default: '3' },
        'backend-cpus': { type: 'string' }, 'frontend-cpus': { type: 'string' }, 'allow-overlap': { type: 'boolean', default: false },
      },
    });
    const given = v['backend-cpus'] !== undefined || v['frontend-cpus'] !== undefined;
    if (given && (v['backend-cpus'] === undefined || v['frontend-cpus'] === undefined)) throw new Error('--backend-cpus and --frontend-cpus go together');
    const layout: ScalingLayout | undefined = given
      ? { backend: parseCpuList(v['backend-cpus']!, undefined, '--backend-cpus'), frontend: parseCpuList(v['frontend-cpus']!, undefined, '--frontend-cpus') }
      : undefined;
    const maxWorkers = v['max-workers'] === undefined ? undefined : positiveInt('max-workers', v['max-workers']);
    const directions: Direction[] = v.direction === undefined ? ['guest→backend', 'backend→guest']
      : listOf('direction', v.direction, ['rx', 'tx'] as const).map((d) => (d === 'rx' ? 'backend→guest' : 'guest→backend'));
    return {
      layout, maxWorkers, queues: v.queues === undefined ? undefined : positiveInt('queues', v.queues),
      packed: v.packed!, directions, seconds: positiveInt('seconds', v.seconds!), rounds: positiveInt('rounds', v.rounds!),
      allowOverlap: v['allow-overlap']!,
    };
  });
  let layout: ScalingLayout;
  try {
    layout = opts.layout ?? defaultScalingLayout();
  } catch (err) {
    console.error(`worker-scaling: ${(err as Error).message}; nothing measured`);
    process.exit(1);
  }
  const maxWorkers = opts.maxWorkers ?? Math.min(layout.backend.length, layout.frontend.length);
  optionsOrExit('worker-scaling', () => checkScalingLayout(layout, maxWorkers, opts.allowOverlap));
  const rows = await runWorkerScaling({ ...opts, layout, maxWorkers, queues: opts.queues ?? 2 * maxWorkers, progress: (l) => console.log(l) });
  console.log(workerScalingMarkdown(rows, layout));
}

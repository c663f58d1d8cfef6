/**
 * serve vs DPDK's own vhost backend, same virtio-user front-end (dpdk-testpmd), same run,
 * 64-byte frames, each direction. Rates come from the front-end's port counters, so both
 * backends are measured by the same instrument.
 *
 * Default (interleaved): one front-end with a port to each of P serve and P DPDK vhost
 * processes (default 2 each), run one at a time in turn in 100 ms slices (alternate.ts and
 * interleaved.ts say why): the ratio compares them in the same seconds of the machine. --sequential: each back-end alone with
 * its own front-end, serve then DPDK, per round (what earlier reports used).
 *
 *   node dist/bench/datapath-vs-dpdk.js [--seconds S] [--queues N] [--workers W] [--packed] [--repeat R] [--direction rx|tx]
 *        [--processes P] [--sequential [--burst-stats]]
 *
 * --workers W gives serve W worker threads and DPDK's vhost W forwarding lcores (see below).
 * --burst-stats (with --sequential) prints, after each back-end's round, how full the
 * front-end's bursts were on each queue (testpmd --record-burst-stats): the share of its
 * rx_burst calls that came back empty says the back-end, not the front-end, set the rate; the
 * share of tx_burst calls that sent nothing, that the back-end left the ring full.
 */
import { startTestpmd, type NicStats, type Testpmd } from '../test/peers/dpdk.js';
import { sleep } from '../test/peers/util.js';
import { startServe, type ServeProcess } from '../test/support/serve.js';
import { mean, median } from './median.js';
import { crossCoreRoundTrip } from './alternate.js';
import { BACKEND_CORE, FRONTEND_LCORES, interleavedRates, side, type Direction, type PortBackend } from './interleaved.js';
import { mkdtempSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { answerHelp, listOf, optionsOrExit, positiveInt } from './options.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface DatapathResult {
  direction: 'guest→backend' | 'backend→guest';
  queues: number;
  /** serve's worker threads and DPDK's forwarding lcores (undefined: serve's default, one lcore). */
  workers: number | undefined;
  ring: 'split' | 'packed';
  oursMpps: number;
  dpdkMpps: number;
  /**
   * Interleaved: serve's frames over DPDK's, each per ms of its own running time, over the
   * whole run; min / max over windows of 2 s. Sequential: the median, min and max of the
   * per-round ratios (serve and DPDK back to back in each round).
   */
  ratio: number;
  minRatio: number;
  maxRatio: number;
  /** Windows (interleaved) or rounds (sequential) behind min / max. */
  rounds: number;
  mode: 'interleaved' | 'sequential';
  /** Cross-core round trip (ns) measured before and after (alternate.ts). */
  crossCoreNs: [number, number];
  /** Interleaved: each process's rate (Mpps). */
  oursEach?: number[];
  dpdkEach?: number[];
}

/**
 * CPU placement, the same shape for both back-ends on this 2-core machine: the back-end's
 * forwarding thread on one core, the front-end's on the other (DPDK pins its lcores; serve
 * is pinned with taskset, which also holds its idle main thread). Without it the scheduler
 * sometimes stacks serve's worker on the front-end's busy core and a run loses half. With
 * several queue pairs serve's workers share that core, and DPDK gets as many forwarding
 * lcores (--workers W: W lcores, all on that core, time-sliced as serve's workers are;
 * default one, polling every queue): the same CPU budget and the same shape for both
 * back-ends. (Unpinned, serve's workers would take the front-end's core too: 0.49x on TX
 * with 2 pairs, against 0.82x.)
 */
const SERVE_PIN = ['taskset', '-c', String(BACKEND_CORE)];

/**
 * Mpps seen by the front-end's port 0: the mean of testpmd's own per-period rate ("Rx-pps" /
 * "Tx-pps", timed by its TSC) over `seconds` one-second stats blocks, after a warm-up.
 * Differencing packet counters against our clock instead would mix in when the blocks
 * happen to reach us.
 */
export async function measure(pmd: Testpmd, field: 'rxPps' | 'txPps', seconds: number): Promise<number> {
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
  return mean(samples) / 1e6;
}

/** serve for one side of a comparison: `workers` threads for the queue pairs (undefined: serve's own default). */
function startServeSide(direction: Direction, queues: number, workers: number | undefined): Promise<ServeProcess> {
  const workerArgs = workers === undefined ? [] : ['--workers', String(workers)];
  return startServe(['--net', direction === 'guest→backend' ? 'sink' : 'source', '--frame-size', '64', '--queues', String(queues), ...workerArgs, '--quiet'], { prefix: SERVE_PIN });
}

/**
 * DPDK's vhost for one side: its forwarding lcores on BACKEND_CORE, its main lcore on the other,
 * as many forwarding lcores as serve has workers (time-sliced on that core as serve's are).
 */
function startDpdkSide(direction: Direction, queues: number, workers: number | undefined): { socket: string; backend: Testpmd } {
  const socket = join(mkdtempSync(join(tmpdir(), 'vit-bench-')), 'dpdk.sock');
  const backend = startTestpmd({
    role: 'vhost', socket, queues, forwardMode: direction === 'guest→backend' ? 'rxonly' : 'txonly',
    lcores: [1 - BACKEND_CORE, BACKEND_CORE], forwardingCores: workers ?? 1, extraArgs: ['--txpkts=64'],
  });
  return { socket, backend };
}

/** Sequential rounds: the front-end for one back-end, with testpmd's burst statistics when asked. */
function startFrontend(socket: string, direction: Direction, queues: number, packed: boolean, burstStats: boolean): Testpmd {
  const extraArgs = ['--txpkts=64', ...(burstStats ? ['--record-burst-stats'] : [])];
  return startTestpmd({ role: 'virtio-user', socket, queues, packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly', lcores: FRONTEND_LCORES, extraArgs });
}

/** The front-end's per-queue burst lines ("RX-bursts : N [x% of 0 pkts + y% of 32 pkts ...]") after it stopped. */
function burstLines(pmd: Testpmd, direction: Direction): string[] {
  const which = direction === 'guest→backend' ? 'TX-bursts' : 'RX-bursts';
  return pmd.lines.filter((l) => l.includes(which)).map((l) => l.trim());
}

async function oursRate(direction: Direction, queues: number, packed: boolean, seconds: number, workers: number | undefined, bursts?: (lines: string[]) => void): Promise<number> {
  const serve = await startServeSide(direction, queues, workers);
  try {
    const pmd = startFrontend(serve.socket, direction, queues, packed, bursts !== undefined);
    await pmd.waitForLinkUp();
    const rate = await measure(pmd, direction === 'guest→backend' ? 'txPps' : 'rxPps', seconds);
    await pmd.stop();
    bursts?.(burstLines(pmd, direction));
    return rate;
  } finally {
    await serve.stop();
  }
}

async function dpdkRate(direction: Direction, queues: number, packed: boolean, seconds: number, workers: number | undefined, bursts?: (lines: string[]) => void): Promise<number> {
  const { socket, backend } = startDpdkSide(direction, queues, workers);
  try {
    await backend.waitFor(/Port 0: /, 30_000).catch(() => undefined);
    const pmd = startFrontend(socket, direction, queues, packed, bursts !== undefined);
    await pmd.waitForLinkUp();
    const rate = await measure(pmd, direction === 'guest→backend' ? 'txPps' : 'rxPps', seconds);
    await pmd.stop();
    bursts?.(burstLines(pmd, direction));
    return rate;
  } finally {
    await backend.stop();
  }
}

/**
 * `processes` serve processes and as many DPDK vhost processes behind one front-end (ports
 * serve, DPDK, serve, DPDK, ...), run one at a time in turn (interleaved.ts): each back-end's
 * rate is its port's frames over its own running time.
 */
async function interleavedServeVsDpdk(direction: Direction, queues: number, packed: boolean, seconds: number, processes: number, workers: number | undefined): Promise<Interleaved> {
  const serves: ServeProcess[] = [];
  const backends: Testpmd[] = [];
  try {
    const ports: PortBackend[] = [];
    for (let i = 0; i < processes; i++) {
      const serve = await startServeSide(direction, queues, workers);
      serves.push(serve);
      const { socket, backend } = startDpdkSide(direction, queues, workers);
      backends.push(backend);
      await backend.waitFor(/Port 0: /, 30_000).catch(() => undefined);
      ports.push({ socket: serve.socket, pid: serve.child.pid! }, { socket, pid: backend.process.pid! });
    }
    const r = await interleavedRates(ports, direction, queues, packed, seconds);
    const oursEach = side(r.each, 0);
    const dpdkEach = side(r.each, 1);
    const oursMpps = mean(oursEach);
    const dpdkMpps = mean(dpdkEach);
    return { oursMpps, dpdkMpps, ratio: oursMpps / dpdkMpps, windows: r.windows, oursEach, dpdkEach };
  } finally {
    for (const b of backends) await b.stop();
    for (const sv of serves) await sv.stop();
  }
}

interface Interleaved {
  oursMpps: number;
  dpdkMpps: number;
  ratio: number;
  windows: number[];
  /** Each process's own rate (Mpps), serve's and DPDK's. */
  oursEach: number[];
  dpdkEach: number[];
}

export interface DatapathOptions {
  seconds: number;
  queues: number;
  packed: boolean;
  /** Rounds, each measuring serve then DPDK back to back; the ratio is the median of the rounds' ratios. */
  repeat?: number;
  directions?: Direction[];
  /** Default 'interleaved' (seconds * repeat of alternating back-ends per direction). */
  mode?: 'interleaved' | 'sequential';
  /** Interleaved: processes of each back-end (default 2). */
  processes?: number;
  /** serve --workers (default: serve's own). */
  workers?: number;
  /** Sequential: report the front-end's burst statistics through progress. */
  burstStats?: boolean;
  progress?: (line: string) => void;
}

export async function runDatapathBench(opts: DatapathOptions): Promise<DatapathResult[]> {
  const results: DatapathResult[] = [];
  const repeat = opts.repeat ?? 3;
  for (const direction of opts.directions ?? ['guest→backend', 'backend→guest'] as const) {
    if ((opts.mode ?? 'interleaved') === 'interleaved') {
      const before = await crossCoreRoundTrip();
      const r = await interleavedServeVsDpdk(direction, opts.queues, opts.packed, opts.seconds * repeat, opts.processes ?? 2, opts.workers);
      const after = await crossCoreRoundTrip();
      const each = (xs: number[]): string => xs.map((x) => x.toFixed(2)).join(' / ');
      opts.progress?.(`${direction} ${opts.packed ? 'packed' : 'split'} interleaved: serve ${r.oursMpps.toFixed(2)} Mpps (${each(r.oursEach)}), DPDK ${r.dpdkMpps.toFixed(2)} Mpps (${each(r.dpdkEach)}), ${r.ratio.toFixed(2)}x; 2 s windows ${r.windows.map((w) => w.toFixed(2)).join(' ')}; cross-core round trip ${before.toFixed(0)} / ${after.toFixed(0)} ns`);
      results.push({
        direction, queues: opts.queues, workers: opts.workers, ring: opts.packed ? 'packed' : 'split',
        oursMpps: r.oursMpps, dpdkMpps: r.dpdkMpps, ratio: r.ratio,
        minRatio: Math.min(...r.windows), maxRatio: Math.max(...r.windows), rounds: r.windows.length,
        mode: 'interleaved', crossCoreNs: [before, after], oursEach: r.oursEach, dpdkEach: r.dpdkEach,
      });
      continue;
    }
    const before = await crossCoreRoundTrip();
    const ours: number[] = [];
    const dpdk: number[] = [];
    const ratios: number[] = [];
    const bursts = (who: string) => (opts.burstStats ? (lines: string[]) => {
      opts.progress?.(`  front-end behind ${who}, per queue: ${lines.length > 0 ? '' : 'no burst statistics in its output'}`);
      for (const l of lines) opts.progress?.(`    ${l}`);
    } : undefined);
    for (let round = 0; round < repeat; round++) {
      const o = await oursRate(direction, opts.queues, opts.packed, opts.seconds, opts.workers, bursts('serve'));
      const d = await dpdkRate(direction, opts.queues, opts.packed, opts.seconds, opts.workers, bursts('DPDK vhost'));
      ours.push(o);
      dpdk.push(d);
      ratios.push(o / d);
      opts.progress?.(`[${round + 1}/${repeat}] ${direction} ${opts.packed ? 'packed' : 'split'}: serve ${o.toFixed(2)} Mpps, DPDK ${d.toFixed(2)} Mpps, ${(o / d).toFixed(2)}x`);
    }
    results.push({
      direction, queues: opts.queues, workers: opts.workers, ring: opts.packed ? 'packed' : 'split',
      oursMpps: median(ours), dpdkMpps: median(dpdk), ratio: median(ratios),
      minRatio: Math.min(...ratios), maxRatio: Math.max(...ratios), rounds: repeat,
      mode: 'sequential', crossCoreNs: [before, await crossCoreRoundTrip()],
    });
  }
  return results;
}

export function datapathMarkdown(results: DatapathResult[]): string {
  const mpps = (mean: number, each?: number[]): string => mean.toFixed(2) + (each && each.length > 1 ? ` (${each.map((x) => x.toFixed(1)).join(', ')})` : '');
  const rows = results.map((r) => `| ${r.direction} | ${r.ring} | ${r.queues} | ${r.workers ?? 'default'} | ${r.mode} | ${mpps(r.oursMpps, r.oursEach)} | ${mpps(r.dpdkMpps, r.dpdkEach)} | ${r.ratio.toFixed(2)}× | ${r.minRatio.toFixed(2)}–${r.maxRatio.toFixed(2)} (${r.rounds}) | ${r.crossCoreNs.map((n) => n.toFixed(0)).join(' / ')} |`);
  return [
    '| direction | ring | queue pairs | workers (serve) / lcores (DPDK) | mode | serve Mpps (each process) | DPDK vhost Mpps (each process) | serve / DPDK | range (windows or rounds) | cross-core round trip ns (before / after) |',
    '|---|---|---|---|---|---|---|---|---|---|', ...rows,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  answerHelp(import.meta.url);
  const opts = optionsOrExit('datapath-vs-dpdk', () => {
    const { values: v } = parseArgs({
      options: {
        seconds: { type: 'string', default: '4' }, queues: { type: 'string', default: '1' }, workers: { type: 'string' },
        packed: { type: 'boolean', default: false }, repeat: { type: 'string', default: '3' }, direction: { type: 'string' },
        processes: { type: 'string', default: '2' }, sequential: { type: 'boolean', default: false },
        'burst-stats': { type: 'boolean', default: false },
      },
    });
    if (v['burst-stats'] && !v.sequential) throw new Error('--burst-stats needs --sequential: interleaved back-ends share one front-end');
    const directions: Direction[] | undefined = v.direction === undefined ? undefined
      : listOf('direction', v.direction, ['rx', 'tx'] as const).map((d) => (d === 'rx' ? 'backend→guest' : 'guest→backend'));
    const seconds = positiveInt('seconds', v.seconds!);
    const repeat = positiveInt('repeat', v.repeat!);
    // Interleaved runs last seconds × repeat; their rates and windows come from 1 s stats blocks.
    if (!v.sequential && seconds * repeat < 2) throw new Error(`--seconds ${seconds} --repeat ${repeat}: an interleaved run needs seconds × repeat ≥ 2`);
    return {
      seconds, queues: positiveInt('queues', v.queues!), packed: v.packed!,
      repeat, directions, mode: v.sequential ? 'sequential' as const : 'interleaved' as const,
      processes: positiveInt('processes', v.processes!), ...(v.workers === undefined ? {} : { workers: positiveInt('workers', v.workers) }),
      burstStats: v['burst-stats']!,
    };
  });
  const results = await runDatapathBench({ ...opts, progress: (l) => console.log(l) });
  console.log(datapathMarkdown(results));
}

/**
 * serve vs DPDK's own vhost backend, same virtio-user front-end (dpdk-testpmd), same run,
 * 64-byte frames, each direction. Rates come from the front-end's port counters sampled
 * over a steady window, so both backends are measured by the same instrument.
 *
 *   node dist/bench/datapath-vs-dpdk.js [--seconds S] [--queues N] [--packed]
 */
import { startTestpmd, type NicStats, type Testpmd } from '../test/peers/dpdk.js';
import { sleep } from '../test/peers/util.js';
import { startServe } from '../test/support/serve.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface DatapathResult {
  direction: 'guest→backend' | 'backend→guest';
  queues: number;
  ring: 'split' | 'packed';
  oursMpps: number;
  dpdkMpps: number;
  ratio: number;
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Mpps seen by the front-end's port 0 over `seconds`, after a warm-up. */
async function measure(pmd: Testpmd, field: keyof NicStats, seconds: number): Promise<number> {
  await pmd.waitForStats((s) => (s[0]?.[field] ?? 0) > 0, 30_000);
  await sleep(1500);
  const first = { ...pmd.stats()[0]! };
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const last = { ...pmd.stats()[0]! };
  const t1 = Date.now();
  return (last[field] - first[field]) / ((t1 - t0) / 1000) / 1e6;
}

async function oursRate(direction: DatapathResult['direction'], queues: number, packed: boolean, seconds: number): Promise<number> {
  const serve = await startServe(['--net', direction === 'guest→backend' ? 'sink' : 'source', '--frame-size', '64', '--queues', String(queues), '--quiet']);
  try {
    const pmd = startTestpmd({ role: 'virtio-user', socket: serve.socket, queues, packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly', extraArgs: ['--txpkts=64'] });
    await pmd.waitForLinkUp();
    const rate = await measure(pmd, direction === 'guest→backend' ? 'txPackets' : 'rxPackets', seconds);
    await pmd.stop();
    return rate;
  } finally {
    await serve.stop();
  }
}

async function dpdkRate(direction: DatapathResult['direction'], queues: number, packed: boolean, seconds: number): Promise<number> {
  const socket = join(mkdtempSync(join(tmpdir(), 'vit-bench-')), 'dpdk.sock');
  const backend = startTestpmd({ role: 'vhost', socket, queues, forwardMode: direction === 'guest→backend' ? 'rxonly' : 'txonly', lcores: [0, 1], extraArgs: ['--txpkts=64'] });
  try {
    await backend.waitFor(/Port 0: /, 30_000).catch(() => undefined);
    const pmd = startTestpmd({ role: 'virtio-user', socket, queues, packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly', lcores: [1, 0], extraArgs: ['--txpkts=64'] });
    await pmd.waitForLinkUp();
    const rate = await measure(pmd, direction === 'guest→backend' ? 'txPackets' : 'rxPackets', seconds);
    await pmd.stop();
    return rate;
  } finally {
    await backend.stop();
  }
}

export async function runDatapathBench(opts: { seconds: number; queues: number; packed: boolean }): Promise<DatapathResult[]> {
  const results: DatapathResult[] = [];
  for (const direction of ['guest→backend', 'backend→guest'] as const) {
    const oursMpps = await oursRate(direction, opts.queues, opts.packed, opts.seconds);
    const dpdkMpps = await dpdkRate(direction, opts.queues, opts.packed, opts.seconds);
    results.push({ direction, queues: opts.queues, ring: opts.packed ? 'packed' : 'split', oursMpps, dpdkMpps, ratio: oursMpps / dpdkMpps });
  }
  return results;
}

export function datapathMarkdown(results: DatapathResult[]): string {
  const rows = results.map((r) => `| ${r.direction} | ${r.ring} | ${r.queues} | ${r.oursMpps.toFixed(2)} | ${r.dpdkMpps.toFixed(2)} | ${r.ratio.toFixed(2)}× |`);
  return ['| direction | ring | queue pairs | serve Mpps | DPDK vhost Mpps | serve / DPDK |', '|---|---|---|---|---|---|', ...rows].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const results = await runDatapathBench({ seconds: arg('--seconds', 4), queues: arg('--queues', 1), packed: process.argv.includes('--packed') });
  console.log(datapathMarkdown(results));
}

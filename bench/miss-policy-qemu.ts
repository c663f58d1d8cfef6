/**
 * Miss policies against a real QEMU guest: what pays when QEMU answers every IOTLB miss with
 * one IOMMU page?
 *
 * A QEMU 7.2 guest behind intel-iommu (device-iotlb, ats, guest `intel_iommu=on iommu.strict=1`)
 * sends N MiB over TCP (tcp-send, busybox nc) through `serve --net tap:vit0` to a Node TCP server
 * in a network namespace (the rig of test/support/qemu-rig.ts). Every case is one serve process
 * (reused across rounds); rounds interleave the cases so slow phases of a shared machine hit
 * every case alike; the table reports the median (and best) round.
 *
 *   node dist/bench/miss-policy-qemu.js [--mib 32] [--rounds 3] [--only name,...] [--no-plain] [--json]
 *
 * Cases (serve flags):
 *   coalescing stop-at-first   --iotlb-strategy coalescing --no-iotlb-batch-misses
 *   coalescing batch           --iotlb-strategy coalescing                 (the default policy)
 *   coalescing prefetch 64K    ... --no-iotlb-batch-misses --iotlb-prefetch 65536
 *   coalescing prefetch 2M     ... --no-iotlb-batch-misses --iotlb-prefetch 2097152
 *   dpdk stop-at-first         --iotlb-strategy dpdk --no-iotlb-batch-misses
 *   no IOMMU (reference)       coalescing, guest without intel-iommu
 *
 * Throughput: bytes / (first byte to EOF) as the namespace's receiver times it. Misses: serve's
 * missesSent counters (rx + tx) between the guest printing its sha256 (just before `nc` starts)
 * and QEMU's exit, i.e. the transfer. Updates, lookups and hits: the workers' IOTLB cache
 * statistics of the last state sample before the guest disconnected (whole session). From
 * QEMU's own trace events (-trace, log backend), whole session: misses QEMU handled
 * (vhost_iotlb_miss) and DMAR faults its intel-iommu raised to the guest (vtd_dmar_fault): a
 * miss for an IOVA the guest has not mapped gets no UPDATE at all (QEMU 7.2's
 * address_space_get_iotlb_entry fails and vhost_device_iotlb_miss sends nothing) but costs the
 * guest a fault. Not a test: figures depend on the machine (TCG guest, 2 CPUs, shared).
 */
import { median } from './median.js';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { boot, closeAllRigs, sampleState, startRig, tail, waitDisconnected, type Rig } from '../test/support/qemu-rig.js';
import { total } from '../test/support/serve.js';
import type { DeviceState } from '../src/control/state.js';
import { answerHelp, optionsOrExit } from './options.js';

export interface MissPolicyCase {
  name: string;
  /** Short policy name for the table. */
  policy: string;
  strategy: string;
  serveArgs: string[];
  iommu: boolean;
}

export const MISS_POLICY_CASES: MissPolicyCase[] = [
  { name: 'coalescing stop-at-first', policy: 'stop-at-first', strategy: 'coalescing', serveArgs: ['--no-iotlb-batch-misses'], iommu: true },
  { name: 'coalescing batch', policy: 'batch (default)', strategy: 'coalescing', serveArgs: [], iommu: true },
  { name: 'coalescing prefetch 64K', policy: '--iotlb-prefetch 65536', strategy: 'coalescing', serveArgs: ['--no-iotlb-batch-misses', '--iotlb-prefetch', '65536'], iommu: true },
  { name: 'coalescing prefetch 2M', policy: '--iotlb-prefetch 2097152', strategy: 'coalescing', serveArgs: ['--no-iotlb-batch-misses', '--iotlb-prefetch', '2097152'], iommu: true },
  { name: 'dpdk stop-at-first', policy: 'stop-at-first', strategy: 'dpdk', serveArgs: ['--no-iotlb-batch-misses'], iommu: true },
  { name: 'no IOMMU (reference)', policy: '-', strategy: 'coalescing', serveArgs: [], iommu: false },
];

/** The baseline every ratio is taken against. */
export const BASELINE = 'coalescing stop-at-first';

export interface MissPolicyRound {
  /** MB/s (10^6 bytes/s), receiver's first byte to EOF. */
  mbps: number;
  /** Receiver's first byte to EOF, ms. */
  ms: number;
  /** serve's missesSent (rx + tx) during the transfer. */
  missesSent: number;
  /** IOTLB updates QEMU sent (cache inserts of one ring: each update goes to both), whole session. */
  updates: number;
  lookups: number;
  hits: number;
  /** DMAR faults QEMU's intel-iommu recorded for the guest (trace event vtd_dmar_fault), whole session. */
  dmarFaults: number;
  /** IOTLB misses QEMU handled (trace event vhost_iotlb_miss step 1), whole session. */
  qemuMisses: number;
  error?: string;
}

export interface MissPolicyRow {
  name: string;
  policy: string;
  strategy: string;
  iommu: boolean;
  rounds: MissPolicyRound[];
  /** Median over the rounds without error (NaN when none succeeded). */
  mbps: number;
  bestMbps: number;
  missesSent: number;
  updates: number;
  hitRate: number;
  dmarFaults: number;
  qemuMisses: number;
  /** Median MB/s / the baseline's median MB/s. */
  ratio: number;
  /** Median misses sent / the baseline's. */
  missRatio: number;
  errors: number;
}

export interface MissPolicyOptions {
  mib?: number;
  rounds?: number;
  /** Case names (substring match); default all. */
  only?: string[];
  /** Include the no-IOMMU reference row (default true). */
  plain?: boolean;
  progress?: (line: string) => void;
}

/** QEMU trace events counted per session (`-trace EVENT -D FILE`, the log backend Debian's QEMU has). */
const TRACE_EVENTS = ['vtd_dmar_fault', 'vhost_iotlb_miss'];

function countTrace(file: string): { dmarFaults: number; qemuMisses: number } {
  if (!existsSync(file)) return { dmarFaults: NaN, qemuMisses: NaN };
  let dmarFaults = 0;
  let qemuMisses = 0;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.includes('vtd_dmar_fault')) dmarFaults++;
    else if (/vhost_iotlb_miss .*step 1\b/.test(line)) qemuMisses++;
  }
  return { dmarFaults, qemuMisses };
}

async function oneRound(rig: Rig, c: MissPolicyCase, mib: number): Promise<MissPolicyRound> {
  const tcp = rig.tcp!;
  const from = tcp.log.lines.length;
  const sampler = sampleState(rig.serve, 250, (s) => s.connected && s.queues.some((q) => q.running));
  const traceDir = mkdtempSync(join(tmpdir(), 'vit-mpq-'));
  const traceFile = join(traceDir, 'qemu-trace.log');
  const g = boot(rig, {
    mode: 'tcp-send', iommu: c.iommu, args: { mib }, timeoutMs: 180_000,
    extraQemuArgs: [...TRACE_EVENTS.flatMap((e) => ['-trace', e]), '-D', traceFile],
  });
  let live: DeviceState | null = null;
  try {
    await g.waitFor(/^VIT-RESULT sha256/, 120_000);
    const atSend = await rig.serve.state();
    const r = await g.result();
    live = await sampler.stop();
    const what = `${c.name}: tcp-send ${mib} MiB`;
    if (!r.done || r.timedOut) throw new Error(`${what}: the guest did not finish (timedOut=${r.timedOut})\n${tail(r.lines, 15)}`);
    if (!r.sha256 || r.sha256.bytes !== mib * 1024 * 1024) throw new Error(`${what}: guest sha256 line ${JSON.stringify(r.sha256)}`);
    if (!r.tcp?.ok) throw new Error(`${what}: nc in the guest failed ${JSON.stringify(r.tcp)}\n${tail(r.lines, 15)}`);
    const host = await tcp.result(15_000, from);
    if (host.bytes !== r.sha256.bytes || host.hex !== r.sha256.hex) {
      throw new Error(`${what}: the receiver got ${host.bytes} bytes sha256 ${host.hex}, the guest sent ${r.sha256.bytes} ${r.sha256.hex}`);
    }
    if (host.ms === undefined || !(host.ms > 0)) throw new Error(`${what}: the receiver did not time the transfer`);
    const after = await waitDisconnected(rig.serve);
    const broken = (live?.queues ?? []).filter((q) => q.broken !== null).map((q) => `${q.kind}: ${q.broken}`);
    if (broken.length > 0) throw new Error(`${what}: ring broke: ${broken.join('; ')}`);
    const qs = live?.queues ?? [];
    return {
      mbps: host.bytes / 1e6 / (host.ms / 1000),
      ms: host.ms,
      missesSent: total(after, 'rx', 'missesSent') + total(after, 'tx', 'missesSent') -
        total(atSend, 'rx', 'missesSent') - total(atSend, 'tx', 'missesSent'),
      // Every UPDATE goes into each ring's cache: one ring's inserts are the device's updates.
      updates: Math.max(0, ...qs.map((q) => q.iotlb?.stats.inserts ?? 0)),
      lookups: qs.reduce((n, q) => n + (q.iotlb?.stats.lookups ?? 0), 0),
      hits: qs.reduce((n, q) => n + (q.iotlb?.stats.hits ?? 0), 0),
      ...countTrace(traceFile),
    };
  } catch (err) {
    await sampler.stop();
    await g.kill().catch(() => undefined);
    await waitDisconnected(rig.serve, 15_000).catch(() => undefined);
    return { mbps: 0, ms: 0, missesSent: 0, updates: 0, lookups: 0, hits: 0, dmarFaults: 0, qemuMisses: 0, error: (err as Error).message.split('\n')[0] };
  } finally {
    rmSync(traceDir, { recursive: true, force: true });
  }
}

/** Runs every case for `rounds` interleaved rounds and returns one row per case. */
export async function runMissPolicyBench(opts: MissPolicyOptions = {}): Promise<MissPolicyRow[]> {
  const mib = opts.mib ?? 32;
  const rounds = opts.rounds ?? 3;
  const progress = opts.progress ?? ((l: string) => process.stderr.write(`${l}\n`));
  const cases = MISS_POLICY_CASES.filter((c) => (opts.plain ?? true) || c.iommu)
    .filter((c) => !opts.only || opts.only.some((o) => c.name.includes(o)));
  const results = new Map<string, MissPolicyRound[]>(cases.map((c) => [c.name, []]));
  const rigs = new Map<string, Rig>();
  try {
    for (const c of cases) rigs.set(c.name, await startRig(['--iotlb-strategy', c.strategy, ...c.serveArgs], { tcp: true }));
    for (let round = 1; round <= rounds; round++) {
      // Alternate the order so no case always runs right after the same one.
      const order = round % 2 === 1 ? cases : [...cases].reverse();
      for (const c of order) {
        const t0 = performance.now();
        const r = await oneRound(rigs.get(c.name)!, c, mib);
        results.get(c.name)!.push(r);
        progress(`[${round}/${rounds}] ${c.name.padEnd(26)} ` + (r.error ? `ERROR ${r.error}` :
          `${r.mbps.toFixed(2).padStart(6)} MB/s (${(r.ms / 1000).toFixed(1)} s)  misses ${r.missesSent}  updates ${r.updates}  ` +
          `hits ${r.hits}/${r.lookups}  QEMU misses ${r.qemuMisses}  DMAR faults ${r.dmarFaults}`) + `  [guest ${((performance.now() - t0) / 1000).toFixed(1)} s]`);
      }
    }
  } finally {
    for (const rig of rigs.values()) await rig.close();
    await closeAllRigs();
  }
  const rows: MissPolicyRow[] = cases.map((c) => {
    const rs = results.get(c.name)!;
    const ok = rs.filter((r) => !r.error);
    const lookups = median(ok.map((r) => r.lookups));
    return {
      name: c.name, policy: c.policy, strategy: c.strategy, iommu: c.iommu, rounds: rs,
      mbps: median(ok.map((r) => r.mbps)),
      bestMbps: ok.length > 0 ? Math.max(...ok.map((r) => r.mbps)) : NaN,
      missesSent: median(ok.map((r) => r.missesSent)),
      updates: median(ok.map((r) => r.updates)),
      hitRate: lookups > 0 ? median(ok.map((r) => r.hits / r.lookups)) : NaN,
      dmarFaults: median(ok.map((r) => r.dmarFaults)),
      qemuMisses: median(ok.map((r) => r.qemuMisses)),
      ratio: NaN, missRatio: NaN,
      errors: rs.length - ok.length,
    };
  });
  const base = rows.find((r) => r.name === BASELINE);
  for (const r of rows) {
    if (!base) break;
    r.ratio = r.mbps / base.mbps;
    r.missRatio = r.iommu ? r.missesSent / base.missesSent : NaN;
  }
  return rows;
}

const f = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : '-');

/** The rows as a Markdown table (ratios against coalescing stop-at-first). */
export function missPolicyMarkdown(rows: MissPolicyRow[]): string {
  const n = rows[0]?.rounds.length ?? 0;
  const head = `| strategy | miss policy | MB/s (median of ${n}) | best MB/s | vs stop-at-first | misses sent | misses vs stop-at-first | ` +
    'IOTLB updates (last sample) | hit rate (last sample) | misses QEMU handled | guest DMAR faults | failed rounds |';
  const lines = [head, '|' + ' --- |'.repeat(12)];
  for (const r of rows) {
    lines.push(`| ${r.iommu ? r.strategy : `${r.strategy} (no IOMMU)`} | ${r.policy} | ${f(r.mbps)} | ${f(r.bestMbps)} | ${f(r.ratio)} | ` +
      `${r.iommu ? f(r.missesSent, 0) : '-'} | ${f(r.missRatio)} | ${r.iommu ? f(r.updates, 0) : '-'} | ${r.iommu ? f(r.hitRate * 100, 1) + ' %' : '-'} | ` +
      `${r.iommu ? f(r.qemuMisses, 0) : '-'} | ${r.iommu ? f(r.dmarFaults, 0) : '-'} | ${r.errors} |`);
  }
  return lines.join('\n');
}

function parseArgs(argv: string[]): MissPolicyOptions & { json: boolean } {
  const a: MissPolicyOptions & { json: boolean } = { json: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--mib': a.mib = Number(v); i++; break;
      case '--rounds': a.rounds = Number(v); i++; break;
      case '--only': a.only = (v ?? '').split(','); i++; break;
      case '--no-plain': a.plain = false; break;
      case '--json': a.json = true; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return a;
}

async function main(): Promise<void> {
  const args = optionsOrExit('miss-policy-qemu', () => parseArgs(process.argv.slice(2)));
  const mib = args.mib ?? 32;
  const rounds = args.rounds ?? 3;
  const t0 = performance.now();
  console.log(`# miss-policy-qemu: QEMU intel-iommu guest (iommu.strict=1) tcp-send ${mib} MiB through serve --net tap, ${rounds} interleaved rounds`);
  const rows = await runMissPolicyBench(args);
  console.log('');
  console.log(args.json ? JSON.stringify(rows, null, 2) : missPolicyMarkdown(rows));
  console.log(`\n(${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  answerHelp(import.meta.url);
  main().then(() => process.exit(0), (err) => {
    console.error(err);
    process.exit(1);
  });
}

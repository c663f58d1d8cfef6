/**
 * Dirty-page logging (live migration) on the data path: serve with VHOST_F_LOG_ALL vs without,
 * and DPDK's vhost (testpmd net_vhost0, macswap) with it vs without, all in the same run,
 * driven by the repo's front-end (test/support/frontend, option dirtyLog: SET_LOG_BASE with a
 * memfd log, LOG_ALL, VHOST_VRING_F_LOG, sent as QEMU does at a migration's start once the
 * rings run). Target (issue 18): logging costs serve no more than it costs DPDK, i.e. serve's
 * on/off ratio >= DPDK's.
 *
 *   node dist/bench/dirty-log.js [--seconds S] [--rounds R] [--processes P] [--no-sync] [--no-pin-serve]
 *
 * 64-byte frames, loopback only (the front-end sends on TX and counts what comes back on RX:
 * `serve --net loopback`, testpmd macswap), one queue pair, split rings, no IOMMU. Each round
 * starts P fresh processes of each of the four back-ends (serve off / on, DPDK off / on), and
 * alternate() (bench/alternate.ts) runs them one at a time in turn in 100 ms slices for S
 * seconds each while the front-end drives the one running: every back-end sees the same
 * seconds of the machine (docs/performance.md says why nothing else is comparable here).
 * Mpps = frames back on RX per second of the back-end's own running time. While logging, the
 * front-end reads and clears the log of the back-end it just drove at every switch (a
 * migration's bitmap sync; --no-sync leaves the bits set) and counts the pages marked.
 * The live rates may be the front-end's limit rather than the back-ends' (both come out alike
 * with logging off), which would hide a logging cost; so a device-only figure follows: serve's
 * own device code (SplitQueue + loopback, src/) driven in-process by the same front-end in one
 * thread, the log attached and detached every 50 ms (as a worker's setDirtyLog does) —
 * ns per looped frame off / on, no cross-core traffic, no DPDK equivalent.
 * Placement as bench/datapath-vs-dpdk.ts: the back-end's data-path thread on CPU 0 (serve with
 * taskset, DPDK's forwarding lcore), this front-end pinned to CPU 1 while measuring.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { alternate, crossCoreRoundTrip } from './alternate.js';
import { median } from './median.js';
import { answerHelp, optionsOrExit, positiveInt } from './options.js';
import { VhostUserFrontend } from '../test/support/frontend/frontend.js';
import { writeFrame } from '../test/support/frontend/frames.js';
import { startServe } from '../test/support/serve.js';
import { startTestpmd } from '../test/peers/dpdk.js';
import { DirtyLog, logBytesFor } from '../src/memory/dirty-log.js';
import { transmitBurst } from '../src/net/virtio-net.js';
import { inProcessDevice } from './in-process-device.js';

export interface DirtyLogArgs {
  seconds: number;
  rounds: number;
  processes: number;
  /** Read and clear each log at every switch (default) or never. */
  sync: boolean;
  pinServe: boolean;
}

const FRAME = 64;
const BURST = 32;
const SLICE_MS = 100;
/** Per-window ratios: windows of this many ms of each back-end's running time. */
const WINDOW_MS = 1000;
const BACKEND_CPU = 0;
const FRONTEND_CPU = 1;
const ALL_CPUS = `0-${availableParallelism() - 1}`;

const GROUPS = ['serve off', 'serve on', 'dpdk off', 'dpdk on'] as const;
type GroupName = (typeof GROUPS)[number];

function pinSelf(cpus: string): void {
  const r = spawnSync('taskset', ['-cp', cpus, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) console.error(`(could not pin the front-end to CPUs ${cpus}: ${r.error?.message ?? r.stderr.trim()})`);
}

/** One back-end with the front-end connected and warmed up. */
interface Case {
  group: GroupName;
  pid: number;
  fe: VhostUserFrontend;
  /** Busy loop for ~ms: frames back on RX, and the time it ran. */
  loop(ms: number): { frames: number; ms: number };
  close(): Promise<void>;
}

async function openCase(group: GroupName, args: DirtyLogArgs): Promise<Case> {
  const dirtyLog = group.endsWith(' on');
  let pid: number;
  let socket: string;
  let stop: () => Promise<void>;
  let ready: (() => Promise<void>) | null = null;
  if (group.startsWith('serve')) {
    const serve = await startServe(['--net', 'loopback', '--quiet'], args.pinServe ? { prefix: ['taskset', '-c', String(BACKEND_CPU)] } : {});
    pid = serve.child.pid!;
    socket = serve.socket;
    stop = async () => void (await serve.stop());
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'vit-bench-'));
    socket = join(dir, 'vhost.sock');
    const tp = startTestpmd({ role: 'vhost', socket, forwardMode: 'macswap', memMiB: 512, lcores: [FRONTEND_CPU, BACKEND_CPU], timeoutMs: 60 * 60_000 });
    pid = tp.process.pid!;
    stop = async () => {
      await tp.stop().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    };
    ready = () => tp.waitForLinkUp(30_000);
  }
  let fe: VhostUserFrontend | undefined;
  try {
    fe = await VhostUserFrontend.connect({
      socket, iommu: 'off', canary: false, memoryBytes: 128 * 1024 * 1024, queueSize: 256,
      txSlots: 1024, rxSlots: 1024, slotSize: 2048, mergeableRx: true, connectTimeoutMs: 30_000, dirtyLog,
    });
    fe.conn.recordSent = false;
    fe.start();
    const f = fe;
    if (ready !== null) await f.serveUntil(ready());
    const frame = new Uint8Array(FRAME);
    writeFrame(frame, 0, 1, FRAME);
    f.prefillTx(frame);
    const loop = (ms: number): { frames: number; ms: number } => {
      const t0 = performance.now();
      const end = t0 + ms;
      const rx0 = f.stats.rxFrames;
      let now = t0;
      while (now < end) {
        let posted = 0;
        while (posted < BURST && f.txPostPrefilled(FRAME)) posted++;
        f.poll();
        now = performance.now();
      }
      return { frames: f.stats.rxFrames - rx0, ms: now - t0 };
    };
    loop(300);
    if (dirtyLog && f.syncDirtyLog() === 0) throw new Error(`${group}: logging on, but nothing was marked during warm-up`);
    return { group, pid, fe: f, loop, close: async () => { f.close(); await stop(); } };
  } catch (err) {
    fe?.close();
    await stop();
    throw err;
  }
}

interface Drive {
  /** Per case: frames, ms driven (chunks), running time from alternate(), pages synced. */
  frames: number[];
  drivenMs: number[];
  onMs: number[];
  pages: number[];
  /** Per case, per full rotation: [frames, ms]. */
  cycles: Array<Array<[number, number]>>;
}

/**
 * alternate() SIGSTOPs / SIGCONTs the back-ends in turn; meanwhile this loop drives the one
 * running in ~1 ms chunks and yields, so the switch (a timer) happens between chunks and
 * every chunk's frames belong to the back-end that ran during it.
 */
async function drive(cases: Case[], ms: number, sync: boolean): Promise<Drive> {
  const n = cases.length;
  const d: Drive = { frames: cases.map(() => 0), drivenMs: cases.map(() => 0), onMs: [], pages: cases.map(() => 0), cycles: cases.map(() => []) };
  let cur = 0;
  let finished = false;
  const cycle = cases.map((): [number, number] => [0, 0]);
  const syncOne = (k: number): void => {
    if (sync && cases[k]!.group.endsWith(' on')) d.pages[k] += cases[k]!.fe.syncDirtyLog();
  };
  const running = alternate(cases.map((c) => c.pid), SLICE_MS, ms * n, () => {
    const prev = cur;
    cur = (cur + 1) % n;
    syncOne(prev);
    if (cur === 0) {
      for (let k = 0; k < n; k++) {
        d.cycles[k]!.push(cycle[k]!);
        cycle[k] = [0, 0];
      }
    }
  }).then((on) => {
    finished = true;
    return on;
  });
  while (!finished) {
    const k = cur;
    const r = cases[k]!.loop(1);
    d.frames[k] += r.frames;
    d.drivenMs[k] += r.ms;
    cycle[k]![0] += r.frames;
    cycle[k]![1] += r.ms;
    await new Promise((res) => setImmediate(res));
  }
  d.onMs = await running;
  for (let k = 0; k < n; k++) syncOne(k);
  return d;
}

export interface RoundResult {
  /** Per group: Mpps of each of its processes. */
  mpps: Record<GroupName, number[]>;
  /** Per group: pages marked per 1000 frames (logging groups; NaN without syncs). */
  pagesPerKFrame: Record<GroupName, number>;
  /** serve on/off and dpdk on/off: the round's ratio and per-window ratios. */
  serveRatio: number;
  dpdkRatio: number;
  serveWindows: number[];
  dpdkWindows: number[];
  crossCoreNs: [number, number];
}

async function runRound(args: DirtyLogArgs, progress: (l: string) => void): Promise<RoundResult> {
  const cases: Case[] = [];
  try {
    for (let p = 0; p < args.processes; p++) for (const g of GROUPS) {
      cases.push(await openCase(g, args));
      progress(`  opened ${g} #${p + 1}`);
    }
    // The probe runs with every back-end stopped (DPDK's idle lcores would otherwise spin on CPU 0).
    const probe = async (): Promise<number> => {
      for (const c of cases) process.kill(c.pid, 'SIGSTOP');
      try {
        return await crossCoreRoundTrip();
      } finally {
        for (const c of cases) process.kill(c.pid, 'SIGCONT');
      }
    };
    const before = await probe();
    pinSelf(String(FRONTEND_CPU));
    await drive(cases, 2 * SLICE_MS, args.sync); // back to speed after the others' warm-up
    const d = await drive(cases, args.seconds * 1000, args.sync);
    pinSelf(ALL_CPUS);
    const after = await probe();
    const mpps = Object.fromEntries(GROUPS.map((g) => [g, cases.flatMap((c, k) => (c.group === g ? [d.frames[k]! / d.onMs[k]! / 1000] : []))])) as RoundResult['mpps'];
    const sumOf = (g: GroupName, xs: number[]): number => cases.reduce((t, c, k) => (c.group === g ? t + xs[k]! : t), 0);
    const rate = (g: GroupName): number => sumOf(g, d.frames) / sumOf(g, d.onMs);
    const pagesPerKFrame = Object.fromEntries(GROUPS.map((g) => [g, args.sync && g.endsWith(' on') ? (sumOf(g, d.pages) / sumOf(g, d.frames)) * 1000 : NaN])) as RoundResult['pagesPerKFrame'];
    // Windows of whole rotations, ~WINDOW_MS of each back-end's time.
    const perWindow = Math.max(1, Math.round(WINDOW_MS / SLICE_MS));
    const rotations = d.cycles[0]!.length;
    const windows = (on: GroupName, off: GroupName): number[] => {
      const out: number[] = [];
      for (let w = 0; w + perWindow <= rotations; w += perWindow) {
        const r = (g: GroupName): number => {
          let f = 0;
          let t = 0;
          cases.forEach((c, k) => {
            if (c.group !== g) return;
            for (let i = w; i < w + perWindow; i++) {
              f += d.cycles[k]![i]![0];
              t += d.cycles[k]![i]![1];
            }
          });
          return f / t;
        };
        if (r(off) > 0) out.push(r(on) / r(off));
      }
      return out;
    };
    return {
      mpps, pagesPerKFrame,
      serveRatio: rate('serve on') / rate('serve off'), dpdkRatio: rate('dpdk on') / rate('dpdk off'),
      serveWindows: windows('serve on', 'serve off'), dpdkWindows: windows('dpdk on', 'dpdk off'),
      crossCoreNs: [before, after],
    };
  } finally {
    pinSelf(ALL_CPUS);
    for (const c of cases.reverse()) await c.close().catch(() => undefined);
  }
}

export interface DeviceOnly {
  offNs: number;
  onNs: number;
  ratio: number;
}

/** serve's device code alone: front-end + SplitQueue loopback in this thread, log off / on alternated every 50 ms. */
export function deviceOnly(seconds: number): DeviceOnly {
  const fe = VhostUserFrontend.detached({ canary: false, memoryBytes: 128 * 1024 * 1024, queueSize: 256, txSlots: 1024, rxSlots: 1024, slotSize: 2048 });
  try {
    const { memory, rxq, txq, loopback: lo } = inProcessDevice(fe);
    const bits = new Uint8Array(logBytesFor(fe.memoryBytes));
    const log = new DirtyLog(bits, memory);
    const frame = new Uint8Array(FRAME);
    writeFrame(frame, 0, 1, FRAME);
    fe.prefillTx(frame);
    const run = (ms: number, on: boolean): [number, number] => {
      rxq.queue.log = txq.queue.log = on ? log : null;
      const r0 = fe.stats.rxFrames;
      const t0 = performance.now();
      const end = t0 + ms;
      let now = t0;
      while (now < end) {
        for (let k = 0; k < 64; k++) {
          let posted = 0;
          while (posted < BURST && fe.txPostPrefilled(FRAME)) posted++;
          fe.poll();
          transmitBurst(txq, lo, BURST);
          if (on) log.flush(); // as the worker does after every step
        }
        now = performance.now();
      }
      bits.fill(0); // the sync, outside the timed part
      return [fe.stats.rxFrames - r0, now - t0];
    };
    for (let i = 0; i < 6; i++) run(50, i % 2 === 1);
    const total = { off: [0, 0], on: [0, 0] };
    const chunks = Math.max(2, Math.round((seconds * 1000) / 50));
    for (let i = 0; i < chunks; i++) {
      const on = i % 2 === 1;
      const [f, t] = run(50, on);
      const acc = on ? total.on : total.off;
      acc[0] += f;
      acc[1] += t;
    }
    const offNs = (total.off[1]! * 1e6) / total.off[0]!;
    const onNs = (total.on[1]! * 1e6) / total.on[0]!;
    return { offNs, onNs, ratio: offNs / onNs };
  } finally {
    fe.close();
  }
}

const fmt = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : '-');
const range = (xs: number[]): string => (xs.length === 0 ? '-' : `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}`);

/** Runs every round; returns them (progress lines go to `progress`). */
export async function runDirtyLogBench(args: DirtyLogArgs, progress: (l: string) => void = () => undefined): Promise<RoundResult[]> {
  const rounds: RoundResult[] = [];
  for (let r = 1; r <= args.rounds; r++) {
    progress(`round ${r}/${args.rounds}`);
    const res = await runRound(args, progress);
    progress(`  serve on/off ${fmt(res.serveRatio, 3)}  dpdk on/off ${fmt(res.dpdkRatio, 3)}  Mpps ${GROUPS.map((g) => `${g} ${res.mpps[g].map((x) => fmt(x)).join('/')}`).join(', ')}  cross-core ns ${res.crossCoreNs.map((x) => x.toFixed(0)).join(' / ')}`);
    rounds.push(res);
  }
  return rounds;
}

/** The Markdown table: one row per back-end, logging off and on, on/off over rounds and windows. */
export function dirtyLogMarkdown(rounds: RoundResult[]): string {
  const all = (g: GroupName): number[] => rounds.flatMap((r) => r.mpps[g]);
  const row = (name: string, off: GroupName, on: GroupName, ratio: (r: RoundResult) => number, win: (r: RoundResult) => number[]): string => {
    const ratios = rounds.map(ratio);
    const pages = median(rounds.map((r) => r.pagesPerKFrame[on]));
    return `| ${name} | ${fmt(median(all(off)))} (${all(off).map((x) => fmt(x, 1)).join(', ')}) | ${fmt(median(all(on)))} (${all(on).map((x) => fmt(x, 1)).join(', ')}) | `
      + `**${fmt(median(ratios), 3)}** (${range(ratios)}) | ${range(rounds.flatMap(win))} (${rounds.flatMap(win).length}) | ${fmt(pages, 1)} |`;
  };
  const serve = rounds.map((r) => r.serveRatio);
  const dpdk = rounds.map((r) => r.dpdkRatio);
  const relative = rounds.map((r) => r.serveRatio / r.dpdkRatio);
  const lines = [
    '| back-end | logging off Mpps (each process) | logging on Mpps (each process) | on/off, median of rounds (range) | on/off per ~1 s window, range (count) | pages marked per 1000 frames |',
    '|---|---|---|---|---|---|',
    row('serve', 'serve off', 'serve on', (r) => r.serveRatio, (r) => r.serveWindows),
    row('DPDK vhost', 'dpdk off', 'dpdk on', (r) => r.dpdkRatio, (r) => r.dpdkWindows),
    '',
    `Logging costs serve ${fmt((1 - median(serve)) * 100, 1)}% and DPDK ${fmt((1 - median(dpdk)) * 100, 1)}% of their rate; `
      + `serve's on/off over DPDK's, per round: ${relative.map((x) => fmt(x, 3)).join(', ')} (target >= 1, within noise). `
      + `Cross-core round trip (ns, before / after each round): ${rounds.map((r) => r.crossCoreNs.map((x) => x.toFixed(0)).join(' / ')).join('; ')}.`,
  ];
  return lines.join('\n');
}

export function parseDirtyLogArgs(argv: string[]): DirtyLogArgs {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      seconds: { type: 'string', default: '3' }, rounds: { type: 'string', default: '3' }, processes: { type: 'string', default: '2' },
      'no-sync': { type: 'boolean', default: false }, 'no-pin-serve': { type: 'boolean', default: false },
    },
  });
  const seconds = Number(v.seconds);
  if (!(seconds > 0)) throw new Error(`--seconds: "${v.seconds}" is not a positive number`);
  return {
    seconds, rounds: positiveInt('rounds', v.rounds!), processes: positiveInt('processes', v.processes!),
    sync: !v['no-sync'], pinServe: !v['no-pin-serve'],
  };
}

async function main(): Promise<void> {
  const args = optionsOrExit('dirty-log', () => parseDirtyLogArgs(process.argv.slice(2)));
  console.log(`# dirty-log: ${FRAME}-byte frames through loopback (serve --net loopback / testpmd macswap), one split queue pair, no IOMMU; `
    + `${args.rounds} rounds, each with ${args.processes} fresh processes per back-end and logging state, alternated in ${SLICE_MS} ms slices, ${args.seconds} s each; `
    + `log ${args.sync ? 'read and cleared at every switch' : 'never cleared'}; serve ${args.pinServe ? 'pinned to' : 'unpinned, DPDK\'s lcore on'} CPU ${BACKEND_CPU}, front-end on CPU ${FRONTEND_CPU}\n`);
  const rounds = await runDirtyLogBench(args, (l) => console.log(l));
  console.log('\n' + dirtyLogMarkdown(rounds));
  pinSelf(String(FRONTEND_CPU));
  const dev = deviceOnly(Math.min(args.seconds, 4));
  pinSelf(ALL_CPUS);
  console.log(`\nDevice only (serve's SplitQueue + loopback and the front-end in one thread, log attached every other 50 ms): `
    + `${fmt(dev.offNs, 1)} ns per looped frame with logging off, ${fmt(dev.onNs, 1)} ns with it on: on/off ${fmt(dev.ratio, 3)}.`);
  process.exit(0);
}

if (process.argv[1]?.endsWith('dirty-log.js')) {
  answerHelp(import.meta.url);
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

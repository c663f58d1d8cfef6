/**
 * DPDK 17.11's IOTLB measurements, reproduced with the test front-end (test/support/frontend):
 * 64-byte frames through loopback, IOMMU off vs on with 4K / 2M / 1G static mappings and dynamic
 * mappings, for `serve --iotlb-strategy dpdk`, `serve --iotlb-strategy coalescing`, and
 * DPDK's own vhost back-end (dpdk-testpmd net_vhost0,iommu-support=1, macswap) driven by the
 * same front-end in the same run.
 *
 *   node dist/bench/iommu-table.js [--seconds S] [--warmup S] [--repeat N] [--only backend,...]
 *        [--mappings off,4K,2M,1G,dynamic,dynamic-pipelined] [--net loopback|sink] [--no-interleave]
 *        [--processes P] [--pin-serve] [--serve-variant 'NAME=--flag value']... [--serve-bin NAME=OTHER/bin/run.js]...
 *        [--proxy-bin NAME=OTHER/bin/run.js]...
 *
 * `--only 'dpdk-testpmd,dpdk via'` adds DPDK's vhost behind `trace record` and behind the C relay
 * (bench/c/relay.c): what the recording proxy costs per round trip, against the smallest relay.
 *
 * `--proxy-bin NAME=OTHER/bin/run.js` adds DPDK behind another checkout's `trace record`.
 *
 * Each --serve-variant adds a backend serve/NAME (serve coalescing+batch with those flags too),
 * each --serve-bin one running another checkout's serve with the same flags (an A/B of builds).
 *
 * Mpps = frames the front-end got back on RX per second (loopback / macswap), or TX
 * completions per second with --net sink (testpmd: rxonly). With dynamic mappings each round also
 * gives how long the front-end waited for the back-end's ack of each UPDATE and INVALIDATE
 * (sent to ack, mean µs), and a table of those beside the time per frame: the two round
 * trips a frame costs, which is where back-ends differ. The front-end busy-polls
 * both rings in one thread, posts bursts of 32, allocates nothing per packet; its own
 * ceiling is reported as frames / time spent in rounds that found work ("fe ceiling").
 * Not a test: numbers depend on the machine (2 CPUs here: the front-end polls on one, the
 * back-end's data-path thread on the other, and the back-end's control thread shares them).
 */
import { performance } from 'node:perf_hooks';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { median } from './median.js';
import { crossCoreRoundTrip } from './alternate.js';
import { VhostUserFrontend, type FrontendOptions } from '../test/support/frontend/frontend.js';
import { PAGE_1G, PAGE_2M, PAGE_4K } from '../test/support/frontend/iommu.js';
import { writeFrame } from '../test/support/frontend/frames.js';
import { startServe, type ServeProcess } from '../test/support/serve.js';
import { startTestpmd, type Testpmd } from '../test/peers/dpdk.js';
import { mkdtempSync } from 'node:fs';
import { transmitBurst } from '../src/net/virtio-net.js';
import { inProcessDevice } from './in-process-device.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { answerHelp, optionsOrExit, checkoutBin, serveVariant } from './options.js';
import { cProgram } from './c-program.js';
import { repoRoot, spawnLogged, terminate, waitForPath } from '../test/peers/util.js';

interface Args {
  seconds: number;
  warmup: number;
  only: string[] | null;
  mappings: string[] | null;
  net: 'loopback' | 'sink';
  slots: number;
  repeat: number;
  /** Also measure serve interleaved (interleaved()): on/off for static mappings, variants for dynamic ones. */
  interleave: boolean;
  /** Interleaved: serve processes per mapping. */
  processes: number;
  /** Run serve (main thread and worker) on BACKEND_CPU only (taskset), as datapath-vs-dpdk does. */
  pinServe: boolean;
  /** More serve backends: this checkout with more flags, or another checkout's CLI. */
  extraServes: ServeVariant[];
  /** More `trace record` proxies in front of DPDK: another checkout's CLI each. */
  extraProxies: Array<{ name: string; bin: string }>;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seconds: 3, warmup: 20, only: null, mappings: null, net: 'loopback', slots: 1024, repeat: 3, interleave: true, processes: 2, pinServe: false, extraServes: [], extraProxies: [] };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--seconds': a.seconds = Number(v); i++; break;
      case '--warmup': a.warmup = Number(v); i++; break;
      case '--only': a.only = v.split(','); i++; break;
      case '--mappings': a.mappings = v.split(','); i++; break;
      case '--net': a.net = v as Args['net']; i++; break;
      case '--slots': a.slots = Number(v); i++; break;
      case '--repeat': a.repeat = Number(v); i++; break;
      case '--no-interleave': a.interleave = false; break;
      case '--processes': a.processes = Number(v); i++; break;
      case '--pin-serve': a.pinServe = true; break;
      case '--serve-variant': { const x = serveVariant(v); a.extraServes.push({ name: `serve/${x.name}`, args: [...DEFAULT_SERVE_ARGS, ...x.args] }); i++; break; }
      case '--serve-bin': { const x = checkoutBin(v); a.extraServes.push({ name: `serve/${x.name}`, args: DEFAULT_SERVE_ARGS, bin: x.bin }); i++; break; }
      case '--proxy-bin': a.extraProxies.push(checkoutBin(v, '--proxy-bin')); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return a;
}

const FRAME = 64;
const BURST = 32;
/**
 * CPU placement: this front-end pinned to one CPU, DPDK's forwarding lcore on the other.
 * serve is not pinned: taskset would hold its main thread (which answers every IOTLB
 * message of the dynamic cases) on its worker's CPU; with the front-end's CPU busy, the
 * scheduler keeps the worker on the other one anyway.
 */
const BACKEND_CPU = 0;
const FRONTEND_CPU = 1;

const ALL_CPUS = `0-${availableParallelism() - 1}`;

/**
 * Pins this thread (the front-end) to `cpus`. Only while a case runs: processes spawned
 * while pinned would inherit the mask, and serve's worker would share the front-end's CPU.
 */
function pinSelf(cpus: string): void {
  const r = spawnSync('taskset', ['-cp', cpus, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) console.log(`(could not pin the front-end to CPUs ${cpus}: ${r.error?.message ?? r.stderr.trim()})`);
}

interface Mapping {
  name: string;
  opts: Partial<FrontendOptions>;
}

const MAPPINGS: Mapping[] = [
  { name: 'off', opts: { iommu: 'off' } },
  { name: '4K', opts: { iommu: 'static', pageSize: PAGE_4K } },
  { name: '2M', opts: { iommu: 'static', pageSize: PAGE_2M } },
  { name: '1G', opts: { iommu: 'static', pageSize: PAGE_1G } },
  { name: 'dynamic', opts: { iommu: 'dynamic' } },
  // The same, but the front-end answers misses that arrive together with pipelined UPDATEs
  // (QEMU 7.2 answers one at a time): what batching misses can buy with such a front-end.
  { name: 'dynamic-pipelined', opts: { iommu: 'dynamic', missReplies: 'pipelined' } },
];

interface Backend {
  name: string;
  start(net: 'loopback' | 'sink', pin: boolean): Promise<{ socket: string; stop(): Promise<void>; ready?(): Promise<void> }>;
}

interface ServeVariant { name: string; args: string[]; bin?: string }

/** serve's defaults, spelt out: the strategy and batching the other variants differ in. */
const DEFAULT_SERVE_ARGS = ['--iotlb-strategy', 'coalescing', '--iotlb-batch-misses'];

const SERVE_VARIANTS: ServeVariant[] = [
  // Stop at the first miss of a burst (DPDK 17.11's way), and serve's default, which sends them all.
  { name: 'serve/dpdk', args: ['--iotlb-strategy', 'dpdk', '--no-iotlb-batch-misses'] },
  { name: 'serve/coalescing', args: ['--iotlb-strategy', 'coalescing', '--no-iotlb-batch-misses'] },
  { name: 'serve/coalescing+batch', args: DEFAULT_SERVE_ARGS },
];

function serveBackend(variant: ServeVariant): Backend {
  return {
    name: variant.name,
    async start(net, pin) {
      const serve: ServeProcess = await startServe(['--net', net, ...variant.args, '--quiet'], { bin: variant.bin, ...(pin ? { prefix: ['taskset', '-c', String(BACKEND_CPU)] } : {}) });
      return { socket: serve.socket, stop: async () => void (await serve.stop()) };
    },
  };
}

/**
 * DPDK's vhost, reached directly or through a relay: `trace record` (our proxy) or the C relay
 * (bench/c/relay.c, the smallest relay: what any extra hop per message costs here).
 */
function testpmdBackend(name: string, relay?: (listen: string, connect: string, trace: string) => string[]): Backend {
  return {
    name,
    async start(net) {
      const dir = mkdtempSync(join(tmpdir(), 'vit-bench-'));
      const socket = join(dir, 'vhost.sock');
      const tp: Testpmd = startTestpmd({ role: 'vhost', socket, iommu: true, forwardMode: net === 'sink' ? 'rxonly' : 'macswap', memMiB: 1024, lcores: [FRONTEND_CPU, BACKEND_CPU] });
      if (!relay) return { socket, stop: async () => void (await tp.stop()), ready: () => tp.waitForLinkUp(30_000) };
      const listen = join(dir, 'relay.sock');
      let proxy: ReturnType<typeof spawnLogged> | undefined;
      const stop = async (): Promise<void> => {
        if (proxy) await terminate(proxy.child, proxy.exited, 'SIGTERM', 10_000).catch(() => undefined);
        await tp.stop();
      };
      try {
        await waitForPath(socket, 30_000, 'testpmd vhost socket');
        const argv = relay(listen, socket, join(dir, 'session.vhtrace'));
        proxy = spawnLogged(argv, name);
        await waitForPath(listen, 20_000, `${name} listening socket`);
      } catch (err) {
        await stop().catch(() => undefined);
        throw err;
      }
      return { socket: listen, stop, ready: () => tp.waitForLinkUp(30_000) };
    },
  };
}

/** DPDK's vhost behind `trace record` from the CLI at `bin`; VIT_PROXY_NODE_ARGS (space-separated) adds Node flags, e.g. --cpu-prof. */
function traceRecordBackend(name: string, bin: string): Backend {
  const nodeArgs = process.env.VIT_PROXY_NODE_ARGS?.trim().split(/\s+/) ?? [];
  return testpmdBackend(name, (listen, connect, trace) => [process.execPath, ...nodeArgs, bin, 'trace', 'record', '--listen', listen, '--connect', connect, '-o', trace, '--quiet']);
}

const BACKENDS: Backend[] = [
  ...SERVE_VARIANTS.map(serveBackend),
  testpmdBackend('dpdk-testpmd'),
  traceRecordBackend('dpdk via trace record', join(repoRoot(), 'bin', 'run.js')),
  testpmdBackend('dpdk via C relay', (listen, connect) => [cProgram('relay'), listen, connect]),
];

interface Result {
  mpps: number;
  frames: number;
  seconds: number;
  feCeilingMpps: number;
  misses: number;
  updates: number;
  invalidates: number;
  kicks: number;
  /** Mean µs from the front-end sending an UPDATE (one at a time, not pipelined) / an INVALIDATE to the back-end's ack. */
  updateAckUs: number;
  invalidateAckUs: number;
  error?: string;
}

/** One back-end with our front-end connected, warmed up, ready to measure. */
interface OpenCase {
  fe: VhostUserFrontend;
  /** Runs the front-end's busy loop for `ms`: frames moved and time in rounds that found work. */
  loop(ms: number): { frames: number; busy: number };
  close(): Promise<void>;
}

async function openCase(backend: Backend, mapping: Mapping, args: Args): Promise<OpenCase> {
  const be = await backend.start(args.net, args.pinServe);
  let fe: VhostUserFrontend | undefined;
  try {
    fe = await VhostUserFrontend.connect({
      socket: be.socket, ...mapping.opts, canary: false, memoryBytes: 128 * 1024 * 1024, queueSize: 256,
      txSlots: args.slots, rxSlots: args.slots, slotSize: 2048, mergeableRx: true, connectTimeoutMs: 30_000,
    });
    fe.conn.recordSent = false;
    fe.start();
    if (be.ready) await fe.serveUntil(be.ready());
    const frame = new Uint8Array(FRAME);
    writeFrame(frame, 0, 1, FRAME);
    fe.prefillTx(frame);
    const sink = args.net === 'sink';
    const f = fe;
    // A synchronous busy loop: post a burst, poll, repeat.
    const loop = (ms: number): { frames: number; busy: number } => {
      const end = performance.now() + ms;
      const rx0 = f.stats.rxFrames;
      const tx0 = f.stats.txCompleted;
      let busy = 0;
      let now = performance.now();
      let iter = 0;
      while (now < end) {
        let posted = 0;
        while (posted < BURST && f.txPostPrefilled(FRAME)) posted++;
        const w = f.poll() + posted;
        const t = performance.now();
        if (w !== 0) busy += t - now;
        now = t;
        if ((++iter & 0xffff) === 0 && f.conn.backendFd < 0) break;
      }
      return { frames: sink ? f.stats.txCompleted - tx0 : f.stats.rxFrames - rx0, busy };
    };
    // Warm-up: until no miss arrived for 300 ms (static mappings: every page learned), at
    // most --warmup seconds; dynamic mappings miss forever, they get 1 s.
    const warmEnd = Date.now() + (mapping.opts.iommu === 'dynamic' ? 1000 : args.warmup * 1000);
    let lastMisses = -1;
    while (Date.now() < warmEnd) {
      loop(300);
      if (f.stats.missesReceived === lastMisses) break;
      lastMisses = f.stats.missesReceived;
    }
    return { fe: f, loop, close: async () => { f.close(); await be.stop().catch(() => undefined); } };
  } catch (err) {
    fe?.close();
    await be.stop().catch(() => undefined);
    throw err;
  }
}

const perMessageUs = (ms: number, messages: number): number => (messages > 0 ? (ms * 1000) / messages : NaN);

async function runCase(backend: Backend, mapping: Mapping, args: Args): Promise<Result> {
  let c: OpenCase | undefined;
  try {
    c = await openCase(backend, mapping, args);
    const f = c.fe;
    pinSelf(String(FRONTEND_CPU));
    const s0 = { ...f.stats };
    const t0 = performance.now();
    const { frames, busy } = c.loop(args.seconds * 1000);
    const secs = (performance.now() - t0) / 1000;
    return {
      mpps: frames / secs / 1e6, frames, seconds: secs, feCeilingMpps: busy > 0 ? frames / (busy / 1000) / 1e6 : 0,
      misses: f.stats.missesReceived - s0.missesReceived, updates: f.stats.updatesSent - s0.updatesSent,
      invalidates: f.stats.invalidatesSent - s0.invalidatesSent, kicks: f.stats.kicks - s0.kicks,
      updateAckUs: perMessageUs(f.stats.updateAckMs - s0.updateAckMs, f.stats.soloUpdates - s0.soloUpdates),
      invalidateAckUs: perMessageUs(f.stats.invalidateAckMs - s0.invalidateAckMs, f.stats.invalidatesSent - s0.invalidatesSent),
    };
  } catch (err) {
    return { mpps: 0, frames: 0, seconds: 0, feCeilingMpps: 0, misses: 0, updates: 0, invalidates: 0, kicks: 0, updateAckUs: NaN, invalidateAckUs: NaN, error: (err as Error).message.split('\n')[0] };
  } finally {
    pinSelf(ALL_CPUS);
    await c?.close();
  }
}

/** Length of one slice of an interleaved measurement. */
const SLICE_MS = 100;


/** What an interleaved run compares: named groups of (back-end, mapping), `args.processes` processes each. */
interface Group {
  name: string;
  backend: Backend;
  mapping: Mapping;
}

interface InterleavedResult {
  /** Per group: Mpps of each of its processes. */
  mpps: Map<string, number[]>;
  /** Per group: all its frames. */
  frames: Map<string, number>;
  /** Per slice round (every process driven once): each group's frames. */
  rounds: Array<Map<string, number>>;
}

/**
 * Groups side by side: `args.processes` serve processes per group, all connected and warmed
 * up, and the front-end drives one at a time in turn for SLICE_MS, for `seconds` each. All
 * see the same moments of this shared machine (whose speed drifts over seconds), so the
 * ratio of two groups' frame counts measures what tells them apart, not the drift; and
 * several processes per group because one process keeps its own speed for its whole life
 * (identical ones differ by up to ±12%: docs/performance.md). Only for serve: its idle
 * worker sleeps, where DPDK's idle forwarding lcore would keep polling the shared CPU.
 */
async function interleaved(groups: Group[], args: Args): Promise<InterleavedResult> {
  const cases: OpenCase[] = [];
  const groupOf: string[] = [];
  try {
    for (let p = 0; p < args.processes; p++) {
      for (const g of groups) {
        cases.push(await openCase(g.backend, g.mapping, args));
        groupOf.push(g.name);
      }
    }
    pinSelf(String(FRONTEND_CPU));
    for (const c of cases) c.loop(200); // back to speed after the others' warm-up
    const frames = cases.map(() => 0);
    const rounds: Array<Map<string, number>> = [];
    const forward = cases.map((_, k) => k);
    const backward = [...forward].reverse();
    const slices = Math.max(2, Math.round((args.seconds * 1000) / SLICE_MS));
    for (let i = 0; i < slices; i++) {
      const round = new Map(groups.map((g) => [g.name, 0]));
      for (const k of i % 2 === 0 ? forward : backward) {
        const got = cases[k].loop(SLICE_MS).frames;
        frames[k] += got;
        round.set(groupOf[k], round.get(groupOf[k])! + got);
      }
      rounds.push(round);
    }
    const secs = (slices * SLICE_MS) / 1000;
    const result: InterleavedResult = { mpps: new Map(), frames: new Map(), rounds };
    for (const g of groups) {
      result.mpps.set(g.name, frames.flatMap((f, k) => (groupOf[k] === g.name ? [f / secs / 1e6] : [])));
      result.frames.set(g.name, frames.reduce((t, f, k) => (groupOf[k] === g.name ? t + f : t), 0));
    }
    return result;
  } finally {
    pinSelf(ALL_CPUS);
    for (const c of cases.reverse()) await c.close();
  }
}

/** Group a's frames over group b's: overall, and per slice round (rounds where b moved any). */
function groupRatio(r: InterleavedResult, a: string, b: string): { ratio: number; perRound: number[] } {
  const perRound = r.rounds.flatMap((round) => (round.get(b)! > 0 ? [round.get(a)! / round.get(b)!] : []));
  return { ratio: r.frames.get(a)! / r.frames.get(b)!, perRound };
}

/**
 * The front-end's own ceiling: the same loop against an in-process device (SplitQueue +
 * loopback from src/virtqueue) run in the same thread, so the figure is front-end AND
 * device cost together — a lower bound of what the front-end alone can drive.
 */
function frontendCeiling(args: Args): number {
  const fe = VhostUserFrontend.detached({ canary: false, memoryBytes: 128 * 1024 * 1024, queueSize: 256, txSlots: args.slots, rxSlots: args.slots, slotSize: 2048 });
  const { txq, loopback: lo } = inProcessDevice(fe);
  const frame = new Uint8Array(FRAME);
  writeFrame(frame, 0, 1, FRAME);
  fe.prefillTx(frame);
  const run = (ms: number): number => {
    const r0 = fe.stats.rxFrames;
    const end = performance.now() + ms;
    while (performance.now() < end) {
      for (let k = 0; k < 64; k++) {
        let posted = 0;
        while (posted < BURST && fe.txPostPrefilled(FRAME)) posted++;
        fe.poll();
        transmitBurst(txq, lo, BURST);
      }
    }
    return fe.stats.rxFrames - r0;
  };
  run(300);
  const t0 = performance.now();
  const n = run(Math.min(2000, args.seconds * 1000));
  const mpps = n / ((performance.now() - t0) / 1000) / 1e6;
  fe.close();
  return mpps;
}

const fmt = (x: number, d = 3): string => (Number.isFinite(x) ? x.toFixed(d) : '-');

async function main(): Promise<void> {
  const args = optionsOrExit('iommu-table', () => parseArgs(process.argv.slice(2)));
  const backends = [
    // The relayed DPDK columns measure the proxy, not the table's question: only when --only names them.
    ...BACKENDS.filter((b) => (args.only === null ? !b.name.startsWith('dpdk via') : args.only.some((o) => b.name.includes(o)))),
    ...args.extraServes.map(serveBackend),
    ...args.extraProxies.map((p) => traceRecordBackend(`dpdk via ${p.name}`, p.bin)),
  ];
  const mappings = MAPPINGS.filter((m) => args.mappings === null || args.mappings.includes(m.name));
  // Every round of every case, in round order (index = round - 1).
  const rounds = new Map<string, Result[]>();
  console.log(`# iommu-table: ${FRAME}-byte frames, --net ${args.net}, ${args.repeat} rounds of ${args.seconds} s per case after warm-up (static: until misses stop, <= ${args.warmup} s), pools of ${args.slots} x 2 KiB per ring, queue size 256; this front-end pinned to CPU ${FRONTEND_CPU}, DPDK's forwarding lcore to CPU ${BACKEND_CPU}`);
  pinSelf(String(FRONTEND_CPU));
  const ceiling = frontendCeiling(args);
  pinSelf(ALL_CPUS);
  console.log(`front-end ceiling, in-process loopback device in the same thread (front-end + device): ${fmt(ceiling)} Mpps`);
  // A back-end's mappings run back to back within a round, in alternating order from round to
  // round, so each on/off ratio pairs two runs seconds apart (the machine drifts over tens of
  // seconds); ratios are then medians over the rounds.
  for (let round = 1; round <= args.repeat; round++) for (const b of backends) {
    for (const m of round % 2 === 1 ? mappings : [...mappings].reverse()) {
      const r = await runCase(b, m, args);
      const key = `${b.name}|${m.name}`;
      const list = rounds.get(key) ?? [];
      list[round - 1] = r;
      rounds.set(key, list);
      console.log(`[${round}/${args.repeat}] ` + `${b.name.padEnd(18)} ${m.name.padEnd(8)} ${fmt(r.mpps).padStart(7)} Mpps  fe ceiling ${fmt(r.feCeilingMpps, 2).padStart(6)} Mpps  misses ${r.misses} updates ${r.updates} invalidates ${r.invalidates} kicks ${r.kicks}${r.updates > 0 ? `  acked after ${fmt(r.updateAckUs, 1)} (UPDATE) / ${fmt(r.invalidateAckUs, 1)} (INVALIDATE) µs` : ''}${r.error ? `  ERROR ${r.error}` : ''}`);
    }
  }
  /** Best Mpps of a case over the rounds (NaN when every round failed). */
  const best = (b: string, m: string): number => {
    const ok = (rounds.get(`${b}|${m}`) ?? []).filter((r) => !r.error);
    return ok.length === 0 ? NaN : Math.max(...ok.map((r) => r.mpps));
  };
  /** Per-round ratios of case (b, m) to case (b2, m2), rounds where both ran. */
  const ratios = (b: string, m: string, b2: string, m2: string): number[] => {
    const xs = rounds.get(`${b}|${m}`) ?? [];
    const ys = rounds.get(`${b2}|${m2}`) ?? [];
    return xs.flatMap((x, i) => (x && !x.error && ys[i] && !ys[i].error && ys[i].mpps > 0 ? [x.mpps / ys[i].mpps] : []));
  };
  const ratioCell = (xs: number[]): string => (xs.length === 0 ? '-' : xs.length === 1 ? fmt(xs[0], 2) : `${fmt(median(xs), 2)} (${fmt(Math.min(...xs), 2)}–${fmt(Math.max(...xs), 2)})`);
  const ours = backends.filter((b) => b.name !== 'dpdk-testpmd');
  console.log(`\nMpps: best round. on/off and ours/DPDK: median of the per-round ratios (range) over ${args.repeat} rounds.`);
  console.log('\n| mapping | ' + backends.map((b) => `${b.name} Mpps | on/off`).join(' | ') + ' | ' + ours.map((b) => `${b.name}/DPDK`).join(' | ') + ' |');
  console.log('|' + ' --- |'.repeat(1 + backends.length * 2 + ours.length));
  for (const m of mappings) {
    const cells: string[] = [m.name];
    for (const b of backends) {
      const mpps = best(b.name, m.name);
      cells.push(Number.isNaN(mpps) ? 'error' : fmt(mpps));
      cells.push(ratioCell(ratios(b.name, m.name, b.name, 'off')));
    }
    for (const b of ours) cells.push(ratioCell(ratios(b.name, m.name, 'dpdk-testpmd', m.name)));
    console.log(`| ${cells.join(' | ')} |`);
  }
  // Where a dynamic frame's time goes: the two acked round trips it costs, as the front-end saw them.
  const dynamicRows = mappings.filter((m) => m.opts.iommu === 'dynamic');
  if (dynamicRows.length > 0) {
    console.log(`\nDynamic mappings, µs per frame and per acked request as the front-end waited for them (median over rounds): frame / UPDATE sent → ack (those sent one at a time) / INVALIDATE sent → ack.\n`);
    console.log('| mapping | ' + backends.map((b) => b.name).join(' | ') + ' |');
    console.log('|' + ' --- |'.repeat(1 + backends.length));
    for (const m of dynamicRows) {
      const cells = backends.map((b) => {
        const ok = (rounds.get(`${b.name}|${m.name}`) ?? []).filter((r) => r && !r.error && r.frames > 0);
        if (ok.length === 0) return '-';
        const med = (f: (r: Result) => number): string => fmt(median(ok.map(f)), 1);
        return `${med((r) => (r.seconds * 1e6) / r.frames)} / ${med((r) => r.updateAckUs)} / ${med((r) => r.invalidateAckUs)}`;
      });
      console.log(`| ${m.name} | ${cells.join(' | ')} |`);
    }
  }
  // IOMMU on/off for serve measured interleaved (interleaved() says why), static mappings.
  const interleavedRatios = new Map<string, number>();
  const each = (xs: number[]): string => xs.map((x) => fmt(x, 2)).join(', ');
  const staticMappings = mappings.filter((m) => m.opts.iommu === 'static');
  if (args.interleave && staticMappings.length > 0) {
    console.log(`\nIOMMU on/off interleaved: ${args.processes} serve processes with IOMMU off and ${args.processes} with the mapping, the front-end driving one at a time in turn for ${SLICE_MS} ms, ${args.seconds} s each; ratio of total frames (median and range of the per-round ratios).\n`);
    console.log('| back-end | mapping | off Mpps (each process) | on Mpps (each process) | on/off | per-round median (range) | cross-core ns before / after |');
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    const off = MAPPINGS.find((m) => m.name === 'off')!;
    for (const b of ours) for (const m of staticMappings) {
      try {
        const before = await crossCoreRoundTrip();
        const r = await interleaved([{ name: 'off', backend: b, mapping: off }, { name: 'on', backend: b, mapping: m }], args);
        const after = await crossCoreRoundTrip();
        const { ratio, perRound } = groupRatio(r, 'on', 'off');
        interleavedRatios.set(`${b.name}|${m.name}`, ratio);
        console.log(`| ${b.name} | ${m.name} | ${each(r.mpps.get('off')!)} | ${each(r.mpps.get('on')!)} | ${fmt(ratio)} | ${ratioCell(perRound)} | ${before.toFixed(0)} / ${after.toFixed(0)} |`);
      } catch (err) {
        console.log(`| ${b.name} | ${m.name} | error: ${(err as Error).message.split('\n')[0]} | | | |`);
      }
    }
  }
  // Dynamic mappings: each serve variant against the `dpdk` strategy, interleaved likewise.
  const dynamicMappings = mappings.filter((m) => m.opts.iommu === 'dynamic');
  const reference = ours.find((b) => b.name === 'serve/dpdk');
  if (args.interleave && dynamicMappings.length > 0 && reference !== undefined && ours.length > 1) {
    const others = ours.filter((b) => b !== reference);
    console.log(`\nDynamic mappings interleaved: ${args.processes} processes of each serve variant, the front-end driving one at a time in turn for ${SLICE_MS} ms, ${args.seconds} s each; frames/s of each process, and each variant over the \`dpdk\` strategy (median and range of the per-round ratios).\n`);
    console.log('| mapping | ' + ours.map((b) => `${b.name} k frames/s`).join(' | ') + ' | ' + others.map((b) => `${b.name} / serve/dpdk`).join(' | ') + ' |');
    console.log('|' + ' --- |'.repeat(1 + ours.length + others.length));
    for (const m of dynamicMappings) {
      try {
        const r = await interleaved(ours.map((b) => ({ name: b.name, backend: b, mapping: m })), args);
        const cells = ours.map((b) => r.mpps.get(b.name)!.map((x) => fmt(x * 1000, 1)).join(', '));
        for (const b of others) {
          const { ratio, perRound } = groupRatio(r, b.name, reference.name);
          interleavedRatios.set(`${b.name}|${m.name}`, ratio);
          cells.push(`${fmt(ratio, 2)} (${ratioCell(perRound)})`);
        }
        console.log(`| ${m.name} | ${cells.join(' | ')} |`);
      } catch (err) {
        console.log(`| ${m.name} | error: ${(err as Error).message.split('\n')[0]} |`);
      }
    }
  }
  console.log('\nTargets:');
  console.log(`  coalescing on/off at 2M, median of paired rounds: ${ratioCell(ratios('serve/coalescing', '2M', 'serve/coalescing', 'off'))}; interleaved: ${fmt(interleavedRatios.get('serve/coalescing|2M') ?? NaN)} (target >= 0.99)`);
  const dynamicCell = (b: string, m: string): string => `${ratioCell(ratios(b, m, 'serve/dpdk', m))}; interleaved: ${fmt(interleavedRatios.get(`${b}|${m}`) ?? NaN, 2)}`;
  console.log(`  dynamic, coalescing / dpdk strategy: ${dynamicCell('serve/coalescing', 'dynamic')} (target >= 2)`);
  console.log(`  dynamic, coalescing+batch / dpdk strategy: ${dynamicCell('serve/coalescing+batch', 'dynamic')} (target >= 2)`);
  console.log(`  dynamic with pipelined miss replies, coalescing+batch / dpdk strategy: ${dynamicCell('serve/coalescing+batch', 'dynamic-pipelined')} (target >= 2)`);
  console.log(`  front-end ceiling (with an in-process device): ${fmt(ceiling)} Mpps vs best measured ${fmt(Math.max(...[...rounds.values()].flat().map((r) => r.mpps)))} Mpps`);
  process.exit(0);
}

answerHelp(import.meta.url);
main().catch((err) => {
  console.error(err);
  process.exit(1);
});

/**
 * A real Linux guest behind a vIOMMU, through each back-end: how many 64-byte frames per
 * second move between a QEMU (TCG) guest and DPDK's vhost, serve's strategies, and DPDK
 * behind the `trace record` proxy.
 *
 *   node dist/bench/guest-iommu.js [--rows off,strict,lazy] [--directions tx,rx] [--rounds 2]
 *        [--only 'DPDK vhost,serve coalescing'] [--frames N] [--seconds S] [--json]
 *        [--serve-args '--flag value'] [--serve-bin name=/other/checkout/bin/run.js]...
 *        [--serve-variant 'name=--flag value']... [--cpu N] [--lcores-cpu N] [--syscalls]
 *        [--job-timeout S]
 *
 * Rows (guest configurations):
 *   off     no IOMMU
 *   strict  QEMU `-device intel-iommu,intremap=off,device-iotlb=on`, NIC `iommu_platform=on,ats=on`,
 *           guest `intel_iommu=on iommu.strict=1` (every unmap flushed and forwarded)
 *   lazy    the same with Linux's default lazy (DMA-FQ) invalidation: unmaps are flushed in
 *           batches. QEMU 8.0 and later forward each flush as two INVALIDATEs over the whole
 *           IOVA space; QEMU before 8.0 forwards only some of its pages (docs/peers.md), and
 *           serve then runs with `--iotlb-reuse per-burst`, which is correct there. DPDK's
 *           vhost drops the half that reaches 2^64 (see `DPDK vhost end-fixed`) and reads
 *           stale translations (the frames still count)
 * Directions:
 *   tx      guest → back-end: guest pktgen, vit.pktsize=60 (64 bytes on the wire with FCS), N frames,
 *           into serve `--net sink` / testpmd `rxonly`; the rate is pktgen's own (frames / its usec)
 *   rx      back-end → guest: serve `--net source --frame-size 64` / testpmd `txonly --txpkts=64
 *           --eth-peer=0,<guest MAC>` (both send UDP to the guest's MAC, so the guest does the same
 *           work per frame); the guest's /init mode rx-count reads eth0 rx_packets over S seconds of
 *           its /proc/uptime
 * Columns (back-ends; rows with the IOMMU off run only DPDK vhost and serve coalescing, plus --serve-bin / --serve-variant ones):
 *   DPDK vhost              dpdk-testpmd --vdev net_vhost0,iface=SOCK,iommu-support=1
 *   DPDK lcores             (only with --cpu or --lcores-cpu) the same, with only its two lcores on that CPU
 *   DPDK vhost end-fixed    the same under bench/c/invalidate-end.c (LD_PRELOAD): DPDK computes the end
 *                           of QEMU's INVALIDATE [0xfef00000, 2^64) as 0 and removes nothing, so a lazy
 *                           guest's flushes never reach it; the shim clamps that end to 2^64 - 1. The
 *                           lazy rows' ratios are to this column when it runs (it changes nothing
 *                           in the strict rows, whose INVALIDATEs end below 2^64)
 *   serve dpdk              serve --iotlb-strategy dpdk
 *   serve coalescing        serve --iotlb-strategy coalescing
 *   serve coalescing first  serve --iotlb-strategy coalescing --no-iotlb-batch-misses (only the miss a burst stopped at)
 *   DPDK via trace record   QEMU → `vhost-iotlb trace record` proxy → DPDK vhost
 *   DPDK via C relay        QEMU → bench/c/relay.c → DPDK vhost: the same extra hop per message
 *                           through the smallest relay (C, blocking in poll, nothing recorded),
 *                           the anchor for the proxy's cost; built with `cc` when first needed
 *   NAME coalescing         --serve-bin NAME=PATH: serve from PATH (another checkout's bin/run.js), coalescing;
 *                           --serve-variant 'NAME=FLAGS': this checkout's serve with FLAGS, coalescing
 *
 * Every cell is a fresh back-end and a fresh guest boot (only the job's seconds are measured).
 * Round r runs every column of a row once, in an order rotated by r, so a slow phase of the
 * shared 2-CPU machine hits every back-end alike; the table gives the median over rounds, the
 * ratio to DPDK vhost's median from the same run, and each round's value. Serve cells also show
 * the IOTLB miss round trip p50 when serve's state (`inspect --json`) carries `roundTrips`.
 * Nothing is pinned by default: QEMU's vCPU and I/O threads share the two CPUs with the back-end
 * (testpmd's forwarding lcore busy-polls one CPU; serve's worker polls while there is work).
 * --cpu N confines each back-end to CPU N, every thread of it: serve and testpmd under
 * `taskset -c N` (testpmd with both lcores on N); the `DPDK lcores` column puts only the lcores
 * there, leaving DPDK's control thread (vhost-events, which reads and acks IOTLB messages) on
 * the other CPU. QEMU stays free to use every CPU.
 * --lcores-cpu N adds the `DPDK lcores` column (lcores on CPU N) and leaves every other column
 * free: with `--serve-variant 'pinned=--cpus N'` (serve's worker on N, its other threads off
 * it), what each back-end gains or loses from a polling CPU of its own, in one run.
 * --syscalls records each back-end's sendmsg / recvmsg with perf from link up to the job's end
 * and prints, per cell, how long QEMU took to answer its misses and how long the back-end took
 * from an answer to its next miss (syscall-timeline.ts): the same view of DPDK and serve.
 * --job-timeout S (default 300): a cell whose guest has not finished its job S seconds after
 * QEMU started counts as an error (a stalled back-end; DPDK's vhost behind a lazy guest
 * stalls in some rounds, with or without its INVALIDATE end fixed).
 * Not a test: figures depend on the machine (TCG guest, 2 CPUs, maybe shared).
 */
import Table from 'cli-table3';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { controlRequest } from '../src/control/control-client.js';
import { ensureGuest, guestDir, qemuBinary, qemuVersion, startGuest, type Guest } from '../test/peers/qemu.js';
import { startTestpmd, testpmdBinary, type Testpmd } from '../test/peers/dpdk.js';
import { MissingPeerError, repoRoot, sleep, spawnLogged, terminate, waitForPath, type LineLog } from '../test/peers/util.js';
import { median } from './median.js';
import { answerHelp, optionsOrExit, checkoutBin, serveVariant } from './options.js';
import { cProgram } from './c-program.js';
import { describeTimeline, SyscallRecorder, type SyscallTimeline } from './syscall-timeline.js';

/** The MAC test/peers/qemu.ts gives the guest (serve's source addresses its frames to it). */
const GUEST_MAC = '52:54:00:12:34:56';

export type GuestRow = 'off' | 'strict' | 'lazy';
export type Direction = 'tx' | 'rx';
export const ROWS: GuestRow[] = ['off', 'strict', 'lazy'];
export const DIRECTIONS: Direction[] = ['tx', 'rx'];
const ROW_LABEL: Record<GuestRow, string> = { off: 'IOMMU off', strict: 'intel-iommu, iommu.strict=1', lazy: 'intel-iommu, lazy (default)' };
const DIR_LABEL: Record<Direction, string> = { tx: 'guest → back-end (guest pktgen, 64 B)', rx: 'back-end → guest (guest counts rx_packets, 64 B)' };

export interface GuestColumn {
  name: string;
  kind: 'dpdk' | 'serve' | 'dpdk-trace' | 'dpdk-relay';
  /** serve: strategy and extra flags. */
  serveArgs?: string[];
  /** serve: the bin/run.js to run (default this checkout's). */
  serveBin?: string;
  /** Runs on rows with the IOMMU off too. */
  plain: boolean;
  /** DPDK: with --cpu only its lcores go on that CPU, its control threads stay free (a column only with --cpu). */
  lcoresOnly?: boolean;
  /** DPDK: run under bench/c/invalidate-end.c, so that an INVALIDATE reaching 2^64 removes what it covers. */
  invalidateEndFixed?: boolean;
}

export const BASELINE = 'DPDK vhost';
/** The baseline of the lazy rows when run: DPDK's vhost drops none of a lazy guest's flushes there. */
export const LAZY_BASELINE = 'DPDK vhost end-fixed';

export const COLUMNS: GuestColumn[] = [
  { name: BASELINE, kind: 'dpdk', plain: true },
  { name: 'DPDK lcores', kind: 'dpdk', plain: true, lcoresOnly: true },
  { name: LAZY_BASELINE, kind: 'dpdk', plain: false, invalidateEndFixed: true },
  { name: 'serve dpdk', kind: 'serve', serveArgs: ['--iotlb-strategy', 'dpdk'], plain: false },
  { name: 'serve coalescing', kind: 'serve', serveArgs: ['--iotlb-strategy', 'coalescing'], plain: true },
  { name: 'serve coalescing first', kind: 'serve', serveArgs: ['--iotlb-strategy', 'coalescing', '--no-iotlb-batch-misses'], plain: false },
  { name: 'DPDK via trace record', kind: 'dpdk-trace', plain: false },
  { name: 'DPDK via C relay', kind: 'dpdk-relay', plain: false },
];

/**
 * pktgen frames per tx run, for ~5-15 s of sending. Measured here (TCG guest, 2 CPUs, shared):
 * IOMMU off ~40-190 k frames/s; strict ~4-11 k/s (one miss, one UPDATE and one INVALIDATE per
 * frame: every pktgen skb is mapped at a fresh IOVA and its unmap is flushed); lazy ~10-27 k/s.
 * Rates swing 2-4x with the machine's load, so use --frames to fit a run.
 */
export const DEFAULT_FRAMES: Record<GuestRow, number> = { off: 600_000, strict: 80_000, lazy: 150_000 };
export const DEFAULT_SECONDS = 8;
/** A cell's guest, boot to the job's end: DPDK's vhost on one CPU needs minutes (~80 frames/s); a stalled back-end never ends. */
export const DEFAULT_JOB_TIMEOUT_S = 300;

export interface CellRun {
  round: number;
  /** Frames per second (tx: pktgen's; rx: the guest's rx_packets over its uptime). */
  pps: number;
  /** tx: frames pktgen sent; rx: frames the guest counted. */
  frames: number;
  /** Seconds the rate is taken over (pktgen's / the guest's clock). */
  seconds: number;
  /** Frames the back-end counted: tx received (whole session), rx sent (whole session). */
  backendFrames?: number;
  /** rx: frames the guest dropped (rx_dropped) while counting. */
  dropped?: number;
  /** serve: IOTLB miss round trip p50 (µs) from `roundTrips` in its state, when present, and its samples. */
  missP50Us?: number;
  missCount?: number;
  /** ms from QEMU spawn to the guest's VIT-BOOT, to VIT-LINK up, and to the end of the job. */
  bootMs?: number;
  linkMs?: number;
  jobMs?: number;
  /** Wall time of the whole cell (back-end start to everything stopped). */
  wallMs: number;
  /** --syscalls: the back-end's round trips from link up to the job's end. */
  syscalls?: SyscallTimeline;
  /** The guest while it sent or counted (`VIT-CPU`): share of its CPU busy (0..1), its virtio NIC's interrupts per 1000 frames. */
  guestBusy?: number;
  irqPerKFrames?: number;
  error?: string;
}

export interface GuestCell {
  row: GuestRow;
  direction: Direction;
  column: string;
  runs: CellRun[];
  /** Median pps over the rounds without error (NaN if none). */
  pps: number;
  /** pps / DPDK vhost's median pps in the same row and direction. */
  ratio: number;
  missP50Us?: number;
  errors: number;
}

export interface GuestIommuOptions {
  rows?: GuestRow[];
  directions?: Direction[];
  rounds?: number;
  /** Column names (exact, or a substring) to keep; default all. */
  only?: string[];
  /** tx frames per run (default DEFAULT_FRAMES per row). */
  frames?: number;
  /** rx seconds counted per run. */
  seconds?: number;
  /** Extra flags for every serve. */
  serveArgs?: string[];
  /** Extra serve builds: name → bin/run.js; each adds a column 'NAME coalescing'. */
  serveBins?: Array<{ name: string; bin: string }>;
  /** This build with extra flags: name → flags; each adds a column 'NAME coalescing' (placements, policies side by side). */
  serveVariants?: Array<{ name: string; args: string[] }>;
  /** Confine each back-end to this CPU (all its threads). */
  cpu?: number;
  /** The `DPDK lcores` column with its lcores on this CPU, every other column left free (ignored with cpu). */
  lcoresCpu?: number;
  /** Record each back-end's sendmsg / recvmsg with perf and print where its round trips go (syscall-timeline.ts). */
  syscalls?: boolean;
  /** Seconds a cell's guest may take from boot to the job's end before the cell counts as stalled (default 300). */
  jobTimeoutS?: number;
  progress?: (line: string) => void;
}

export function columnsFor(opts: Pick<GuestIommuOptions, 'only' | 'serveBins' | 'serveVariants' | 'cpu' | 'lcoresCpu'>): GuestColumn[] {
  const extra: GuestColumn[] = [
    ...(opts.serveBins ?? []).map(({ name, bin }): GuestColumn => ({
      name: `${name} coalescing`, kind: 'serve', serveArgs: ['--iotlb-strategy', 'coalescing'], serveBin: bin, plain: true,
    })),
    ...(opts.serveVariants ?? []).map(({ name, args }): GuestColumn => ({
      name: `${name} coalescing`, kind: 'serve', serveArgs: ['--iotlb-strategy', 'coalescing', ...args], plain: true,
    })),
  ];
  const all = [...COLUMNS.filter((c) => !c.lcoresOnly || opts.cpu !== undefined || opts.lcoresCpu !== undefined), ...extra];
  if (!opts.only) return all;
  // an exact name picks that column ('serve coalescing' not also 'serve coalescing first'); otherwise a substring.
  // --serve-bin / --serve-variant columns were asked for by name: --only never drops them.
  const wanted = (c: GuestColumn): boolean => extra.includes(c) || opts.only!.some((o) => (all.some((x) => x.name === o) ? c.name === o : c.name.includes(o)));
  return all.filter(wanted);
}

/** Checks the peers before anything starts: throws MissingPeerError naming the Debian package. */
export function checkPeers(columns: GuestColumn[]): void {
  qemuBinary();
  if (columns.some((c) => c.kind !== 'serve')) testpmdBinary();
  // ensureGuest() builds only a missing image; the script is a ~40 ms no-op when its stamp matches,
  // and rebuilds when it changed (e.g. for the rx-count mode).
  const dir = guestDir();
  const r = spawnSync('bash', [join(repoRoot(), 'scripts', 'build-guest.sh'), dir], { encoding: 'utf8' });
  if (r.status !== 0) {
    const msg = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
    if (/busybox/.test(msg)) throw new MissingPeerError('static busybox (guest image)', 'busybox-static');
    if (/vmlinuz|linux-image/.test(msg)) throw new MissingPeerError('a kernel in /boot (guest image)', 'linux-image-amd64');
    throw new Error(`guest image build failed (bash scripts/build-guest.sh ${dir}):\n${msg}`);
  }
  ensureGuest(dir);
}

// ---------------------------------------------------------------------------------------------
// back-ends

interface Backend {
  /** The socket QEMU connects to. */
  socket: string;
  /** Frames the back-end counted (tx: received, rx: sent), read once the guest's job is over. */
  frames(): Promise<number | undefined>;
  /** serve: its state (for roundTrips), read at the end of the job while the guest is still connected. */
  state?(): Promise<unknown>;
  stop(): Promise<void>;
  log(): string[];
  /** The back-end's process (for --syscalls). */
  pid(): number | undefined;
}

const runJs = (): string => join(repoRoot(), 'bin', 'run.js');

async function startServeBackend(dir: string, col: GuestColumn, direction: Direction, extra: string[], cpu: number | undefined): Promise<Backend> {
  const socket = join(dir, 'vhost.sock');
  const control = join(dir, 'control.sock');
  const net = direction === 'tx' ? ['--net', 'sink'] : ['--net', 'source', '--frame-size', '64'];
  const argv = [
    ...(cpu === undefined ? [] : ['taskset', '-c', String(cpu)]),
    process.execPath, col.serveBin ?? runJs(), 'serve', '--socket', socket, '--control', control, ...net, '--quiet', ...(col.serveArgs ?? []), ...extra,
  ];
  const { child, log, exited } = spawnLogged(argv, col.name);
  const deadline = Date.now() + 20_000;
  while (!existsSync(control) || !existsSync(socket)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`${col.name}: serve did not open its sockets (${argv.slice(1).join(' ')}):\n${log.lines.slice(-15).join('\n')}`);
    }
    await sleep(50);
  }
  const state = (): Promise<unknown> => controlRequest(control, 'state', {}, 3000);
  return {
    socket,
    state,
    async frames() {
      try {
        const s = (await state()) as { queues?: Array<{ kind?: string; counters?: { packets?: number } | null }> };
        const kind = direction === 'tx' ? 'tx' : 'rx';
        return (s.queues ?? []).filter((q) => q.kind === kind).reduce((n, q) => n + (q.counters?.packets ?? 0), 0);
      } catch {
        return undefined;
      }
    },
    async stop() {
      await terminate(child, exited, 'SIGTERM', 10_000);
    },
    log: () => log.lines,
    pid: () => child.pid,
  };
}

async function startDpdkBackend(dir: string, col: GuestColumn, direction: Direction, iommu: boolean, cpu: number | undefined): Promise<Backend> {
  const dpdkSock = join(dir, 'dpdk.sock');
  const tp: Testpmd = startTestpmd({
    role: 'vhost', socket: dpdkSock, iommu, forwardMode: direction === 'tx' ? 'rxonly' : 'txonly', cpu, lcoresOnly: col.lcoresOnly,
    // Frames addressed to the guest, as serve's source addresses them: a frame for another MAC
    // is dropped by the guest's driver path before its IP layer, which costs the (TCG, so
    // CPU-bound) guest less per frame and made DPDK look ~1.4x faster than serve for that alone.
    extraArgs: direction === 'rx' ? ['--txpkts=64', `--eth-peer=0,${GUEST_MAC}`] : [], timeoutMs: 600_000,
    prefix: col.invalidateEndFixed ? ['env', `LD_PRELOAD=${cProgram('invalidate-end', { shared: true })}`] : undefined,
  });
  let proxy: { child: ReturnType<typeof spawnLogged>['child']; log: LineLog; exited: ReturnType<typeof spawnLogged>['exited'] } | undefined;
  const proxySocket = join(dir, 'proxy.sock');
  try {
    await waitForPath(dpdkSock, 30_000, 'testpmd vhost socket');
    if (col.kind === 'dpdk-trace') {
      proxy = spawnLogged([process.execPath, runJs(), 'trace', 'record', '--listen', proxySocket, '--connect', dpdkSock, '-o', join(dir, 'session.vhtrace'), '--quiet'], 'trace record');
    } else if (col.kind === 'dpdk-relay') {
      proxy = spawnLogged([cProgram('relay'), proxySocket, dpdkSock], 'C relay');
    }
    if (proxy) await waitForPath(proxySocket, 20_000, `${col.name} --listen socket`);
  } catch (err) {
    await tp.stop().catch(() => undefined);
    if (proxy) await terminate(proxy.child, proxy.exited, 'SIGTERM', 5000).catch(() => undefined);
    throw err;
  }
  let fin: Awaited<ReturnType<Testpmd['stop']>> | undefined;
  const stopAll = async (): Promise<void> => {
    if (proxy) await terminate(proxy.child, proxy.exited, 'SIGTERM', 10_000).catch(() => undefined);
    fin ??= await tp.stop();
  };
  return {
    socket: proxy ? proxySocket : dpdkSock,
    async frames() {
      await stopAll();
      const f = fin?.forward[0];
      const n = fin?.nic[0];
      if (direction === 'tx') return f?.rxPackets ?? n?.rxPackets;
      return f?.txPackets ?? n?.txPackets;
    },
    stop: stopAll,
    pid: () => tp.process.pid,
    log: () => [...tp.lines.slice(-20), ...(proxy?.log.lines.slice(-10) ?? [])],
  };
}

// ---------------------------------------------------------------------------------------------
// one cell

/** pktgen's result: "Result: OK: <usec>(c..+d..) usec, <frames> (60byte,0frags)", then "  <pps>pps ...". */
export function parsePktgen(lines: string[]): { usec: number; frames: number; pps: number } | undefined {
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i]!.match(/Result: OK: (\d+)\(c\d+\+d\d+\) usec, (\d+) \(/);
    if (!m) continue;
    const usec = Number(m[1]);
    const frames = Number(m[2]);
    const own = (lines[i + 1] ?? '').match(/^\s*(\d+)pps\b/) ?? lines[i]!.match(/\b(\d+)pps\b/);
    return { usec, frames, pps: own ? Number(own[1]) : (frames * 1e6) / usec };
  }
  return undefined;
}

export function parseRxCount(lines: string[]): { packets: number; dropped: number; centis: number } | undefined {
  for (const l of lines) {
    const m = l.match(/^VIT-RESULT rx-count packets (\d+) dropped (\d+) centis (\d+)/);
    if (m) return { packets: Number(m[1]), dropped: Number(m[2]), centis: Number(m[3]) };
  }
  return undefined;
}

/**
 * The IOTLB miss round trip p50 (µs) in serve's state, wherever `roundTrips` sits: the
 * summary under a key naming misses (or roundTrips itself) with a p50 field; the one with the
 * most samples if there are several (e.g. per queue). undefined when serve has none.
 */
export function missP50(state: unknown): number | undefined {
  return missRoundTrip(state)?.p50;
}

/** missP50's summary with its sample count (0 when the summary has none). */
export function missRoundTrip(state: unknown): { p50: number; count: number } | undefined {
  const found: Array<{ p50: number; count: number }> = [];
  const p50Of = (o: Record<string, unknown>): number | undefined => {
    for (const k of ['p50Us', 'p50us', 'p50', 'medianUs', 'median']) if (typeof o[k] === 'number') return o[k] as number;
    return undefined;
  };
  const walk = (v: unknown, inRoundTrips: boolean, missPath: boolean, depth: number): void => {
    if (depth > 8 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      for (const x of v) walk(x, inRoundTrips, missPath, depth + 1);
      return;
    }
    const o = v as Record<string, unknown>;
    if (inRoundTrips && missPath) {
      const p = p50Of(o);
      if (p !== undefined) found.push({ p50: p, count: typeof o.count === 'number' ? o.count : 0 });
    }
    for (const [k, x] of Object.entries(o)) {
      const rt = inRoundTrips || k === 'roundTrips';
      walk(x, rt, missPath || (rt && /miss/i.test(k)), depth + 1);
    }
  };
  walk(state, false, false, 0);
  if (found.length === 0) {
    // roundTrips without a miss-named key: take its own summary if it has one
    const rt = (function find(v: unknown, d: number): unknown {
      if (d > 8 || v === null || typeof v !== 'object') return undefined;
      if (!Array.isArray(v) && 'roundTrips' in (v as object)) return (v as Record<string, unknown>).roundTrips;
      for (const x of Object.values(v as object)) {
        const r = find(x, d + 1);
        if (r !== undefined) return r;
      }
      return undefined;
    })(state, 0);
    if (!rt || typeof rt !== 'object' || Array.isArray(rt)) return undefined;
    const p = p50Of(rt as Record<string, unknown>);
    const n = (rt as Record<string, unknown>).count;
    return p === undefined ? undefined : { p50: p, count: typeof n === 'number' ? n : 0 };
  }
  found.sort((a, b) => b.count - a.count);
  return found[0]!;
}

async function runCell(row: GuestRow, direction: Direction, col: GuestColumn, round: number, opts: Required<Pick<GuestIommuOptions, 'seconds' | 'serveArgs'>> & { frames: number; cpu?: number; syscalls?: boolean; jobTimeoutMs: number; lazyPerBurst: boolean }): Promise<CellRun> {
  const t0 = performance.now();
  const iommu = row !== 'off';
  const dir = mkdtempSync(join(tmpdir(), 'vit-gi-'));
  let backend: Backend | undefined;
  let guest: Guest | undefined;
  let recorder: SyscallRecorder | undefined;
  const fail = (msg: string): CellRun => ({ round, pps: NaN, frames: 0, seconds: 0, wallMs: performance.now() - t0, error: msg });
  try {
    backend = col.kind === 'serve'
      ? await startServeBackend(dir, col, direction, row === 'lazy' && opts.lazyPerBurst ? ['--iotlb-reuse', 'per-burst', ...opts.serveArgs] : opts.serveArgs, opts.cpu)
      : await startDpdkBackend(dir, col, direction, iommu, opts.cpu);
    const spawnAt = performance.now();
    guest = startGuest({
      socketPath: backend.socket,
      mode: direction === 'tx' ? 'pktgen' : 'rx-count',
      args: direction === 'tx' ? { count: opts.frames, pktsize: 60 } : { hold: opts.seconds, pre: 1 },
      iommu,
      ...(row === 'strict' ? { extraKernelArgs: 'iommu.strict=1' } : {}),
      timeoutMs: opts.jobTimeoutMs,
    });
    const g = guest;
    let linkMs: number | undefined;
    const pid = backend.pid();
    void g.waitFor(/^VIT-LINK up/, opts.jobTimeoutMs).then(() => {
      linkMs = performance.now() - spawnAt;
      if (opts.syscalls && pid !== undefined) recorder = new SyscallRecorder(pid, join(dir, 'syscalls.perf'), g.process.pid);
    }, () => undefined);
    // The job's end, while the guest is still connected: serve's state then has this session's figures.
    const end = direction === 'tx' ? /Result: |^VIT-RESULT pktgen|^VIT-RESULT error/ : /^VIT-RESULT (rx-count|error)/;
    await g.waitFor(end, opts.jobTimeoutMs).catch(() => undefined);
    const jobMs = performance.now() - spawnAt;
    const syscalls = recorder === undefined ? undefined : await recorder.stop();
    recorder = undefined;
    let state: unknown;
    if (backend.state) state = await backend.state().catch(() => undefined);
    const r = await g.result();
    const backendFrames = await backend.frames();
    const base = {
      round, wallMs: 0, jobMs, ...(r.bootMs !== undefined ? { bootMs: r.bootMs } : {}), ...(linkMs !== undefined ? { linkMs } : {}),
      ...(backendFrames !== undefined ? { backendFrames } : {}),
      ...(syscalls !== undefined ? { syscalls } : {}),
    };
    const rt = state === undefined ? undefined : missRoundTrip(state);
    if (rt !== undefined) Object.assign(base, { missP50Us: rt.p50, missCount: rt.count });
    const tail = (): string => r.lines.filter((l) => l.trim() !== '').slice(-8).join(' | ');
    if (r.error) return { ...base, ...fail(`guest: ${r.error}: ${tail()}`) };
    if (direction === 'tx') {
      const pg = parsePktgen(r.lines);
      if (!pg || !r.pktgen?.ok) return { ...base, ...fail(`pktgen did not finish (timedOut=${r.timedOut}): ${tail()}`) };
      return { ...base, ...guestCpu(r.cpu, pg.frames), pps: pg.pps, frames: pg.frames, seconds: pg.usec / 1e6, wallMs: performance.now() - t0 };
    }
    const rc = parseRxCount(r.lines);
    if (!rc || rc.centis <= 0) return { ...base, ...fail(`no rx-count result (timedOut=${r.timedOut}): ${tail()}`) };
    return { ...base, ...guestCpu(r.cpu, rc.packets), pps: rc.packets / (rc.centis / 100), frames: rc.packets, dropped: rc.dropped, seconds: rc.centis / 100, wallMs: performance.now() - t0 };
  } catch (err) {
    const more = backend ? `\n${backend.log().slice(-10).join('\n')}` : '';
    return fail(`${(err as Error).message.split('\n')[0]}${more ? ' (back-end log tail: ' + more.trim().split('\n').slice(-3).join(' | ') + ')' : ''}`);
  } finally {
    recorder?.discard();
    await guest?.kill().catch(() => undefined);
    await backend?.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// the run

export async function runGuestIommuBench(opts: GuestIommuOptions = {}): Promise<GuestCell[]> {
  const rows = opts.rows ?? ROWS;
  const directions = opts.directions ?? DIRECTIONS;
  const rounds = opts.rounds ?? 2;
  const seconds = opts.seconds ?? DEFAULT_SECONDS;
  const progress = opts.progress ?? ((l: string) => process.stderr.write(`${l}\n`));
  const columns = columnsFor(opts);
  if (columns.length === 0) throw new Error(`--only ${opts.only?.join(',')} matches no column (${COLUMNS.map((c) => c.name).join(', ')})`);
  checkPeers(columns);
  // QEMU before 8.0 does not forward a lazy guest's flushes (docs/peers.md): serve then runs
  // the lazy rows with `--iotlb-reuse per-burst`. Behind 8.0 and later its default is correct.
  const lazyPerBurst = qemuVersion()[0] < 8;
  const cells: GuestCell[] = [];
  for (const row of rows) {
    const cols = columns.filter((c) => row !== 'off' || c.plain);
    if (cols.length === 0) continue;
    const frames = opts.frames ?? DEFAULT_FRAMES[row];
    for (const direction of directions) {
      const runs = new Map<string, CellRun[]>(cols.map((c) => [c.name, []]));
      for (let round = 0; round < rounds; round++) {
        const k = round % cols.length;
        const order = [...cols.slice(k), ...cols.slice(0, k)];
        for (const col of order) {
          const cpu = col.lcoresOnly ? opts.cpu ?? opts.lcoresCpu : opts.cpu;
          const r = await runCell(row, direction, col, round + 1, { frames, seconds, serveArgs: opts.serveArgs ?? [], cpu, syscalls: opts.syscalls, jobTimeoutMs: (opts.jobTimeoutS ?? DEFAULT_JOB_TIMEOUT_S) * 1000, lazyPerBurst });
          runs.get(col.name)!.push(r);
          const where = `[${row} ${direction} ${round + 1}/${rounds}] ${col.name.padEnd(24)}`;
          const times = `boot ${fmtS(r.bootMs)} link ${fmtS(r.linkMs)} job ${fmtS(r.jobMs)} wall ${fmtS(r.wallMs)}`;
          if (r.error) progress(`${where} ERROR ${r.error}  [${times}]`);
          else {
            const be = r.backendFrames === undefined ? '' : direction === 'tx' ? `, back-end received ${r.backendFrames}` : `, back-end sent ${r.backendFrames}`;
            const drop = r.dropped ? `, guest dropped ${r.dropped}` : '';
            const lat = r.missP50Us !== undefined ? `, miss p50 ${r.missP50Us} µs of ${r.missCount} misses` : '';
            const guest = r.guestBusy !== undefined ? `, guest ${describeGuest(r.guestBusy, r.irqPerKFrames!)}` : '';
            progress(`${where} ${fmtPps(r.pps).padStart(8)} pps (${r.frames} frames in ${r.seconds.toFixed(2)} s${be}${drop}${lat}${guest})  [${times}]`);
            if (r.syscalls) for (const line of describeTimeline(r.syscalls)) progress(`    ${line}`);
          }
        }
      }
      const rowCells = cols.map((c): GuestCell => {
        const rs = runs.get(c.name)!;
        const ok = rs.filter((r) => !r.error);
        const lats = ok.map((r) => r.missP50Us).filter((x): x is number => x !== undefined);
        return {
          row, direction, column: c.name, runs: rs, pps: median(ok.map((r) => r.pps)), ratio: NaN,
          ...(lats.length > 0 ? { missP50Us: median(lats) } : {}), errors: rs.length - ok.length,
        };
      });
      const base = rowCells.find((c) => c.column === baselineOf(row, rowCells.map((x) => x.column)));
      for (const c of rowCells) c.ratio = base ? c.pps / base.pps : NaN;
      cells.push(...rowCells);
    }
  }
  return cells;
}

/** The column a row's ratios are to: DPDK vhost, or in the lazy row DPDK vhost with the INVALIDATE end fixed when it ran. */
export function baselineOf(row: GuestRow, columns: string[]): string {
  return row === 'lazy' && columns.includes(LAZY_BASELINE) ? LAZY_BASELINE : BASELINE;
}

// ---------------------------------------------------------------------------------------------
// output

function fmtS(ms: number | undefined): string {
  return ms === undefined ? '-' : `${(ms / 1000).toFixed(1)} s`;
}

export function fmtPps(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M`;
  if (x >= 1e4) return `${(x / 1e3).toFixed(1)} k`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(2)} k`;
  return x.toFixed(0);
}

/** Which column the ratios of these cells are to. */
function baselineNote(cells: GuestCell[]): string {
  const lazy = baselineOf('lazy', cells.filter((c) => c.row === 'lazy').map((c) => c.column));
  return lazy === BASELINE ? "DPDK vhost's" : `DPDK vhost's (lazy: ${lazy}'s)`;
}

/** One table per direction: rows = guest IOMMU setups, columns = back-ends (+ miss p50 beside each serve column). */
export function guestIommuTables(cells: GuestCell[], columns: GuestColumn[]): string {
  const out: string[] = [];
  for (const direction of DIRECTIONS) {
    const dcells = cells.filter((c) => c.direction === direction);
    if (dcells.length === 0) continue;
    const cols = columns.filter((col) => dcells.some((c) => c.column === col.name));
    const head = ['guest'];
    for (const col of cols) {
      head.push(col.name.replace(/ /g, '\n').replace('via\ntrace\nrecord', 'via trace\nrecord'));
      if (col.kind === 'serve') head.push('miss\np50 µs');
    }
    const table = new Table({ head, style: { head: [], border: [] } });
    for (const row of ROWS) {
      const rcells = dcells.filter((c) => c.row === row);
      if (rcells.length === 0) continue;
      const line: string[] = [ROW_LABEL[row].replace(', ', ',\n')];
      for (const col of cols) {
        const c = rcells.find((x) => x.column === col.name);
        if (!c) {
          line.push('');
          if (col.kind === 'serve') line.push('');
          continue;
        }
        const each = c.runs.map((r) => (r.error ? 'err' : fmtPps(r.pps))).join(' / ');
        const ratio = Number.isFinite(c.ratio) ? `${c.ratio.toFixed(2)}x` : '-';
        line.push(`${fmtPps(c.pps)}\n${ratio}\n(${each})`);
        if (col.kind === 'serve') line.push(c.missP50Us !== undefined ? String(c.missP50Us) : '-');
      }
      table.push(line);
    }
    out.push(`${DIR_LABEL[direction]}: median pps, ratio to ${baselineNote(dcells)} median, (each round)`);
    out.push(table.toString());
  }
  return out.join('\n');
}

/** The same tables in Markdown (for bench/report.md). */
export function guestIommuMarkdown(cells: GuestCell[], columns: GuestColumn[]): string {
  const out: string[] = [];
  for (const direction of DIRECTIONS) {
    const dcells = cells.filter((c) => c.direction === direction);
    if (dcells.length === 0) continue;
    const cols = columns.filter((col) => dcells.some((c) => c.column === col.name));
    const head = ['guest', ...cols.flatMap((col) => (col.kind === 'serve' ? [col.name, 'miss p50 µs'] : [col.name]))];
    const lines = [`| ${head.join(' | ')} |`, `|${' --- |'.repeat(head.length)}`];
    for (const row of ROWS) {
      const rcells = dcells.filter((c) => c.row === row);
      if (rcells.length === 0) continue;
      const line = [ROW_LABEL[row]];
      for (const col of cols) {
        const c = rcells.find((x) => x.column === col.name);
        const each = c ? c.runs.map((r) => (r.error ? 'err' : fmtPps(r.pps))).join(' / ') : '';
        line.push(c ? `${fmtPps(c.pps)} (${Number.isFinite(c.ratio) ? c.ratio.toFixed(2) : '-'}x; ${each})` : '');
        if (col.kind === 'serve') line.push(c?.missP50Us !== undefined ? String(c.missP50Us) : '-');
      }
      lines.push(`| ${line.join(' | ')} |`);
    }
    out.push(`${DIR_LABEL[direction]}: median pps (ratio to ${baselineNote(dcells)} median; each round)\n\n${lines.join('\n')}`);
  }
  return out.join('\n\n');
}

/** CellRun's guest figures from the guest's `VIT-CPU` line (absent from a guest image built before it). */
function guestCpu(cpu: { busy: number; total: number; interrupts: number } | undefined, frames: number): Pick<CellRun, 'guestBusy' | 'irqPerKFrames'> {
  if (cpu === undefined || cpu.total <= 0 || frames <= 0) return {};
  return { guestBusy: cpu.busy / cpu.total, irqPerKFrames: (cpu.interrupts * 1000) / frames };
}

/** The guest's side of a cell, as the progress lines and the summary print it. */
function describeGuest(busy: number, irqPerKFrames: number): string {
  return `${(busy * 100).toFixed(0)}% busy, ${irqPerKFrames.toFixed(irqPerKFrames < 10 ? 1 : 0)} NIC interrupts per 1000 frames`;
}

/**
 * What the guest did per back-end: medians over the rounds of its CPU's busy share and of the
 * interrupts it took per 1000 frames. A back-end that interrupts the guest more often, or keeps
 * it spinning (pktgen busy-waits on a full ring), shows here before it shows in the rate.
 */
export function guestSummary(cells: GuestCell[]): string {
  const lines: string[] = [];
  for (const c of cells) {
    const ok = c.runs.filter((r) => !r.error && r.guestBusy !== undefined);
    if (ok.length === 0) continue;
    const busy = median(ok.map((r) => r.guestBusy!));
    const irq = median(ok.map((r) => r.irqPerKFrames!));
    lines.push(`  ${c.row.padEnd(6)} ${c.direction} ${c.column.padEnd(24)} ${describeGuest(busy, irq)}`);
  }
  return lines.join('\n');
}

/** Where the wall time went: median boot, link-up and job time per row and direction. */
export function timeSummary(cells: GuestCell[]): string {
  const lines: string[] = [];
  for (const row of ROWS) {
    for (const direction of DIRECTIONS) {
      const runs = cells.filter((c) => c.row === row && c.direction === direction).flatMap((c) => c.runs);
      if (runs.length === 0) continue;
      const m = (f: (r: CellRun) => number | undefined): string => fmtS(median(runs.map(f).filter((x): x is number => x !== undefined)));
      const measured = median(runs.filter((r) => !r.error).map((r) => r.seconds * 1000));
      lines.push(`  ${row.padEnd(6)} ${direction}: ${runs.length} cells; median boot ${m((r) => r.bootMs)}, link up ${m((r) => r.linkMs)}, ` +
        `job done ${m((r) => r.jobMs)}, measured ${fmtS(measured)}, wall per cell ${m((r) => r.wallMs)}`);
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// CLI

function list<T extends string>(v: string | undefined, allowed: readonly T[], flag: string): T[] {
  const xs = (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  for (const x of xs) if (!allowed.includes(x as T)) throw new Error(`${flag}: unknown "${x}" (one of ${allowed.join(', ')})`);
  return xs as T[];
}

export function parseArgs(argv: string[]): GuestIommuOptions & { json: boolean } {
  const a: GuestIommuOptions & { json: boolean } = { json: false };
  const num = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (!(n > 0) || !Number.isInteger(n)) throw new Error(`${flag} needs a positive integer, got "${v}"`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const v = argv[i + 1];
    switch (flag) {
      case '--rows': a.rows = list(v, ROWS, flag); i++; break;
      case '--directions': a.directions = list(v, DIRECTIONS, flag); i++; break;
      case '--only': a.only = (v ?? '').split(',').map((s) => s.trim()).filter(Boolean); i++; break;
      case '--frames': a.frames = num(flag, v); i++; break;
      case '--seconds': a.seconds = num(flag, v); i++; break;
      case '--rounds': a.rounds = num(flag, v); i++; break;
      case '--job-timeout': a.jobTimeoutS = num(flag, v); i++; break;
      case '--serve-args': a.serveArgs = [...(a.serveArgs ?? []), ...(v ?? '').split(/\s+/).filter(Boolean)]; i++; break;
      case '--serve-bin': a.serveBins = [...(a.serveBins ?? []), checkoutBin(v)]; i++; break;
      case '--serve-variant': a.serveVariants = [...(a.serveVariants ?? []), serveVariant(v)]; i++; break;
      case '--cpu': case '--lcores-cpu': {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} needs a CPU number, got "${v}"`);
        if (flag === '--cpu') a.cpu = n;
        else a.lcoresCpu = n;
        i++;
        break;
      }
      case '--json': a.json = true; break;
      case '--syscalls': a.syscalls = true; break;
      default: throw new Error(`unknown argument ${flag}`);
    }
  }
  return a;
}

async function main(): Promise<void> {
  const args = optionsOrExit('guest-iommu', () => parseArgs(process.argv.slice(2)));
  const t0 = performance.now();
  const rows = args.rows ?? ROWS;
  const columns = columnsFor(args);
  const frames = args.frames !== undefined ? String(args.frames) : rows.map((r) => `${r} ${DEFAULT_FRAMES[r]}`).join(', ');
  console.log(`# guest-iommu: QEMU (TCG) Linux guest, rows ${rows.join(',')}, directions ${(args.directions ?? DIRECTIONS).join(',')}, ` +
    `${args.rounds ?? 2} rounds, back-ends ${columns.map((c) => c.name).join(', ')}; tx frames ${frames}; rx ${args.seconds ?? DEFAULT_SECONDS} s` +
    (args.serveArgs?.length ? `; serve extra args: ${args.serveArgs.join(' ')}` : '') +
    (args.cpu !== undefined ? `; each back-end confined to CPU ${args.cpu}` : '') +
    (args.cpu === undefined && args.lcoresCpu !== undefined ? `; DPDK lcores on CPU ${args.lcoresCpu}, the rest free` : ''));
  let cells: GuestCell[];
  try {
    cells = await runGuestIommuBench(args);
  } catch (err) {
    console.error(err instanceof MissingPeerError || /--only/.test((err as Error).message) ? (err as Error).message : err);
    process.exit(2);
  }
  console.log('');
  if (args.json) console.log(JSON.stringify(cells, null, 2));
  else {
    console.log(guestIommuTables(cells, columns));
    const guest = guestSummary(cells);
    if (guest !== '') console.log(`\nthe guest while it sent or counted (medians over the rounds):\n${guest}`);
    console.log(`\nwhere the time went (per cell: QEMU spawn → VIT-BOOT → link up → job done):\n${timeSummary(cells)}`);
  }
  console.log(`\n(${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  answerHelp(import.meta.url);
  main().then(() => process.exit(0), (err) => {
    console.error(err);
    process.exit(1);
  });
}

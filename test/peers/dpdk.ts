// Runs dpdk-testpmd as a vhost-user peer:
//   role 'virtio-user': a vhost-user FRONTEND (--vdev net_virtio_user0,path=SOCK) -- drives a backend like ours
//   role 'vhost':       DPDK's own vhost-user BACKEND (--vdev net_vhost0,iface=SOCK) -- a reference to compare with
//
//   const tp = startTestpmd({ role: 'vhost', socket, forwardMode: 'macswap' });
//   await tp.waitForLinkUp(30_000);
//   ... tp.stats()[0]?.rxPackets ...
//   const fin = await tp.stop();          // SIGINT: testpmd prints forward statistics and exits
//
// Known-good EAL (see docs/peers.md): --no-huge -m 1024 --no-pci, two lcores, a unique --file-prefix,
// --single-file-segments for virtio-user; testpmd needs --stats-period (else, without stdin, it exits).
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { LineLog, exitPromise, killOnExit, requireBinary, terminate, uniqueName, waitForPath, type Exit } from './util.js';

export type TestpmdRole = 'virtio-user' | 'vhost';
export type ForwardMode = 'txonly' | 'rxonly' | 'io' | 'macswap' | 'mac' | 'flowgen' | 'csum' | 'icmpecho';

export interface TestpmdOptions {
  role: TestpmdRole;
  /**
   * vhost-user unix socket path; several paths make several ports (net_vhost0, net_vhost1, ...),
   * which testpmd pairs (port 0 <-> port 1 in io/mac modes).
   */
  socket: string | string[];
  queues?: number;
  forwardMode: ForwardMode;
  /** virtio-user only: packed virtqueues (packed_vq=1). */
  packed?: boolean;
  /** vhost only: iommu-support=1 (offers VIRTIO_F_IOMMU_PLATFORM, handles IOTLB messages). */
  iommu?: boolean;
  /**
   * Socket server side? virtio-user: server=1 (testpmd listens). vhost: testpmd listens by default;
   * server: false adds client=1 (testpmd connects, e.g. to QEMU server=on). Default: virtio-user false, vhost true.
   */
  server?: boolean;
  /** [main lcore, forwarding lcore]. Default alternates [0,1] / [1,0] between processes (2-CPU machines). */
  lcores?: [number, number];
  /** Run the whole process on this one CPU (taskset, and EAL --lcores 0@CPU,1@CPU) instead of one CPU per lcore. */
  cpu?: number;
  /** With `cpu`: only the lcores go there; EAL's control threads (vhost-events) stay free, on the other CPUs. */
  lcoresOnly?: boolean;
  /**
   * Forwarding lcores (testpmd --nb-cores), default 1. More than one all run on the forwarding
   * CPU (`lcores[1]`, or `cpu`), time-sliced there, with the queues spread over them.
   */
  forwardingCores?: number;
  /**
   * One CPU per forwarding lcore (lcore k on forwardCpus[k - 1]; forwardingCores defaults to
   * its length), the main lcore on `lcores[0]`: lcores that scale instead of sharing a CPU.
   */
  forwardCpus?: number[];
  filePrefix?: string;
  /** EAL -m (MiB of --no-huge memory). Default 1024. */
  memMiB?: number;
  /** Extra EAL args (before --). */
  extraEal?: string[];
  /** Extra testpmd args (after --), e.g. ['--txpkts=64', '--burst=32', '--eth-peer=0,52:54:00:12:34:56']. */
  extraArgs?: string[];
  /** Extra ,key=value for the --vdev string, e.g. 'mac=02:00:00:00:00:01' or 'queue_size=256'. */
  extraVdev?: string;
  /** Echo output lines to stderr with this prefix (also VIT_PEER_ECHO=1). */
  echo?: string;
  /** Hard limit after which testpmd is killed. Default 120 s. */
  timeoutMs?: number;
  /** A command to run testpmd under, e.g. `ip netns exec NAME` (Netns.execPrefix()). */
  prefix?: string[];
}

/** One "NIC statistics for port N" block (periodic, cumulative since start). */
export interface NicStats {
  rxPackets: number;
  rxMissed: number;
  rxBytes: number;
  rxErrors: number;
  rxNombuf: number;
  txPackets: number;
  txErrors: number;
  txBytes: number;
  /**
   * "Throughput (since last show)": packets/s over the last stats period, timed by testpmd
   * itself (TSC), so it is exact whenever the block reaches us (stdout is a pipe).
   */
  rxPps: number;
  txPps: number;
}

/** A "Forward statistics for port N" / "Accumulated forward statistics" block (printed on stop). */
export interface FwdStats {
  rxPackets: number;
  rxDropped: number;
  rxTotal: number;
  txPackets: number;
  txDropped: number;
  txTotal: number;
}

export interface FinalStats {
  /** Last NIC statistics seen per port (periodic output). */
  nic: Record<number, NicStats>;
  /** Forward statistics per port printed at exit (empty if testpmd died without printing them). */
  forward: Record<number, FwdStats>;
  accumulated?: FwdStats;
  exit: Exit;
  lines: string[];
}

export interface Testpmd {
  process: ChildProcess;
  lines: string[];
  argv: string[];
  filePrefix: string;
  /** Latest parsed periodic NIC statistics, per port. */
  stats(): Record<number, NicStats>;
  /** Resolves once the link is up (vhost: a frontend connected and its rings are ready). */
  waitForLinkUp(timeoutMs?: number): Promise<void>;
  /** Resolves with port stats once pred(stats) holds (checked at every periodic stats block). */
  waitForStats(pred: (s: Record<number, NicStats>) => boolean, timeoutMs?: number): Promise<Record<number, NicStats>>;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<Exit>;
  /** SIGINT; testpmd prints the forward statistics and exits (SIGKILL after timeoutMs). */
  stop(timeoutMs?: number): Promise<FinalStats>;
}

export function testpmdBinary(): string {
  return requireBinary('dpdk-testpmd', 'dpdk');
}

let lcoreFlip = 0;

/** EAL --lcores: lcore 0 (main) on `mainCpu`, lcore l (1..forwarding) on `forwardCpu(l)`. */
function lcoreMap(mainCpu: number, forwardCpu: (lcore: number) => number, forwarding: number): string {
  const map = [`0@${mainCpu}`];
  for (let l = 1; l <= forwarding; l++) map.push(`${l}@${forwardCpu(l)}`);
  return map.join(',');
}

export function testpmdArgs(opts: TestpmdOptions, filePrefix: string): string[] {
  const q = opts.queues ?? 1;
  let lcores = opts.lcores;
  if (!lcores) {
    lcores = lcoreFlip % 2 === 0 ? [0, 1] : [1, 0];
    lcoreFlip += 1;
  }
  const sockets = Array.isArray(opts.socket) ? opts.socket : [opts.socket];
  const vdevs = sockets.map((sock, i) => {
    let vdev: string;
    if (opts.role === 'virtio-user') {
      vdev = `net_virtio_user${i},path=${sock},queues=${q}`;
      if (opts.packed) vdev += ',packed_vq=1';
      if (opts.server === true) vdev += ',server=1';
    } else {
      vdev = `net_vhost${i},iface=${sock},queues=${q}`;
      if (opts.iommu) vdev += ',iommu-support=1';
      if (opts.server === false) vdev += ',client=1';
    }
    if (opts.extraVdev) vdev += `,${opts.extraVdev}`;
    return vdev;
  });
  const spread = opts.forwardCpus;
  const forwarding = opts.forwardingCores ?? spread?.length ?? 1;
  if (spread !== undefined && spread.length < forwarding) throw new Error(`testpmd: ${forwarding} forwarding lcores but forwardCpus names ${spread.length} CPUs`);
  const forwardCpu = (l: number): number => opts.cpu ?? spread?.[l - 1] ?? lcores[1];
  const placement = opts.cpu === undefined && spread === undefined && forwarding === 1
    ? ['-l', `${Math.min(...lcores)},${Math.max(...lcores)}`, '--main-lcore', String(lcores[0])]
    : ['--lcores', lcoreMap(opts.cpu ?? lcores[0], forwardCpu, forwarding), '--main-lcore', '0'];
  const eal = [
    ...placement,
    '--no-huge', '-m', String(opts.memMiB ?? 1024), '--no-pci',
    '--file-prefix', filePrefix,
    ...(opts.role === 'virtio-user' ? ['--single-file-segments'] : []),
    ...vdevs.flatMap((v) => ['--vdev', v]),
    ...(opts.extraEal ?? []),
  ];
  const app = [
    `--forward-mode=${opts.forwardMode}`,
    '--stats-period', '1',
    `--txq=${q}`, `--rxq=${q}`,
    `--nb-cores=${forwarding}`,
    // the default pool (~155k mbufs, ~340 MB) takes seconds to populate on a busy 2-CPU machine
    ...((opts.extraArgs ?? []).some((a) => a.startsWith('--total-num-mbufs')) ? [] : ['--total-num-mbufs=16384']),
    ...(opts.extraArgs ?? []),
  ];
  return [...eal, '--', ...app];
}

function emptyNic(): NicStats {
  return { rxPackets: 0, rxMissed: 0, rxBytes: 0, rxErrors: 0, rxNombuf: 0, txPackets: 0, txErrors: 0, txBytes: 0, rxPps: 0, txPps: 0 };
}
function emptyFwd(): FwdStats {
  return { rxPackets: 0, rxDropped: 0, rxTotal: 0, txPackets: 0, txDropped: 0, txTotal: 0 };
}
const NIC_KEYS: Record<string, keyof NicStats> = {
  'RX-packets': 'rxPackets', 'RX-missed': 'rxMissed', 'RX-bytes': 'rxBytes', 'RX-errors': 'rxErrors',
  'RX-nombuf': 'rxNombuf', 'TX-packets': 'txPackets', 'TX-errors': 'txErrors', 'TX-bytes': 'txBytes',
  'Rx-pps': 'rxPps', 'Tx-pps': 'txPps',
};
const FWD_KEYS: Record<string, keyof FwdStats> = {
  'RX-packets': 'rxPackets', 'RX-dropped': 'rxDropped', 'RX-total': 'rxTotal',
  'TX-packets': 'txPackets', 'TX-dropped': 'txDropped', 'TX-total': 'txTotal',
};

/** Incremental parser for testpmd's stats output. Exported for unit use. */
export class TestpmdStatsParser {
  nic: Record<number, NicStats> = {};
  forward: Record<number, FwdStats> = {};
  accumulated: FwdStats | undefined;
  /** Number of complete NIC statistics blocks seen. */
  nicBlocks = 0;
  onNicBlock: (() => void) | undefined;
  private cur: { kind: 'nic'; port: number; s: NicStats } | { kind: 'fwd'; port: number; s: FwdStats } | { kind: 'acc'; s: FwdStats } | undefined;

  line(line: string): void {
    let m = line.match(/NIC statistics for port (\d+)/);
    if (m) {
      this.end();
      this.cur = { kind: 'nic', port: Number(m[1]), s: emptyNic() };
      return;
    }
    m = line.match(/Forward statistics for port (\d+)/);
    if (m) {
      this.end();
      this.cur = { kind: 'fwd', port: Number(m[1]), s: emptyFwd() };
      return;
    }
    if (/Accumulated forward statistics/.test(line)) {
      this.end();
      this.cur = { kind: 'acc', s: emptyFwd() };
      return;
    }
    if (!this.cur) return;
    const t = line.trim();
    // A NIC block runs to its closing ### line: a blank line and "Throughput" come before its pps lines.
    if (this.cur.kind === 'nic' && (t === '' || /Throughput/.test(t))) return;
    if (t === '' || /^[#+-]{8,}$/.test(t)) {
      this.end();
      return;
    }
    const keys: Record<string, string> = this.cur.kind === 'nic' ? NIC_KEYS : FWD_KEYS;
    const target = this.cur.s as unknown as Record<string, number>;
    for (const mm of t.matchAll(/([A-Za-z]+-[A-Za-z]+):\s*(\d+)/g)) {
      const k = keys[mm[1]!];
      if (k) target[k] = Number(mm[2]);
    }
  }

  end(): void {
    const c = this.cur;
    this.cur = undefined;
    if (!c) return;
    if (c.kind === 'nic') {
      this.nic = { ...this.nic, [c.port]: c.s };
      this.nicBlocks += 1;
      this.onNicBlock?.();
    } else if (c.kind === 'fwd') this.forward = { ...this.forward, [c.port]: c.s };
    else this.accumulated = c.s;
  }
}

export function startTestpmd(opts: TestpmdOptions): Testpmd {
  const bin = testpmdBinary();
  const filePrefix = opts.filePrefix ?? uniqueName('vit');
  const argv = testpmdArgs(opts, filePrefix);
  // stdbuf -oL: testpmd's stdout is a pipe, which glibc would buffer in 4 KiB chunks, so
  // periodic stats blocks would reach us seconds late and in bursts. stdbuf execs testpmd
  // (same pid, signals reach it directly).
  // With opts.cpu every thread stays on that CPU (taskset), DPDK's control threads included:
  // EAL would otherwise put them on the CPUs its lcores leave free.
  const confine = opts.cpu !== undefined && !opts.lcoresOnly;
  const command = [...(opts.prefix ?? []), ...(confine ? ['taskset', '-c', String(opts.cpu)] : []), 'stdbuf', '-oL', bin, ...argv];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(child);
  const log = new LineLog();
  if (opts.echo !== undefined) log.echoPrefix = opts.echo;
  else if (process.env.VIT_PEER_ECHO) log.echoPrefix = `[testpmd ${opts.role}] `;
  const parser = new TestpmdStatsParser();
  const statWaiters = new Set<() => void>();
  parser.onNicBlock = () => {
    for (const w of [...statWaiters]) w();
  };
  log.onLine = (l) => parser.line(l);
  log.attach(child.stdout, 'stdout');
  log.attach(child.stderr, 'stderr');
  let spawnError: Error | undefined;
  child.on('error', (e) => {
    spawnError = e;
  });
  const raw = exitPromise(child);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const timer = setTimeout(() => {
    log.push(`\n[peers] testpmd killed after timeout ${timeoutMs} ms\n`, 'helper');
    void terminate(child, raw, 'SIGINT', 5000);
  }, timeoutMs);
  const exited = raw.then(async (e) => {
    clearTimeout(timer);
    await new Promise((r) => setImmediate(r));
    parser.end();
    log.close(`testpmd exited code=${e.code} signal=${e.signal}${spawnError ? ' ' + spawnError.message : ''}`);
    for (const w of [...statWaiters]) w();
    try {
      rmSync(`/var/run/dpdk/${filePrefix}`, { recursive: true, force: true });
    } catch {
      /* not ours to worry about */
    }
    return e;
  });

  // Link up: vhost role -> each frontend's rings are ready (DPDK logs "(<sock>) virtio is now ready
  // for processing", testpmd then prints the LSC event). virtio-user -> the port started: in client
  // mode connect + negotiation happen in port start; in server mode (server=1) device init blocks in
  // "waiting for client connection..." until the backend connects, so forwarding starts after it.
  const esc = (t: string): string => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const sockets = Array.isArray(opts.socket) ? opts.socket : [opts.socket];
  const linkRes =
    opts.role === 'vhost'
      ? sockets.map((sk) => new RegExp(`\\(${esc(sk)}\\) virtio is now ready for processing`))
      : [/start packet forwarding|Press enter to exit/];

  return {
    process: child,
    lines: log.lines,
    argv: [bin, ...argv],
    filePrefix,
    stats: () => parser.nic,
    async waitForLinkUp(ms = 30_000) {
      const end = Date.now() + ms;
      for (const re of linkRes) await log.waitFor(re, Math.max(1, end - Date.now()), `testpmd(${opts.role}) link up`);
    },
    waitForStats(pred, ms = 30_000) {
      return new Promise((resolveP, rejectP) => {
        const check = (): boolean => {
          if (pred(parser.nic)) {
            done();
            resolveP(parser.nic);
            return true;
          }
          if (log.closed) {
            done();
            rejectP(new Error(`testpmd(${opts.role}): exited before the stats condition held; last stats ${JSON.stringify(parser.nic)}\n${log.tail()}`));
            return true;
          }
          return false;
        };
        const timer2 = setTimeout(() => {
          done();
          rejectP(new Error(`testpmd(${opts.role}): stats condition not met within ${ms} ms; last stats ${JSON.stringify(parser.nic)}\n${log.tail()}`));
        }, ms);
        const w = (): void => {
          check();
        };
        const done = (): void => {
          clearTimeout(timer2);
          statWaiters.delete(w);
        };
        if (!check()) statWaiters.add(w);
      });
    },
    waitFor: (re, ms = 30_000) => log.waitFor(re, ms, `testpmd(${opts.role})`),
    exited,
    async stop(ms = 10_000) {
      const exit = await terminate(child, exited, 'SIGINT', ms);
      await exited;
      return {
        nic: parser.nic,
        forward: parser.forward,
        ...(parser.accumulated ? { accumulated: parser.accumulated } : {}),
        exit,
        lines: log.lines,
      };
    },
  };
}

/**
 * DPDK's vhost (io forwarding) between the vhost-user socket `socket` and a tap PMD that creates
 * `tap` where `prefix` runs it (a network namespace); resolves once the socket exists. io
 * forwarding gives the tap PMD no checksum offload, so a guest behind it must run with its
 * offloads off: its partial checksums would reach the kernel unfinished.
 */
export async function startVhostTap(opts: { socket: string; tap: string; prefix: string[]; iommu: boolean; timeoutMs: number }): Promise<Testpmd> {
  const testpmd = startTestpmd({
    role: 'vhost', socket: opts.socket, iommu: opts.iommu, forwardMode: 'io', prefix: opts.prefix, lcores: [0, 1],
    timeoutMs: opts.timeoutMs, extraEal: ['--vdev', `net_tap0,iface=${opts.tap}`],
  });
  try {
    await waitForPath(opts.socket, 30_000, 'testpmd vhost-user socket');
  } catch (err) {
    await testpmd.stop();
    throw err;
  }
  return testpmd;
}

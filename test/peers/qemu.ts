// Boots the tiny test guest (scripts/build-guest.sh) in QEMU with a vhost-user virtio-net device.
//
//   const g = startGuest({ socketPath, mode: 'ping', args: { count: 5 } });
//   await g.waitFor(/VIT-LINK up/, 60_000);
//   const r = await g.result();          // waits for VIT-DONE / QEMU exit, parses VIT-* lines
//
// Facts baked in (see docs/peers.md): TCG only (KVM guests hang here), vectors=0 (QEMU 7.2 TCG
// segfaults in vhost_net_start with MSI-X), romfile= (no iPXE), memfd shared memory (vhost-user
// needs fds), intel-iommu with intremap=off (no kernel irqchip under TCG anyway).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  LineLog,
  MissingPeerError,
  exitPromise,
  killOnExit,
  repoRoot,
  requireBinary,
  terminate,
  waitForPath,
  type Exit,
} from './util.js';

export type GuestMode = 'ping' | 'tcp-send' | 'tcp-recv' | 'http-send' | 'http-recv' | 'pktgen' | 'idle' | 'rx-count' | 'shell';

export interface GuestOptions {
  /** vhost-user unix socket. QEMU connects to it (client), or creates it when server is true. */
  socketPath: string;
  mode: GuestMode;
  /**
   * vit.* kernel parameters without the prefix, e.g. { ip: '192.0.2.2/24', peer: '192.0.2.1',
   * peermac: '02:..', count: 5, port: 5201, mib: 4, listen: 1, pktsize: 60, linkwait: 30, hold: 0, pre: 0 }.
   */
  args?: Record<string, string | number>;
  /** intel-iommu (device-iotlb=on) + iommu_platform=on,ats=on on the NIC + intel_iommu=on in the guest. */
  iommu?: boolean;
  /** packed virtqueues (packed=on). */
  packed?: boolean;
  /** QEMU is the vhost-user socket server (server=on,wait=off); the backend must connect with client mode. */
  server?: boolean;
  /** As the client, QEMU reconnects every second when the back-end goes away (reconnect=1). */
  reconnect?: boolean;
  /** A guest reboot restarts the guest instead of ending QEMU (no -no-reboot). */
  reboot?: boolean;
  /**
   * QEMU's own userspace network back-end instead of vhost-user: `-netdev tap,ifname=NAME,
   * vhost=off` (the yardstick serve is measured against); socketPath is then unused.
   */
  tap?: string;
  /** false: the NIC offers no checksum or segmentation offload (csum=off, guest_csum=off, ...). */
  offloads?: boolean;
  /** These of the NIC's offloads (OFFLOAD_PROPERTIES) turned off, the others left on. */
  offloadsOff?: readonly OffloadProperty[];
  /** virtio-net-pci host_mtu: the MTU QEMU gives the guest (and the back-end, NET_SET_MTU). */
  hostMtu?: number;
  /** argv QEMU runs under, e.g. ['ip', 'netns', 'exec', NS] (must exec, so the pid is QEMU's). */
  prefix?: string[];
  /** Guest MAC; default 52:54:00:12:34:56. */
  mac?: string;
  /** Guest memory (memfd, share=on); default 512. */
  memMiB?: number;
  /** Queue pairs (> 1 adds mq=on). Default 1. */
  queues?: number;
  /** vCPUs (Linux uses min(queue pairs, CPUs) queue pairs). Default 1. */
  cpus?: number;
  /** Hard limit: QEMU is killed after this long. Default 90 s. */
  timeoutMs?: number;
  /** Image directory holding vmlinuz + initramfs.cpio.gz. Default <repo>/.guest (built on demand). */
  guestDir?: string;
  extraQemuArgs?: string[];
  /** Appended to the kernel command line. */
  extraKernelArgs?: string;
  /** Echo every serial line to stderr with this prefix (also enabled by VIT_PEER_ECHO=1). */
  echo?: string;
}

export interface GuestStats {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  rxDropped: number;
  txDropped: number;
}

export interface GuestResult {
  /** Every serial (and QEMU stderr) line. */
  lines: string[];
  /** Payloads of all `VIT-RESULT ...` lines in order. */
  results: string[];
  /** VIT-DONE was printed (the init ran to completion). */
  done: boolean;
  /** The QEMU process was killed by the timeout. */
  timedOut: boolean;
  exit: Exit;
  /** ms from spawn to the VIT-BOOT line (init started). */
  bootMs?: number;
  link?: { mac: string };
  ping?: { ok: boolean; received: number; sent: number };
  sha256?: { hex: string; bytes: number };
  tcp?: { ok: boolean; rc: number };
  pktgen?: { ok: boolean; sent: number; errors: number };
  stats?: GuestStats;
  /** tcp-*, http-*, pktgen, rx-count: over the job, the guest CPU's jiffies busy (not idle) of total, and the interrupts its virtio NIC raised (`VIT-CPU`). */
  cpu?: { busy: number; total: number; interrupts: number };
  /** From `VIT-RESULT error <what>`. */
  error?: string;
}

export interface Guest {
  process: ChildProcess;
  /** Live array of lines seen so far. */
  lines: string[];
  /** Resolves with all lines when QEMU exits. */
  serial: Promise<string[]>;
  exited: Promise<Exit>;
  /** Full QEMU argv (for logs / docs). */
  argv: string[];
  /** First line (from the start) matching re. Rejects on timeout or if QEMU exits first. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Waits for QEMU to exit (guest powers off after VIT-DONE), then parses. Never rejects on guest failure. */
  result(): Promise<GuestResult>;
  /** Writes to the serial console (mode 'shell'). */
  write(text: string): void;
  /** SIGTERM then SIGKILL; resolves when QEMU is gone. */
  kill(): Promise<Exit>;
}

export function guestDir(): string {
  return process.env.VIT_GUEST_DIR ?? join(repoRoot(), '.guest');
}

/** Makes sure the guest image exists (runs scripts/build-guest.sh, which is fast when up to date). */
export function ensureGuest(dir = guestDir()): { kernel: string; initrd: string } {
  const kernel = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initramfs.cpio.gz');
  if (!existsSync(kernel) || !existsSync(initrd)) {
    const r = spawnSync('bash', [join(repoRoot(), 'scripts', 'build-guest.sh'), dir], { encoding: 'utf8' });
    if (r.status !== 0 || !existsSync(kernel) || !existsSync(initrd)) {
      const msg = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
      if (/busybox/.test(msg)) throw new MissingPeerError('static busybox (guest image)', 'busybox-static');
      if (/vmlinuz|linux-image/.test(msg)) throw new MissingPeerError('a kernel in /boot (guest image)', 'linux-image-amd64');
      throw new Error(`guest image build failed (bash scripts/build-guest.sh ${dir}):\n${msg}`);
    }
  }
  return { kernel, initrd };
}

export function qemuBinary(): string {
  return requireBinary('qemu-system-x86_64', 'qemu-system-x86');
}

/** The installed QEMU's version, [major, minor], from `qemu-system-x86_64 --version`. */
export function qemuVersion(): [number, number] {
  const out = spawnSync(qemuBinary(), ['--version'], { encoding: 'utf8' }).stdout ?? '';
  const m = out.match(/version (\d+)\.(\d+)/);
  if (!m) throw new Error(`cannot read QEMU's version from: ${out.trim()}`);
  return [Number(m[1]), Number(m[2])];
}

/** virtio-net-pci's checksum and segmentation offload properties (each a feature bit it offers). */
export const OFFLOAD_PROPERTIES = ['csum', 'guest_csum', 'gso', 'host_tso4', 'host_tso6', 'host_ecn', 'host_ufo', 'guest_tso4', 'guest_tso6', 'guest_ecn', 'guest_ufo'] as const;
export type OffloadProperty = (typeof OFFLOAD_PROPERTIES)[number];

/** Builds the QEMU argv (without the binary). Exposed for docs and debugging. */
export function qemuArgs(opts: GuestOptions, image: { kernel: string; initrd: string }): string[] {
  const mem = opts.memMiB ?? 512;
  const mac = opts.mac ?? '52:54:00:12:34:56';
  const queues = opts.queues ?? 1;
  const kargs = ['console=ttyS0', 'panic=-1', 'quiet', `vit.mode=${opts.mode}`];
  if (opts.iommu) kargs.push('intel_iommu=on');
  for (const [k, v] of Object.entries(opts.args ?? {})) kargs.push(`vit.${k}=${v}`);
  if (opts.extraKernelArgs) kargs.push(opts.extraKernelArgs);

  let chardev = `socket,id=char0,path=${opts.socketPath}`;
  if (opts.server) chardev += ',server=on,wait=off';
  else if (opts.reconnect) chardev += ',reconnect=1';
  let netdev = opts.tap ? `tap,id=net0,ifname=${opts.tap},script=no,downscript=no,vhost=off` : 'vhost-user,id=net0,chardev=char0';
  if (queues > 1) netdev += `,queues=${queues}`;
  let dev = `virtio-net-pci,netdev=net0,mac=${mac},romfile=,vectors=0`;
  if (queues > 1) dev += ',mq=on';
  if (opts.packed) dev += ',packed=on';
  if (opts.hostMtu) dev += `,host_mtu=${opts.hostMtu}`;
  const off = opts.offloads === false ? OFFLOAD_PROPERTIES : opts.offloadsOff ?? [];
  for (const f of off) dev += `,${f}=off`;
  if (opts.iommu) dev += ',iommu_platform=on,ats=on,disable-legacy=on';

  const a = [
    '-machine', 'q35,accel=tcg',
    '-m', `${mem}M`,
    ...(opts.cpus && opts.cpus > 1 ? ['-smp', String(opts.cpus)] : []),
    '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    '-numa', 'node,memdev=mem',
    '-display', 'none',
    '-nodefaults',
    '-no-user-config',
    '-serial', 'stdio',
    '-monitor', 'none',
    ...(opts.reboot ? [] : ['-no-reboot']),
    '-kernel', image.kernel,
    '-initrd', image.initrd,
    '-append', kargs.join(' '),
  ];
  if (opts.iommu) a.push('-device', 'intel-iommu,intremap=off,device-iotlb=on');
  if (!opts.tap) a.push('-chardev', chardev);
  a.push('-netdev', netdev, '-device', dev);
  a.push(...(opts.extraQemuArgs ?? []));
  return a;
}

export function parseGuestLines(lines: string[]): Omit<GuestResult, 'lines' | 'done' | 'timedOut' | 'exit' | 'bootMs'> {
  const out: Omit<GuestResult, 'lines' | 'done' | 'timedOut' | 'exit' | 'bootMs'> = { results: [] };
  for (const line of lines) {
    let m = line.match(/^VIT-LINK up mac (\S+)/);
    if (m) out.link = { mac: m[1]! };
    m = line.match(/^VIT-STATS (.*)$/);
    if (m) {
      const kv = new Map<string, number>();
      const w = m[1]!.trim().split(/\s+/);
      for (let i = 0; i + 1 < w.length; i += 2) kv.set(w[i]!, Number(w[i + 1]));
      out.stats = {
        rxPackets: kv.get('rx_packets') ?? 0,
        txPackets: kv.get('tx_packets') ?? 0,
        rxBytes: kv.get('rx_bytes') ?? 0,
        txBytes: kv.get('tx_bytes') ?? 0,
        rxDropped: kv.get('rx_dropped') ?? 0,
        txDropped: kv.get('tx_dropped') ?? 0,
      };
    }
    m = line.match(/^VIT-CPU busy (\d+) total (\d+) virtio-irqs (\d+)/);
    if (m) out.cpu = { busy: +m[1]!, total: +m[2]!, interrupts: +m[3]! };
    m = line.match(/^VIT-RESULT (.*)$/);
    if (!m) continue;
    const r = m[1]!.trim();
    out.results.push(r);
    if ((m = r.match(/^ping (ok|fail) (\d+)\/(\d+)/))) out.ping = { ok: m[1] === 'ok', received: +m[2]!, sent: +m[3]! };
    else if ((m = r.match(/^sha256 ([0-9a-f]{64}) bytes (\d+)/))) out.sha256 = { hex: m[1]!, bytes: +m[2]! };
    else if ((m = r.match(/^tcp (ok|fail) rc (\d+)/))) out.tcp = { ok: m[1] === 'ok', rc: +m[2]! };
    else if ((m = r.match(/^pktgen (ok|fail) sent (\d+) errors (\d+)/))) out.pktgen = { ok: m[1] === 'ok', sent: +m[2]!, errors: +m[3]! };
    else if ((m = r.match(/^pktgen fail (.*)/))) out.error = `pktgen ${m[1]}`;
    else if ((m = r.match(/^error (.*)/))) out.error = m[1]!;
  }
  return out;
}

export function startGuest(opts: GuestOptions): Guest {
  const bin = qemuBinary();
  const image = ensureGuest(opts.guestDir ?? guestDir());
  const argv = qemuArgs(opts, image);
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const started = Date.now();
  const command = [...(opts.prefix ?? []), bin, ...argv];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  killOnExit(child);
  const log = new LineLog();
  if (opts.echo !== undefined) log.echoPrefix = opts.echo;
  else if (process.env.VIT_PEER_ECHO) log.echoPrefix = `[qemu ${opts.mode}] `;
  let bootMs: number | undefined;
  log.onLine = (line) => {
    if (bootMs === undefined && line.startsWith('VIT-BOOT')) bootMs = Date.now() - started;
  };
  log.attach(child.stdout, 'serial');
  log.attach(child.stderr, 'qemu-stderr');
  let spawnError: Error | undefined;
  child.on('error', (e) => {
    spawnError = e;
  });
  child.stdin?.on('error', () => {
    /* QEMU gone */
  });
  const exited = exitPromise(child);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    log.push(`\n[peers] QEMU killed after timeout ${timeoutMs} ms\n`, 'helper');
    void terminate(child, exited, 'SIGTERM', 2000);
  }, timeoutMs);
  const closed = exited.then(async (e) => {
    clearTimeout(timer);
    // let the stdout/stderr 'end' events deliver the last lines
    await new Promise((r) => setImmediate(r));
    log.close(`QEMU exited code=${e.code} signal=${e.signal}${spawnError ? ' ' + spawnError.message : ''}`);
    return e;
  });
  const serial = closed.then(() => log.lines);

  return {
    process: child,
    lines: log.lines,
    serial,
    exited: closed,
    argv: command,
    waitFor: (re, ms = timeoutMs) => log.waitFor(re, ms, `guest(${opts.mode})`),
    async result() {
      const exit = await closed;
      const parsed = parseGuestLines(log.lines);
      return {
        ...parsed,
        lines: log.lines,
        done: log.lines.some((l) => l.startsWith('VIT-DONE')),
        timedOut,
        exit,
        ...(bootMs !== undefined ? { bootMs } : {}),
      };
    },
    write(text: string) {
      child.stdin?.write(text);
    },
    kill: () => terminate(child, closed, 'SIGTERM', 3000),
  };
}

/** When QEMU is the socket server, the socket file appears once QEMU has started listening. */
export function waitForGuestSocket(socketPath: string, timeoutMs = 10_000): Promise<void> {
  return waitForPath(socketPath, timeoutMs, 'QEMU vhost-user server socket');
}

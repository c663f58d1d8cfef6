/**
 * A guest's TCP through serve against other back-ends on the same tap: the repo's guest (QEMU
 * TCG) sends N MiB with busybox nc to a Node TCP sink in a network namespace (`tx`), or
 * receives N MiB from a Node TCP source there (`rx`), through
 *   serve            `serve --net tap:vit0` (vhost-user), offloads on (the default)
 *   serve no-offload the same, the guest's NIC with every offload off (csum=off, guest_csum=off, ...)
 *   QEMU tap         `-netdev tap,vhost=off`: QEMU's virtio-net emulation on the same kind of
 *                    tap, which passes the guest's offloads too
 *   QEMU tap no-offload  the same with the guest's offloads off: the anchor for what offloads
 *                    can gain with this guest (serve's offloads ratio against QEMU's own)
 *   DPDK vhost       DPDK's vhost-user back-end (testpmd, iommu-support=1) forwarding to a tap
 *                    PMD: another vhost-user back-end, which pays the same IOTLB round trips.
 *                    The guest's offloads are off: testpmd's io forwarding asks the tap PMD for
 *                    no checksum offload, so a guest's partial checksums would reach the kernel
 *                    unfinished (and its SYNs be dropped); so it is compared with serve no-offload
 * each a fresh guest, sha256 checked.
 *
 *   node dist/bench/tcp-vs-qemu.js [--mib 64] [--rounds 2] [--rows off,strict] [--directions tx,rx]
 *        [--backends 'serve,serve no-offload,QEMU tap,QEMU tap no-offload,DPDK vhost'] [--serve-args '--flag value']
 *        [--serve-variant 'NAME=--flag value']... [--serve-bin NAME=OTHER/bin/run.js]... [--app nc|http] [--json]
 *
 * --app: what moves the bytes in the guest. `nc` (the guest's tcp-send / tcp-recv jobs): busybox
 * nc, 1 KiB per syscall, so frame sizes depend on how TCP corks those writes; `http` (http-send
 * / http-recv): busybox httpd sends the file with one sendfile and busybox wget reads 64 KiB at a
 * time, so the guest's per-byte work is the kernel's.
 *
 * --serve-args go to every serve column; each --serve-variant adds a column NAME: serve with
 * the guest's offloads on and those flags as well, compared with the `serve` column (an A/B of
 * a serve option, alternated with it in the same rounds); each --serve-bin adds a column NAME:
 * serve from another checkout, compared with `serve` (an A/B of two builds).
 *
 * Rows: `off` no IOMMU; `strict` intel-iommu (device-iotlb, ats; guest iommu.strict=1), which
 * QEMU's own back-end translates in-process and the vhost-user back-ends through IOTLB misses.
 * Throughput: bytes / the sink's first byte to EOF (tx), or / the source's connection to close
 * (rx). Round r runs the back-ends of a row in an order rotated by r; the table gives medians
 * and ratios of serve to each other back-end. Not a test: figures depend on the machine (TCG
 * guest, 2 CPUs, shared).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './median.js';
import { answerHelp, listOf, optionsOrExit, positiveInt, checkoutBin, serveVariant } from './options.js';
import { startVhostTap } from '../test/peers/dpdk.js';
import { startGuest, type GuestResult } from '../test/peers/qemu.js';
import { createNetns, startTcpPeer, type TcpPeer } from '../test/support/netns.js';
import { boot, closeAllRigs, GUEST_CIDR, HOST_IP, PORT, SOURCE_PORT, startRig, STRICT_IOMMU, TAP, tail } from '../test/support/qemu-rig.js';

type Row = 'off' | 'strict';
type Direction = 'tx' | 'rx';
const BACKENDS = ['serve', 'serve no-offload', 'QEMU tap', 'QEMU tap no-offload', 'DPDK vhost'] as const;
type Backend = (typeof BACKENDS)[number];
/** Columns run when --backends is not given (QEMU tap no-offload is an anchor, run on request). */
const DEFAULT_BACKENDS: readonly Backend[] = ['serve', 'serve no-offload', 'QEMU tap', 'DPDK vhost'];
/** Column heads, for the table. */
const HEADS: Record<Backend, string> = {
  serve: 'serve',
  'serve no-offload': 'serve, guest offloads off',
  'QEMU tap': 'QEMU `-netdev tap,vhost=off`',
  'QEMU tap no-offload': 'QEMU `-netdev tap,vhost=off`, guest offloads off',
  'DPDK vhost': 'DPDK vhost + tap PMD, guest offloads off',
};
/** What each column's ratio is taken against: the serve column with the same guest offloads. */
const SERVE_PEER: Record<Backend, Backend> = {
  serve: 'serve', 'serve no-offload': 'serve', 'QEMU tap': 'serve', 'QEMU tap no-offload': 'serve no-offload',
  'DPDK vhost': 'serve no-offload',
};

/** A column: one of BACKENDS, or a serve variant (serve with more flags, compared with `serve`). */
interface Column { name: string; backend: Backend; extraArgs: string[]; bin?: string }

type App = 'nc' | 'http';

interface Args { mib: number; rounds: number; rows: Row[]; directions: Direction[]; columns: Column[]; serveArgs: string[]; app: App; json: boolean }

function readArgs(): Args {
  const { values: v } = parseArgs({
    options: {
      mib: { type: 'string', default: '64' }, rounds: { type: 'string', default: '2' },
      rows: { type: 'string', default: 'off,strict' }, directions: { type: 'string', default: 'tx,rx' },
      backends: { type: 'string', default: DEFAULT_BACKENDS.join(',') },
      'serve-args': { type: 'string', multiple: true, default: [] },
      'serve-variant': { type: 'string', multiple: true, default: [] }, 'serve-bin': { type: 'string', multiple: true, default: [] },
      app: { type: 'string', default: 'nc' },
      json: { type: 'boolean', default: false },
    },
  });
  const words = (text: string): string[] => text.split(/\s+/).filter(Boolean);
  const backends = listOf('backends', v.backends!, BACKENDS);
  if (!backends.includes('serve')) throw new Error('--backends: serve is the column the others are compared with');
  const columns: Column[] = backends.map((backend) => ({ name: backend, backend, extraArgs: [] }));
  const add = (column: Column, flag: string): void => {
    if (columns.some((c) => c.name === column.name)) throw new Error(`${flag} ${column.name}: that name is taken by another column`);
    columns.push(column);
  };
  for (const text of v['serve-variant']!) {
    const { name, args } = serveVariant(text);
    add({ name, backend: 'serve', extraArgs: args }, '--serve-variant');
  }
  for (const text of v['serve-bin']!) {
    const { name, bin } = checkoutBin(text);
    add({ name, backend: 'serve', extraArgs: [], bin }, '--serve-bin');
  }
  return {
    mib: positiveInt('mib', v.mib!), rounds: positiveInt('rounds', v.rounds!),
    rows: listOf('rows', v.rows!, ['off', 'strict'] as const), directions: listOf('directions', v.directions!, ['tx', 'rx'] as const),
    columns, serveArgs: v['serve-args']!.flatMap(words), app: listOf('app', v.app!, ['nc', 'http'] as const)[0]!, json: v.json!,
  };
}

/**
 * One transfer: MB/s; how busy the guest's CPU was meanwhile (0..1), and the NIC interrupts and
 * frames (its NIC's packets in the transfer's direction) it handled per MiB (NaN if it did not say).
 */
interface Transfer { mbs: number; guestBusy: number; irqPerMiB: number; framesPerMiB: number }
const FAILED: Transfer = { mbs: 0, guestBusy: NaN, irqPerMiB: NaN, framesPerMiB: NaN };

/** The host end's result once the guest is done; if it never comes, the error carries the guest's last lines. */
async function hostResult(peer: TcpPeer, guest: GuestResult): Promise<{ hex: string; bytes: number; ms?: number }> {
  try {
    return await peer.result(15_000);
  } catch (err) {
    throw new Error(`${(err as Error).message}\nthe guest:\n${tail(guest.lines, 12)}`);
  }
}

/** One transfer of `mib` MiB through `backend`, guest → host (tx) or host → guest (rx). */
async function transfer(backend: Backend, row: Row, direction: Direction, mib: number, serveArgs: string[], app: App, bin?: string): Promise<Transfer> {
  const iommu = row === 'strict';
  // A stalled transfer ends the guest: boot, plus 1.5 s per MiB (the slowest cell moves ~5 MB/s).
  const timeoutMs = 60_000 + mib * 1500;
  // The guest keeps the file in its tmpfs: room for it beside the kernel and the socket buffers.
  const memMiB = Math.max(512, 384 + mib);
  const bytes = mib * 1024 * 1024;
  const http = app === 'http';
  const mode = direction === 'tx' ? (http ? 'http-send' : 'tcp-send') : (http ? 'http-recv' : 'tcp-recv');
  // http-send: the guest listens and the host fetches (startTcpPeer's `fetch`), from the guest's address.
  const guestIp = GUEST_CIDR.split('/')[0]!;
  const port = direction === 'tx' ? PORT : SOURCE_PORT;
  const args = { ip: GUEST_CIDR, peer: HOST_IP, port, mib };
  const check = (what: string, r: GuestResult, host: { hex: string; bytes: number; ms?: number }): Transfer => {
    if (host.bytes !== bytes || host.hex !== r.sha256?.hex || r.sha256?.bytes !== bytes) throw new Error(`${what}: transfer failed:\n${tail(r.lines)}`);
    const frames = direction === 'tx' ? r.stats?.txPackets : r.stats?.rxPackets;
    return {
      mbs: host.bytes / 1e6 / (host.ms! / 1000),
      guestBusy: r.cpu && r.cpu.total > 0 ? r.cpu.busy / r.cpu.total : NaN,
      irqPerMiB: r.cpu ? r.cpu.interrupts / mib : NaN,
      framesPerMiB: frames === undefined ? NaN : frames / mib,
    };
  };
  if (backend === 'serve' || backend === 'serve no-offload') {
    const rig = await startRig(serveArgs, { ...(direction === 'tx' ? { tcp: !http } : { source: mib, http }), ...(bin ? { bin } : {}) });
    let fetcher: TcpPeer | null = null;
    try {
      const guest = boot(rig, { mode, iommu, args, timeoutMs, memMiB, ...(backend === 'serve no-offload' ? { offloads: false } : {}) });
      if (direction === 'tx' && http) fetcher = await startTcpPeer(rig.ns, guestIp, port, 0, 'fetch');
      const r = await guest.result();
      return check(backend, r, await hostResult(fetcher ?? (direction === 'tx' ? rig.tcp! : rig.source!), r));
    } finally {
      await fetcher?.stop();
      await rig.close();
    }
  }
  const ns = createNetns();
  const dir = mkdtempSync(join(tmpdir(), 'vit-tcp-'));
  const socket = join(dir, 'dpdk.sock');
  try {
    // DPDK's vhost creates the tap in the namespace (tap PMD) and forwards between it and the guest.
    const testpmd = backend === 'DPDK vhost'
      ? await startVhostTap({ socket, tap: TAP, prefix: ns.execPrefix(), iommu, timeoutMs: timeoutMs + 60_000 })
      : null;
    try {
      const guest = startGuest({
        ...(testpmd ? { socketPath: socket } : { socketPath: '', tap: TAP, prefix: ns.execPrefix() }),
        ...(testpmd || backend === 'QEMU tap no-offload' ? { offloads: false } : {}),
        mode, iommu, args, timeoutMs, memMiB,
        ...(iommu ? { extraKernelArgs: STRICT_IOMMU } : {}),
      });
      try {
        await ns.configure(TAP, `${HOST_IP}/24`);
        const peer = direction === 'tx'
          ? await startTcpPeer(ns, http ? guestIp : HOST_IP, port, 0, http ? 'fetch' : 'raw')
          : await startTcpPeer(ns, HOST_IP, port, bytes, http ? 'http' : 'raw');
        try {
          const r = await guest.result();
          return check(backend, r, await hostResult(peer, r));
        } finally {
          await peer.stop();
        }
      } finally {
        await guest.kill();
      }
    } finally {
      await testpmd?.stop();
    }
  } finally {
    ns.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const a = optionsOrExit('tcp-vs-qemu', readArgs);
  const results: Record<string, Record<string, number[]>> = {};
  /** The guest's side of each transfer, by cell and column: is the guest the limit, and what does it handle? */
  const guest: Record<string, Record<string, Transfer[]>> = {};
  for (const direction of a.directions) {
    for (const row of a.rows) {
      const cell: Record<string, number[]> = {};
      const cellGuest: Record<string, Transfer[]> = {};
      results[`${direction} ${row}`] = cell;
      guest[`${direction} ${row}`] = cellGuest;
      for (let round = 0; round < a.rounds; round++) {
        const order = a.columns.map((_, i) => a.columns[(i + round) % a.columns.length]!);
        for (const column of order) {
          const tag = `[${direction} ${row} ${round + 1}/${a.rounds}] ${column.name}`;
          // A back-end that fails a transfer gets 0 for it (and the reason on stderr); the others go on.
          const t = await transfer(column.backend, row, direction, a.mib, [...a.serveArgs, ...column.extraArgs], a.app, column.bin).catch((err: Error) => {
            process.stderr.write(`${tag}: FAILED: ${err.message}\n`); // with the guest's last lines, when it has them
            return FAILED;
          });
          (cell[column.name] ??= []).push(t.mbs);
          if (t.mbs > 0) {
            (cellGuest[column.name] ??= []).push(t);
            process.stderr.write(`${tag}: ${t.mbs.toFixed(1)} MB/s, guest CPU ${(t.guestBusy * 100).toFixed(0)}% busy, ${t.framesPerMiB.toFixed(0)} frames and ${t.irqPerMiB.toFixed(0)} NIC interrupts per MiB\n`);
          }
        }
      }
    }
  }
  await closeAllRigs();
  if (a.json) {
    console.log(JSON.stringify({ mib: a.mib, rounds: a.rounds, results, guest }));
    return;
  }
  const each = (xs: number[]): string => xs.map((x) => (x > 0 ? x.toFixed(1) : 'failed')).join(' / ');
  const ratio = (num: number, den: number): string => (den > 0 ? `${(num / den).toFixed(2)}×` : '—');
  // Each column's ratio: a variant over `serve`; serve over each other back-end whose serve peer ran.
  const names = a.columns.map((c) => c.name);
  const pairs = a.columns.flatMap((c): Array<[string, string]> => {
    if (c.extraArgs.length > 0 || c.bin) return [[c.name, 'serve']];
    if (c.backend === 'serve' || !names.includes(SERVE_PEER[c.backend])) return [];
    return [[SERVE_PEER[c.backend], c.name]];
  });
  // What offloads gain QEMU's own back-end with the same guest: the anchor for serve / serve no-offload.
  if (names.includes('QEMU tap') && names.includes('QEMU tap no-offload')) pairs.push(['QEMU tap', 'QEMU tap no-offload']);
  const head = (c: Column): string => (c.bin ? `${c.name} (serve from ${c.bin})` : c.extraArgs.length > 0 ? `${c.name} (serve ${c.extraArgs.join(' ')})` : HEADS[c.backend]);
  console.log(`TCP (guest's ${a.app === 'nc' ? 'busybox nc' : 'busybox httpd / wget'}), ${a.mib} MiB, MB/s: median of ${a.rounds} (each round); ratios of medians (with the guest's offloads as in each column)`);
  // One row of cells, and a table's head with its rule: both tables are written through these,
  // so a run with no pair to compare (one column) gets no empty ratio cell.
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  const tableHead = (cells: string[]): string => `${line(cells)}\n|${'---|'.repeat(cells.length)}`;
  console.log(tableHead(['direction', 'guest', ...a.columns.map(head), ...pairs.map(([x, y]) => `${x} / ${y}`)]));
  /** The first two cells of a table row, from a results key ("tx strict"). */
  const rowHead = (key: string): string => {
    const [direction, row] = key.split(' ');
    return `${direction === 'tx' ? 'guest → host' : 'host → guest'} | ${row === 'off' ? 'IOMMU off' : 'iommu.strict=1'}`;
  };
  for (const [key, r] of Object.entries(results)) {
    const cells = names.map((n) => `${median(r[n]!).toFixed(1)} (${each(r[n]!)})`);
    const ratios = pairs.map(([x, y]) => ratio(median(r[x]!), median(r[y]!)));
    console.log(line([rowHead(key), ...cells, ...ratios]));
  }
  // Near 100% busy, the guest's own CPU (TCG) is the limit whichever back-end carries the bytes,
  // and what decides the rate is how much work each MiB costs it: frames and interrupts.
  console.log(`\nThe guest during the transfer: % of its CPU busy / frames per MiB / NIC interrupts per MiB, medians of the transfers that completed`);
  console.log(tableHead(['direction', 'guest', ...a.columns.map((c) => c.name)]));
  for (const [key, r] of Object.entries(guest)) {
    const cells = names.map((n) => {
      const ts = r[n] ?? [];
      if (ts.length === 0) return '—';
      const m = (f: (t: Transfer) => number): string => median(ts.map(f)).toFixed(0);
      return `${m((t) => t.guestBusy * 100)} / ${m((t) => t.framesPerMiB)} / ${m((t) => t.irqPerMiB)}`;
    });
    console.log(line([rowHead(key), ...cells]));
  }
}

answerHelp(import.meta.url);
main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});

/**
 * A guest's TCP through serve against QEMU's own userspace network back-end: the repo's guest
 * (QEMU 7.2 TCG) sends N MiB with busybox nc to a Node TCP sink in a network namespace
 * (`tx`), or receives N MiB from a Node TCP source there (`rx`), through
 *   serve            `serve --net tap:vit0` (vhost-user), offloads on (the default)
 *   serve no-offload the same, the guest's NIC with every offload off (csum=off, guest_csum=off, ...)
 *   QEMU tap         `-netdev tap,vhost=off`: QEMU's virtio-net emulation on the same kind of
 *                    tap, which passes the guest's offloads too
 * each a fresh guest, sha256 checked.
 *
 *   node dist/bench/tcp-vs-qemu.js [--mib 64] [--rounds 2] [--rows off,strict] [--directions tx,rx]
 *        [--serve-args '--flag value'] [--json]
 *
 * Rows: `off` no IOMMU; `strict` intel-iommu (device-iotlb, ats; guest iommu.strict=1), which
 * QEMU's own back-end translates in-process and serve through IOTLB misses. Throughput: bytes /
 * the sink's first byte to EOF (tx), or / the source's connection to close (rx). Round r runs
 * the back-ends of a row in an order rotated by r; the table gives medians and ratios to serve.
 * Not a test: figures depend on the machine (TCG guest, 2 CPUs, shared).
 */
import { median } from './median.js';
import { startGuest, type GuestResult } from '../test/peers/qemu.js';
import { createNetns, startTcpPeer } from '../test/support/netns.js';
import { boot, closeAllRigs, GUEST_CIDR, HOST_IP, PORT, SOURCE_PORT, startRig, STRICT_IOMMU, TAP, tail } from '../test/support/qemu-rig.js';

type Row = 'off' | 'strict';
type Direction = 'tx' | 'rx';
type Backend = 'serve' | 'serve no-offload' | 'QEMU tap';
const BACKENDS: Backend[] = ['serve', 'serve no-offload', 'QEMU tap'];

interface Args { mib: number; rounds: number; rows: Row[]; directions: Direction[]; serveArgs: string[]; json: boolean }

function parseArgs(argv: string[]): Args {
  const a: Args = { mib: 64, rounds: 2, rows: ['off', 'strict'], directions: ['tx', 'rx'], serveArgs: [], json: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--mib': a.mib = Number(v); i++; break;
      case '--rounds': a.rounds = Number(v); i++; break;
      case '--rows': a.rows = (v ?? '').split(',') as Row[]; i++; break;
      case '--directions': a.directions = (v ?? '').split(',') as Direction[]; i++; break;
      case '--serve-args': a.serveArgs.push(...(v ?? '').split(/\s+/).filter(Boolean)); i++; break;
      case '--json': a.json = true; break;
      default: throw new Error(`unknown argument ${argv[i]} (see the header of bench/tcp-vs-qemu.ts)`);
    }
  }
  return a;
}

/** MB/s of one transfer of `mib` MiB through `backend`, guest → host (tx) or host → guest (rx). */
async function transfer(backend: Backend, row: Row, direction: Direction, mib: number, serveArgs: string[]): Promise<number> {
  const iommu = row === 'strict';
  const bytes = mib * 1024 * 1024;
  const mode = direction === 'tx' ? 'tcp-send' : 'tcp-recv';
  const port = direction === 'tx' ? PORT : SOURCE_PORT;
  const args = { ip: GUEST_CIDR, peer: HOST_IP, port, mib };
  const check = (what: string, r: GuestResult, host: { hex: string; bytes: number; ms?: number }): number => {
    if (host.bytes !== bytes || host.hex !== r.sha256?.hex || r.sha256?.bytes !== bytes) throw new Error(`${what}: transfer failed:\n${tail(r.lines)}`);
    return host.bytes / 1e6 / (host.ms! / 1000);
  };
  if (backend !== 'QEMU tap') {
    const rig = await startRig(serveArgs, direction === 'tx' ? { tcp: true } : { source: mib });
    try {
      const r = await boot(rig, { mode, iommu, args, ...(backend === 'serve no-offload' ? { offloads: false } : {}) }).result();
      return check(backend, r, await (direction === 'tx' ? rig.tcp! : rig.source!).result(15_000));
    } finally {
      await rig.close();
    }
  }
  const ns = createNetns();
  const guest = startGuest({
    socketPath: '', tap: TAP, prefix: ns.execPrefix(), mode, iommu, args, timeoutMs: 180_000,
    ...(iommu ? { extraKernelArgs: STRICT_IOMMU } : {}),
  });
  try {
    await ns.configure(TAP, `${HOST_IP}/24`);
    const peer = await startTcpPeer(ns, HOST_IP, port, direction === 'tx' ? 0 : bytes);
    try {
      return check(backend, await guest.result(), await peer.result(15_000));
    } finally {
      await peer.stop();
    }
  } finally {
    await guest.kill();
    ns.destroy();
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const results: Record<string, Record<Backend, number[]>> = {};
  for (const direction of a.directions) {
    for (const row of a.rows) {
      const cell: Record<Backend, number[]> = { serve: [], 'serve no-offload': [], 'QEMU tap': [] };
      results[`${direction} ${row}`] = cell;
      for (let round = 0; round < a.rounds; round++) {
        const order = BACKENDS.map((_, i) => BACKENDS[(i + round) % BACKENDS.length]!);
        for (const backend of order) {
          const mbs = await transfer(backend, row, direction, a.mib, a.serveArgs);
          cell[backend].push(mbs);
          process.stderr.write(`[${direction} ${row} ${round + 1}/${a.rounds}] ${backend}: ${mbs.toFixed(1)} MB/s\n`);
        }
      }
    }
  }
  await closeAllRigs();
  if (a.json) {
    console.log(JSON.stringify({ mib: a.mib, rounds: a.rounds, results }));
    return;
  }
  const each = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(' / ');
  console.log(`TCP, ${a.mib} MiB, MB/s: median of ${a.rounds} (each round); ratios of serve's median to the others'`);
  console.log('| direction | guest | serve | serve, guest offloads off | QEMU `-netdev tap,vhost=off` | serve / no-offload | serve / QEMU |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [key, r] of Object.entries(results)) {
    const [direction, row] = key.split(' ');
    const s = median(r.serve);
    const n = median(r['serve no-offload']);
    const q = median(r['QEMU tap']);
    console.log(`| ${direction === 'tx' ? 'guest → host' : 'host → guest'} | ${row === 'off' ? 'IOMMU off' : 'iommu.strict=1'} | ` +
      `${s.toFixed(1)} (${each(r.serve)}) | ${n.toFixed(1)} (${each(r['serve no-offload'])}) | ${q.toFixed(1)} (${each(r['QEMU tap'])}) | ` +
      `${(s / n).toFixed(2)}× | ${(s / q).toFixed(2)}× |`);
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});

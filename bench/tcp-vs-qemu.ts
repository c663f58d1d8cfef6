/**
 * A guest's TCP through serve against QEMU's own userspace network back-end: the repo's guest
 * (QEMU 7.2 TCG) sends N MiB with busybox nc to a Node TCP sink in a network namespace, once
 * through `serve --net tap:vit0` (vhost-user) and once through `-netdev tap,vhost=off` (QEMU's
 * virtio-net emulation writing the same kind of tap, offloads included), each a fresh guest.
 *
 *   node dist/bench/tcp-vs-qemu.js [--mib 32] [--rounds 3] [--rows off,strict] [--json]
 *
 * Rows: `off` no IOMMU; `strict` intel-iommu (device-iotlb, ats; guest iommu.strict=1), which
 * QEMU's own back-end translates in-process and serve through IOTLB misses. Throughput:
 * bytes / (first byte to EOF) as the sink times it. Round r runs both back-ends of a row in an
 * order rotated by r; the table gives the medians and their ratio. Not a test: figures depend
 * on the machine (TCG guest, 2 CPUs, shared).
 */
import { median } from './median.js';
import { startGuest } from '../test/peers/qemu.js';
import { createNetns, startTcpPeer } from '../test/support/netns.js';
import { boot, closeAllRigs, GUEST_CIDR, HOST_IP, PORT, startRig, STRICT_IOMMU, TAP, tail } from '../test/support/qemu-rig.js';

type Row = 'off' | 'strict';
type Backend = 'serve' | 'QEMU tap';
const BACKENDS: Backend[] = ['serve', 'QEMU tap'];

interface Args { mib: number; rounds: number; rows: Row[]; json: boolean }

function parseArgs(argv: string[]): Args {
  const a: Args = { mib: 32, rounds: 3, rows: ['off', 'strict'], json: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--mib': a.mib = Number(v); i++; break;
      case '--rounds': a.rounds = Number(v); i++; break;
      case '--rows': a.rows = (v ?? '').split(',') as Row[]; i++; break;
      case '--json': a.json = true; break;
      default: throw new Error(`unknown argument ${argv[i]} (see the header of bench/tcp-vs-qemu.ts)`);
    }
  }
  return a;
}

/** MB/s of one guest → host transfer of `mib` MiB through `backend`. */
async function transfer(backend: Backend, row: Row, mib: number): Promise<number> {
  const iommu = row === 'strict';
  const args = { ip: GUEST_CIDR, peer: HOST_IP, port: PORT, mib };
  if (backend === 'serve') {
    const rig = await startRig([], { tcp: true });
    try {
      const r = await boot(rig, { mode: 'tcp-send', iommu, args }).result();
      const host = await rig.tcp!.result(15_000);
      if (host.bytes !== mib * 1024 * 1024 || host.hex !== r.sha256?.hex) throw new Error(`serve: transfer failed:\n${tail(r.lines)}`);
      return host.bytes / 1e6 / (host.ms! / 1000);
    } finally {
      await rig.close();
    }
  }
  const ns = createNetns();
  const guest = startGuest({
    socketPath: '', tap: TAP, prefix: ns.execPrefix(), mode: 'tcp-send', iommu, args, timeoutMs: 120_000,
    ...(iommu ? { extraKernelArgs: STRICT_IOMMU } : {}),
  });
  try {
    await ns.configure(TAP, `${HOST_IP}/24`);
    const sink = await startTcpPeer(ns, HOST_IP, PORT);
    try {
      const r = await guest.result();
      const host = await sink.result(15_000);
      if (host.bytes !== mib * 1024 * 1024 || host.hex !== r.sha256?.hex) throw new Error(`QEMU tap: transfer failed:\n${tail(r.lines)}`);
      return host.bytes / 1e6 / (host.ms! / 1000);
    } finally {
      await sink.stop();
    }
  } finally {
    await guest.kill();
    ns.destroy();
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const results: Record<string, Record<Backend, number[]>> = {};
  for (const row of a.rows) {
    results[row] = { serve: [], 'QEMU tap': [] };
    for (let round = 0; round < a.rounds; round++) {
      const order = round % 2 === 0 ? BACKENDS : [...BACKENDS].reverse();
      for (const backend of order) {
        const mbs = await transfer(backend, row, a.mib);
        results[row]![backend].push(mbs);
        process.stderr.write(`[${row} ${round + 1}/${a.rounds}] ${backend}: ${mbs.toFixed(1)} MB/s\n`);
      }
    }
  }
  await closeAllRigs();
  if (a.json) {
    console.log(JSON.stringify({ mib: a.mib, rounds: a.rounds, results }));
    return;
  }
  console.log(`guest → host TCP, ${a.mib} MiB, MB/s median of ${a.rounds} (each round)`);
  console.log('| guest | serve | QEMU `-netdev tap,vhost=off` | serve / QEMU |\n|---|---|---|---|');
  for (const row of a.rows) {
    const r = results[row]!;
    const s = median(r.serve);
    const q = median(r['QEMU tap']);
    const each = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(' / ');
    console.log(`| ${row === 'off' ? 'IOMMU off' : 'iommu.strict=1'} | ${s.toFixed(1)} (${each(r.serve)}) | ${q.toFixed(1)} (${each(r['QEMU tap'])}) | ${(s / q).toFixed(2)}× |`);
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});

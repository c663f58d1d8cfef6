/**
 * Soak: one serve process, many front-end sessions, and what it holds afterwards. Not a test
 * (`npm run soak`, minutes to an hour); test/hardening/soak.test.ts runs a short version with
 * the repo's own front-end in CI.
 *
 *   node dist/bench/soak.js [--dpdk 1000] [--qemu 50] [--json]
 *
 * DPDK cycles: `serve --net sink`; each cycle a DPDK virtio-user testpmd (txonly) connects,
 * sends until it has counted 1000 frames out, and stops (SIGINT).
 * QEMU cycles: `serve --net tap:vit0` in a namespace with intel-iommu; each cycle a fresh guest
 * pings the namespace 3 times and powers off.
 * After every cycle (once serve saw the disconnect): serve's open fds, RSS and memfd mappings.
 * Reported: first / last values and the least-squares slope per 100 cycles over the cycles
 * after the first 10% (warm-up: JIT, glibc arenas of the first workers).
 */
import { startTestpmd } from '../test/peers/dpdk.js';
import { memfdMappings } from '../test/support/netns.js';
import { fdCountOf, rssOf } from '../test/support/hostile-frontend.js';
import { boot, closeAllRigs, startRig, waitDisconnected } from '../test/support/qemu-rig.js';
import { startServe, type ServeProcess } from '../test/support/serve.js';
import { answerHelp, optionsOrExit } from './options.js';

interface Sample { fds: number; rssKiB: number; mappings: number }
interface Series { cycles: number; samples: Sample[] }

function parseArgs(argv: string[]): { dpdk: number; qemu: number; json: boolean } {
  const a = { dpdk: 1000, qemu: 50, json: false };
  for (let i = 0; i < argv.length; i++) {
    const v = Number(argv[i + 1]);
    switch (argv[i]) {
      case '--dpdk': a.dpdk = v; i++; break;
      case '--qemu': a.qemu = v; i++; break;
      case '--json': a.json = true; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return a;
}

function sample(serve: ServeProcess): Sample {
  const pid = serve.child.pid!;
  return { fds: fdCountOf(pid), rssKiB: rssOf(pid) / 1024, mappings: memfdMappings(pid) };
}

async function waitGone(serve: ServeProcess): Promise<void> {
  const end = Date.now() + 10_000;
  while ((await serve.state()).connected) {
    if (Date.now() > end) throw new Error('serve still connected 10 s after the front-end left');
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 200)); // the worker's exit, fds closed
}

async function dpdkCycles(n: number): Promise<Series> {
  const serve = await startServe(['--net', 'sink', '--quiet']);
  const samples: Sample[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const tp = startTestpmd({ role: 'virtio-user', socket: serve.socket, forwardMode: 'txonly' });
      try {
        await tp.waitForLinkUp(30_000);
        await tp.waitForStats((s) => (s[0]?.txPackets ?? 0) >= 1000, 30_000);
      } finally {
        await tp.stop();
      }
      await waitGone(serve);
      samples.push(sample(serve));
      if ((i + 1) % 50 === 0) process.stderr.write(`dpdk ${i + 1}/${n}: ${JSON.stringify(samples.at(-1))}\n`);
    }
  } finally {
    await serve.stop();
  }
  return { cycles: n, samples };
}

async function qemuCycles(n: number): Promise<Series> {
  const rig = await startRig(['--iotlb-strategy', 'coalescing']);
  const samples: Sample[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const r = await boot(rig, { mode: 'ping', iommu: true, args: { count: 3 } }).result();
      if (!r.ping?.ok) throw new Error(`QEMU cycle ${i + 1}: ping failed`);
      await waitDisconnected(rig.serve);
      await new Promise((res) => setTimeout(res, 200));
      samples.push(sample(rig.serve));
      if ((i + 1) % 10 === 0) process.stderr.write(`qemu ${i + 1}/${n}: ${JSON.stringify(samples.at(-1))}\n`);
    }
  } finally {
    await rig.close();
    await closeAllRigs();
  }
  return { cycles: n, samples };
}

/** Least-squares slope of ys against their index, per 100 cycles. */
function slopePer100(ys: number[]): number {
  const n = ys.length;
  if (n < 2) return NaN;
  const mx = (n - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, x) => { num += (x - mx) * (y - my); den += (x - mx) ** 2; });
  return (num / den) * 100;
}

function report(name: string, s: Series): Record<string, unknown> {
  const after = s.samples.slice(Math.floor(s.samples.length / 10));
  const row = (key: keyof Sample): { first: number; last: number; slopePer100: number } => ({
    first: s.samples[0]?.[key] ?? NaN, last: s.samples.at(-1)?.[key] ?? NaN, slopePer100: slopePer100(after.map((x) => x[key])),
  });
  return { name, cycles: s.cycles, fds: row('fds'), rssKiB: row('rssKiB'), memfdMappings: row('mappings') };
}

async function main(): Promise<void> {
  const a = optionsOrExit('soak', () => parseArgs(process.argv.slice(2)));
  const out = [];
  if (a.dpdk > 0) out.push(report('DPDK virtio-user', await dpdkCycles(a.dpdk)));
  if (a.qemu > 0) out.push(report('QEMU guest, intel-iommu', await qemuCycles(a.qemu)));
  if (a.json) {
    console.log(JSON.stringify(out));
    return;
  }
  console.log('| front-end | cycles | fds first → last (slope /100) | RSS MiB first → last (slope /100) | memfd mappings first → last |\n|---|---|---|---|---|');
  for (const r of out as Array<ReturnType<typeof report> & { fds: { first: number; last: number; slopePer100: number }; rssKiB: { first: number; last: number; slopePer100: number }; memfdMappings: { first: number; last: number } }>) {
    console.log(`| ${r.name} | ${r.cycles} | ${r.fds.first} → ${r.fds.last} (${r.fds.slopePer100.toFixed(2)}) | ` +
      `${(r.rssKiB.first / 1024).toFixed(1)} → ${(r.rssKiB.last / 1024).toFixed(1)} (${(r.rssKiB.slopePer100 / 1024).toFixed(2)}) | ${r.memfdMappings.first} → ${r.memfdMappings.last} |`);
  }
}

answerHelp(import.meta.url);
main().catch((err) => {
  console.error(err instanceof Error ? err.stack : err);
  process.exit(1);
});

#!/usr/bin/env node
// `npm run fixtures`: records real-workload trace fixtures with the repo's QEMU guest behind
// intel-iommu (device-iotlb=on, iommu_platform=on,ats=on, guest `intel_iommu=on iommu.strict=1`).
//
//   node scripts/record-fixtures.mjs                 # the large (git-ignored) set -> fixtures/traces/large/
//   node scripts/record-fixtures.mjs --committed     # re-record the committed set in place (pinned counts change)
//   node scripts/record-fixtures.mjs NAME...         # only these (names from --list), committed or large
//   node scripts/record-fixtures.mjs --list          # every fixture, its job and where it goes
//   --out DIR   write every trace to DIR instead (e.g. to look before replacing a committed one)
//
// Two kinds of recordings (docs/trace-format.md):
//   serve   `vhost-iotlb serve --net tap:vit0 --iotlb-strategy coalescing --trace FILE` in a network
//           namespace (test/support/qemu-rig.ts startRig/boot/transferOk/receiveOk): messages and
//           every datapath translation -> fixtures/traces/ (top level)
//   proxy   `vhost-iotlb trace record` between QEMU and `dpdk-testpmd --vdev net_vhost0,...,iommu-support=1`
//           (as test/trace/real.test.ts): messages only -> fixtures/traces/recorded/
// Each job checks its result (sha256 both ends, pktgen's count, testpmd's counters) before a trace
// is kept; one QEMU guest at a time. Needs root (network namespaces), QEMU, DPDK, and a build
// (`npx tsc -p .`: it imports the compiled helpers under dist/). After each trace it prints its
// size, messages and replay counts: the numbers in fixtures/traces/README.md.
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const dist = (p) => import(join(root, 'dist', p));
const rig = await dist('test/support/qemu-rig.js');
const { startGuest, qemuBinary } = await dist('test/peers/qemu.js');
const { startTestpmd, testpmdBinary } = await dist('test/peers/dpdk.js');
const { GuestShell } = await dist('test/support/guest-shell.js');
const { spawnLogged, terminate, waitForPath } = await dist('test/peers/util.js');
const { readTrace } = await dist('src/trace/reader.js');
const { loadOps } = await dist('src/replay/ops.js');

const TOP = join(root, 'fixtures', 'traces');
const REC = join(TOP, 'recorded');
const LARGE = join(TOP, 'large');

/**
 * The fixtures. job: serve-send | serve-recv | serve-pktgen | serve-mq-recv | proxy-pktgen | proxy-ping.
 * committed: lives in git (small); otherwise generated into fixtures/traces/large/ (git-ignored).
 */
const FIXTURES = [
  // serve --trace, committed
  { name: 'qemu-serve-tcp-send', dir: TOP, committed: true, job: 'serve-send', mib: 2 },
  { name: 'qemu-serve-tcp-recv', dir: TOP, committed: true, job: 'serve-recv', mib: 1 },
  { name: 'qemu-serve-pktgen', dir: TOP, committed: true, job: 'serve-pktgen', frames: 1000 },
  { name: 'qemu-serve-packed-tcp-send', dir: TOP, committed: true, job: 'serve-send', mib: 1, packed: true },
  { name: 'qemu-serve-mq2-tcp-recv', dir: TOP, committed: true, job: 'serve-mq-recv', mib: 0.25, flows: 4 },
  // proxy recordings of QEMU <-> DPDK's vhost, committed
  { name: 'qemu-dpdk-pktgen-iommu', dir: REC, committed: true, job: 'proxy-pktgen', frames: 1000 },
  // the large set (git-ignored): `npm run fixtures`
  { name: 'qemu-serve-tcp-send-32m', dir: LARGE, job: 'serve-send', mib: 32 },
  { name: 'qemu-serve-tcp-recv-16m', dir: LARGE, job: 'serve-recv', mib: 16 },
  { name: 'qemu-serve-pktgen-20k', dir: LARGE, job: 'serve-pktgen', frames: 20000 },
  { name: 'qemu-serve-packed-tcp-send-16m', dir: LARGE, job: 'serve-send', mib: 16, packed: true },
  { name: 'qemu-serve-mq2-tcp-recv-16m', dir: LARGE, job: 'serve-mq-recv', mib: 4, flows: 4 },
  { name: 'qemu-dpdk-pktgen-iommu-20k', dir: join(LARGE, 'recorded'), job: 'proxy-pktgen', frames: 20000 },
];

function describe(f) {
  const parts = [f.job];
  if (f.mib) parts.push(f.flows ? `${f.flows} flows x ${f.mib} MiB` : `${f.mib} MiB`);
  if (f.frames) parts.push(`${f.frames} frames`);
  if (f.packed) parts.push('packed');
  return parts.join(', ');
}

// ---- serve --trace ------------------------------------------------------------------------

async function recordServe(f, trace) {
  const queues = f.job === 'serve-mq-recv' ? 2 : 1;
  const serveArgs = ['--iotlb-strategy', 'coalescing', '--trace', trace, ...(queues > 1 ? ['--queues', String(queues)] : [])];
  const r = await rig.startRig(serveArgs, { tcp: f.job === 'serve-send', source: f.job.endsWith('recv') ? f.mib : undefined });
  const opts = { iommu: true, packed: !!f.packed, timeoutMs: 600_000 };
  try {
    if (f.job === 'serve-send') {
      const res = await rig.transferOk(r, f.mib, opts);
      log(`  guest sent ${res.sha256.bytes} bytes, sha256 equal at the host`);
    } else if (f.job === 'serve-recv') {
      const res = await rig.receiveOk(r, opts);
      log(`  guest received ${res.sha256.bytes} bytes, sha256 equal`);
    } else if (f.job === 'serve-pktgen') {
      const g = rig.boot(r, { mode: 'pktgen', ...opts, args: { count: f.frames } });
      const res = await g.result();
      rig.assertDone(res, 'pktgen', r.serve);
      assert.deepEqual(res.pktgen, { ok: true, sent: f.frames, errors: 0 }, rig.tail(res.lines));
      log(`  guest pktgen sent ${f.frames} frames`);
    } else if (f.job === 'serve-mq-recv') {
      const g = rig.boot(r, { mode: 'shell', ...opts, queues: 2, cpus: 2 });
      const sh = new GuestShell(g);
      await sh.ready(1, 180_000);
      await rig.shellLinkUp(sh);
      const from = r.source.log.lines.length;
      // (a fifo opened read-write keeps nc's stdin open, so it never half-closes)
      await sh.ok(`mkfifo /tmp/hold; for i in $(seq ${f.flows}); do nc -w 10 ${rig.HOST_IP} ${rig.SOURCE_PORT} <> /tmp/hold > /tmp/r$i & done; wait`, 600_000);
      const got = (await sh.ok('sha256sum /tmp/r*')).map((l) => l.match(/^([0-9a-f]{64})\s/)?.[1]).filter(Boolean);
      const sent = r.source.log.lines.slice(from).map((l) => l.match(/^SOURCE sha256 ([0-9a-f]{64}) bytes/)?.[1]).filter(Boolean);
      assert.equal(sent.length, f.flows, `the source served ${sent.length} flows`);
      assert.deepEqual(got.sort(), sent.sort(), 'sha256 of every flow');
      const state = await r.serve.state();
      const rx = state.queues.filter((q) => q.kind === 'rx').map((q) => q.counters?.packets ?? 0);
      log(`  guest received ${f.flows} flows of ${f.mib} MiB intact; frames per RX queue: ${rx.join(', ')}`);
      await sh.run('poweroff -f', 10_000).catch(() => undefined);
      await g.kill();
    }
    await rig.waitDisconnected(r.serve, 30_000);
  } finally {
    await r.close(); // serve closes (flushes) the trace on exit
  }
}

// ---- trace record between QEMU and DPDK's vhost --------------------------------------------

function startRecorder(listen, connect, output) {
  const { child, log: l, exited } = spawnLogged(
    [process.execPath, join(root, 'bin', 'run.js'), 'trace', 'record', '--listen', listen, '--connect', connect, '-o', output],
    'record', { env: { ...process.env, NO_COLOR: '1' } },
  );
  return { log: l, stop: () => terminate(child, exited, 'SIGINT', 5000) };
}

async function recordProxy(f, trace, work) {
  qemuBinary();
  testpmdBinary();
  const back = join(work, 'back.sock');
  const front = join(work, 'front.sock');
  const stops = [];
  try {
    const backend = startTestpmd({ role: 'vhost', socket: back, forwardMode: 'rxonly', iommu: true, timeoutMs: 900_000 });
    stops.push(() => backend.stop(3000));
    await waitForPath(back, 15_000, 'testpmd vhost socket');
    const rec = startRecorder(front, back, trace);
    stops.push(() => rec.stop());
    await rec.log.waitFor(/trace record: listening on /, 15_000, 'trace record listening');
    const guest = startGuest({
      socketPath: front, mode: 'pktgen', iommu: true, packed: !!f.packed, timeoutMs: 600_000,
      args: { ip: rig.GUEST_CIDR, peer: rig.HOST_IP, count: f.frames }, extraKernelArgs: rig.STRICT_IOMMU,
    });
    stops.push(() => guest.kill());
    const res = await guest.result();
    assert.ok(res.done, `guest did not finish:\n${rig.tail(res.lines)}`);
    assert.deepEqual(res.pktgen, { ok: true, sent: f.frames, errors: 0 }, rig.tail(res.lines));
    const fin = await backend.stop();
    const rx = fin.accumulated?.rxPackets ?? fin.nic?.[0]?.rxPackets ?? 0;
    log(`  guest pktgen sent ${f.frames} frames; testpmd received ${rx}`);
    assert.ok(rx > 0, 'testpmd received the guest\'s frames');
    await rec.log.waitFor(/connection 0: closed after \d+ messages/, 10_000, 'proxy saw the front-end go').catch(() => undefined);
    const exit = await rec.stop();
    assert.equal(exit.code, 0, `trace record exit:\n${rec.log.tail(20)}`);
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  }
}

// ---- what a trace holds --------------------------------------------------------------------

export async function summarize(path) {
  let messages = 0;
  let translations = 0;
  for await (const r of readTrace(path)) {
    if (r.type === 'message') messages++;
    else if (r.type === 'translation') translations++;
  }
  const ops = await loadOps(path);
  return {
    bytes: statSync(path).size, messages, translations,
    replay: ops.replay, lookups: ops.lookups, updates: ops.updates, invalidates: ops.invalidates,
    misses: ops.recordedMisses, caches: ops.slots.length,
  };
}

const log = (line) => process.stderr.write(`${line}\n`);

async function main() {
  const argv = process.argv.slice(2);
  let out;
  const names = [];
  let committed = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') out = argv[++i];
    else if (a === '--committed') committed = true;
    else if (a === '--list') {
      for (const f of FIXTURES) console.log(`${relative(root, join(f.dir, `${f.name}.vhtrace`)).padEnd(62)} ${describe(f)}`);
      return;
    } else if (a === '--summary') {
      // --summary FILE...: print what the traces hold (no recording).
      for (const file of argv.slice(i + 1)) console.log(JSON.stringify({ file, ...(await summarize(file)) }));
      return;
    } else if (a.startsWith('-')) throw new Error(`unknown option ${a} (see the comment at the top of scripts/record-fixtures.mjs)`);
    else names.push(a);
  }
  const unknown = names.filter((n) => !FIXTURES.some((f) => f.name === n));
  if (unknown.length > 0) throw new Error(`unknown fixture(s) ${unknown.join(', ')}; --list shows them`);
  const chosen = names.length > 0 ? FIXTURES.filter((f) => names.includes(f.name)) : FIXTURES.filter((f) => !!f.committed === committed);
  const work = mkdtempSync(join(tmpdir(), 'vit-fixtures-'));
  let failed = 0;
  try {
    for (const [i, f] of chosen.entries()) {
      const dest = join(out ?? f.dir, `${f.name}.vhtrace`);
      log(`[${i + 1}/${chosen.length}] ${f.name}: ${describe(f)}`);
      const trace = join(work, `${f.name}.vhtrace`);
      const started = Date.now();
      try {
        if (f.job.startsWith('proxy')) await recordProxy(f, trace, work);
        else await recordServe(f, trace);
        mkdirSync(dirname(dest), { recursive: true });
        copyFileSync(trace, dest);
        const s = await summarize(dest);
        log(`  ${relative(root, dest)}: ${s.bytes} bytes, ${s.messages} messages, ${s.translations} translations; `
          + `replay (${s.replay}): ${s.lookups} lookups, ${s.updates} updates, ${s.invalidates} invalidates, ${s.misses} misses `
          + `(${((Date.now() - started) / 1000).toFixed(0)} s)`);
      } catch (err) {
        failed++;
        log(`  FAILED: ${err.stack ?? err}`);
      } finally {
        await rig.closeAllRigs();
        rmSync(trace, { force: true });
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  if (failed > 0) {
    log(`${failed} of ${chosen.length} failed`);
    process.exitCode = 1;
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await main();
  // Child processes (helpers' killOnExit) are gone; stray handles must not keep us alive.
  process.exit(process.exitCode ?? 0);
}

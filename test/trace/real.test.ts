// `trace record` between REAL peers:
//
//   QEMU guest (virtio-net) ──FRONT──▶ vhost-iotlb trace record ──BACK──▶ dpdk-testpmd net_vhost0 (macswap)
//
// The guest's link comes up and frames flow through DPDK as they do without the proxy
// (test/peers/peers.test.ts); the recorded trace, decoded by the CLI, shows the real
// negotiation. The IOMMU variant (intel-iommu + iommu-support=1) adds IOTLB updates on the main
// channel and DPDK's IOTLB misses on the back-end channel the proxy splices.
// A missing peer binary FAILS these tests (naming the Debian package).
//
// VIT_KEEP_TRACES=DIR copies each recorded trace there (how fixtures/traces/recorded/qemu-dpdk*.vhtrace
// were made, see fixtures/traces/README.md).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertGuestTestpmdFlow } from '../peers/assert-flow.js';
import { type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestpmd, testpmdBinary, type Testpmd } from '../peers/dpdk.js';
import { qemuBinary, startGuest, type Guest } from '../peers/qemu.js';
import { LineLog, repoRoot, spawnLogged, terminate, waitForPath, type Exit } from '../peers/util.js';
import { assertRealNegotiation, assertStats, decodeJson } from './real-trace.js';

const dir = mkdtempSync(join(tmpdir(), 'vit-trace-real-'));
const running: Array<{ stop: () => Promise<unknown> }> = [];
after(async () => {
  for (const p of running.reverse()) await p.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

interface Recorder {
  process: ChildProcess;
  log: LineLog;
  exited: Promise<Exit>;
  /** SIGINT (the recorder flushes and closes the trace), SIGKILL after 5 s. */
  stop(): Promise<Exit>;
}

/** Runs `node bin/run.js trace record` as its own process, as a user would. */
function startRecorder(listen: string, connect: string, output: string): Recorder {
  const { child, log, exited } = spawnLogged(
    [process.execPath, join(repoRoot(), 'bin', 'run.js'), 'trace', 'record', '--listen', listen, '--connect', connect, '-o', output],
    'record', { env: { ...process.env, NO_COLOR: '1' } },
  );
  void exited.then((e) => log.close(`trace record exited (code ${e.code}, signal ${e.signal})`));
  return { process: child, log, exited, stop: () => terminate(child, exited, 'SIGINT', 5000) };
}

interface Case {
  name: string;
  iommu: boolean;
  file: string;
}

const cases: Case[] = [
  { name: 'split rings', iommu: false, file: 'qemu-dpdk.vhtrace' },
  { name: 'IOMMU (intel-iommu device-iotlb + iommu-support=1)', iommu: true, file: 'qemu-dpdk-iommu.vhtrace' },
];

for (const c of cases) {
  test(`trace record between a QEMU guest and dpdk-testpmd vhost (macswap), ${c.name}`, { timeout: 60_000 }, async () => {
    // Fail loudly (MissingPeerError naming the package) before starting anything.
    qemuBinary();
    testpmdBinary();
    const back = join(dir, `${c.file}.back.sock`);
    const front = join(dir, `${c.file}.front.sock`);
    const trace = join(dir, c.file);

    // vhost.config debug logging shows each VHOST_USER_IOTLB_MSG DPDK handled.
    const extraEal = c.iommu ? ['--log-level=lib.vhost.config:debug'] : [];
    const backend: Testpmd = startTestpmd({ role: 'vhost', socket: back, forwardMode: 'macswap', iommu: c.iommu, extraEal });
    running.push({ stop: () => backend.stop(3000) });
    await waitForPath(back, 15_000, 'testpmd vhost socket');

    // The proxy listens before QEMU starts: with iommu_platform=on QEMU asks for the features
    // (bit 33) while realizing the device and refuses to start without it.
    const rec = startRecorder(front, back, trace);
    running.push({ stop: () => rec.stop() });
    await rec.log.waitFor(/trace record: listening on /, 15_000, 'trace record listening');

    // 192.0.2.1 does not exist: the guest's ping produces ARP requests; macswap sends each back.
    const guest: Guest = startGuest({
      socketPath: front,
      mode: 'ping',
      args: { ip: '192.0.2.2/24', peer: '192.0.2.1', count: 2 },
      iommu: c.iommu,
      timeoutMs: 50_000,
    });
    running.push({ stop: () => guest.kill() });
    await guest.waitFor(/^VIT-LINK up/, 45_000);
    await backend.waitForLinkUp(10_000);
    const r = await guest.result();
    const fin = await backend.stop();
    await rec.log.waitFor(/connection 0: closed after \d+ messages/, 5_000, 'proxy saw the front-end go').catch(() => undefined);
    const recExit = await rec.stop();

    const ctx = `\nguest tail:\n${r.lines.slice(-20).join('\n')}\ntestpmd: ${JSON.stringify(fin.nic)} ${JSON.stringify(fin.accumulated)}` +
      `\nrecorder:\n${rec.log.tail(20)}`;
    assertGuestTestpmdFlow(r, fin, ctx);
    if (c.iommu) {
      assert.ok(fin.lines.some((l) => /read message VHOST_USER_IOTLB_MSG/.test(l)), `DPDK handled IOTLB messages${ctx}`);
    }
    assert.equal(recExit.code, 0, `trace record exits 0 on SIGINT${ctx}`);
    assert.ok(rec.log.find(/trace record: \d+ messages written to /), `recorder reports what it wrote${ctx}`);
    assert.ok(!rec.log.find(/garbage|failed|accepted nothing/), `no proxy errors${ctx}`);

    const msgs = decodeJson(trace);
    assertRealNegotiation(msgs, { iommu: c.iommu });
    assertStats(trace, msgs, { iommu: c.iommu });

    const keep = process.env.VIT_KEEP_TRACES;
    if (keep) {
      mkdirSync(keep, { recursive: true });
      copyFileSync(trace, join(keep, c.file));
      process.stderr.write(`kept ${join(keep, c.file)} (${statSync(trace).size} bytes, ${msgs.length} messages)\n`);
    }
  });
}

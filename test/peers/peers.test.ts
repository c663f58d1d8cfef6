// The real peers work with each other, without any of our code:
//   dpdk-testpmd virtio-user (txonly)  ->  dpdk-testpmd net_vhost0 (rxonly)
//   QEMU guest (virtio-net, TCG)       <-> dpdk-testpmd net_vhost0 (macswap)   [split, packed, IOMMU, QEMU as server]
// If a binary is missing these tests FAIL, naming the Debian package to install.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertGuestTestpmdFlow } from './assert-flow.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestpmd, testpmdArgs, type Testpmd } from './dpdk.js';
import { startGuest, waitForGuestSocket, type Guest } from './qemu.js';
import { waitForPath } from './util.js';

const dir = mkdtempSync(join(tmpdir(), 'vit-peers-'));
const running: Array<Testpmd | Guest> = [];
after(async () => {
  for (const p of running) {
    if ('stop' in p) await p.stop(3000).catch(() => undefined);
    else await p.kill().catch(() => undefined);
  }
  rmSync(dir, { recursive: true, force: true });
});

function sock(name: string): string {
  return join(dir, `${name}.sock`);
}

test('dpdk-testpmd virtio-user (txonly) moves packets to dpdk-testpmd vhost (rxonly)', { timeout: 60_000 }, async () => {
  const path = sock('pmd2pmd');
  const backend = startTestpmd({ role: 'vhost', socket: path, forwardMode: 'rxonly' });
  running.push(backend);
  await waitForPath(path, 15_000, 'testpmd vhost socket');
  const front = startTestpmd({ role: 'virtio-user', socket: path, forwardMode: 'txonly', extraArgs: ['--txpkts=64'] });
  running.push(front);
  await front.waitForLinkUp(20_000);
  await backend.waitForLinkUp(20_000);
  const s = await backend.waitForStats((st) => (st[0]?.rxPackets ?? 0) >= 1000, 20_000);
  assert.ok(s[0]!.rxPackets >= 1000);
  const f = await front.stop();
  const b = await backend.stop();
  assert.ok((f.accumulated?.txPackets ?? 0) > 0, 'virtio-user counted TX packets');
  assert.ok((b.accumulated?.rxPackets ?? 0) >= 1000, `vhost counted RX packets: ${JSON.stringify(b.accumulated)}`);
  assert.equal(b.nic[0]!.rxErrors, 0);
});

test('dpdk-testpmd with forwardCpus: one forwarding lcore per CPU, each forwarding its queue (bench/worker-scaling.ts places back-ends so)', { timeout: 60_000 }, async () => {
  const path = sock('spread');
  const args = testpmdArgs({ role: 'vhost', socket: path, queues: 2, forwardMode: 'rxonly', lcores: [0, 0], forwardCpus: [1, 0] }, 'spread');
  assert.equal(args[args.indexOf('--lcores') + 1], '0@0,1@1,2@0', 'main lcore on lcores[0], lcore k on forwardCpus[k - 1]');
  const backend = startTestpmd({ role: 'vhost', socket: path, queues: 2, forwardMode: 'rxonly', lcores: [0, 0], forwardCpus: [1, 0] });
  running.push(backend);
  await waitForPath(path, 15_000, 'testpmd vhost socket');
  const front = startTestpmd({ role: 'virtio-user', socket: path, queues: 2, forwardMode: 'txonly', lcores: [1, 1], forwardCpus: [0, 1], extraArgs: ['--txpkts=64'] });
  running.push(front);
  await front.waitForLinkUp(20_000);
  await backend.waitForStats((st) => (st[0]?.rxPackets ?? 0) >= 1000, 20_000);
  await front.stop();
  await backend.stop();
  for (const pmd of [backend, front]) {
    assert.ok(pmd.lines.some((l) => /cores=2 - streams=2/.test(l)), `two lcores, two streams:\n${pmd.lines.join('\n')}`);
    for (const lcore of [1, 2]) assert.ok(pmd.lines.some((l) => l.startsWith(`Logical Core ${lcore} `)), `lcore ${lcore} forwards a stream`);
  }
});

test('dpdk-testpmd virtio-user packed_vq=1, server=1 <- vhost client=1: packets flow', { timeout: 60_000 }, async () => {
  const path = sock('pmd2pmd-packed');
  const front = startTestpmd({ role: 'virtio-user', socket: path, forwardMode: 'txonly', packed: true, server: true });
  running.push(front);
  await waitForPath(path, 15_000, 'testpmd virtio-user server socket');
  const backend = startTestpmd({ role: 'vhost', socket: path, forwardMode: 'rxonly', server: false });
  running.push(backend);
  await backend.waitForLinkUp(20_000);
  await backend.waitForStats((st) => (st[0]?.rxPackets ?? 0) >= 1000, 25_000);
  const f = await front.stop();
  const b = await backend.stop();
  assert.ok((f.accumulated?.txPackets ?? 0) > 0);
  assert.ok((b.accumulated?.rxPackets ?? 0) >= 1000);
});

interface GuestCase {
  name: string;
  iommu?: boolean;
  packed?: boolean;
  qemuServer?: boolean;
}

const guestCases: GuestCase[] = [
  { name: 'split' },
  { name: 'IOMMU (intel-iommu device-iotlb + iommu-support=1)', iommu: true },
  { name: 'packed, QEMU socket server + testpmd client=1', packed: true, qemuServer: true },
];

for (const c of guestCases) {
  test(`QEMU guest <-> dpdk-testpmd vhost (macswap), ${c.name}: frames flow both ways`, { timeout: 60_000 }, async () => {
    const path = sock(`guest-${guestCases.indexOf(c)}`);
    let backend: Testpmd | undefined;
    if (!c.qemuServer) {
      // vhost.config debug logging shows each VHOST_USER_IOTLB_MSG (proof the IOTLB path ran)
      const extraEal = c.iommu ? ['--log-level=lib.vhost.config:debug'] : [];
      backend = startTestpmd({ role: 'vhost', socket: path, forwardMode: 'macswap', iommu: !!c.iommu, extraEal });
      running.push(backend);
      await waitForPath(path, 15_000, 'testpmd vhost socket');
    }
    // 192.0.2.1 does not exist: the guest's ping produces ARP requests; macswap sends each back.
    const guest = startGuest({
      socketPath: path,
      mode: 'ping',
      args: { ip: '192.0.2.2/24', peer: '192.0.2.1', count: 3 },
      iommu: !!c.iommu,
      packed: !!c.packed,
      server: !!c.qemuServer,
      timeoutMs: 55_000,
    });
    running.push(guest);
    if (c.qemuServer) {
      await waitForGuestSocket(path, 15_000);
      backend = startTestpmd({ role: 'vhost', socket: path, forwardMode: 'macswap', iommu: !!c.iommu, server: false });
      running.push(backend);
    }
    await guest.waitFor(/^VIT-LINK up/, 50_000);
    await backend!.waitForLinkUp(10_000);
    const r = await guest.result();
    const fin = await backend!.stop();
    const ctx = `\nguest tail:\n${r.lines.slice(-25).join('\n')}\ntestpmd: ${JSON.stringify(fin.nic)} ${JSON.stringify(fin.accumulated)}`;
    assertGuestTestpmdFlow(r, fin, ctx);
    if (c.iommu) {
      const iotlb = fin.lines.filter((l) => /read message VHOST_USER_IOTLB_MSG/.test(l)).length;
      assert.ok(iotlb > 0, `QEMU sent IOTLB updates to the backend${ctx}`);
    }
  });
}

test('QEMU guest pktgen -> dpdk-testpmd vhost (rxonly): every frame is counted', { timeout: 60_000 }, async () => {
  const path = sock('pktgen');
  const backend = startTestpmd({ role: 'vhost', socket: path, forwardMode: 'rxonly' });
  running.push(backend);
  await waitForPath(path, 15_000, 'testpmd vhost socket');
  const count = 2000;
  const guest = startGuest({
    socketPath: path,
    mode: 'pktgen',
    args: { ip: '192.0.2.2/24', peer: '192.0.2.1', peermac: '02:00:00:00:00:01', count },
    timeoutMs: 55_000,
  });
  running.push(guest);
  const r = await guest.result();
  // testpmd prints stats every second: let the last frames show up before stopping it
  await backend.waitForStats((st) => (st[0]?.rxPackets ?? 0) >= count, 5_000).catch(() => undefined);
  const fin = await backend.stop();
  const ctx = `\nguest tail:\n${r.lines.slice(-20).join('\n')}\ntestpmd: ${JSON.stringify(fin.accumulated)}`;
  assert.ok(r.pktgen?.ok, `pktgen sent all ${count} frames${ctx}`);
  // the guest may also send a few frames of its own (e.g. IPv6 is not loaded, but ARP could be)
  assert.ok((fin.accumulated?.rxPackets ?? 0) >= count, `testpmd counted >= ${count} frames${ctx}`);
});

test('two QEMU guests through dpdk-testpmd (two vhost ports, io): TCP transfer arrives intact', { timeout: 60_000 }, async () => {
  const a = sock('tcp-a');
  const b = sock('tcp-b');
  const backend = startTestpmd({ role: 'vhost', socket: [a, b], forwardMode: 'io' });
  running.push(backend);
  await waitForPath(a, 15_000, 'testpmd vhost socket a');
  await waitForPath(b, 15_000, 'testpmd vhost socket b');
  const receiver = startGuest({
    socketPath: b,
    mode: 'tcp-recv',
    mac: '52:54:00:00:00:03',
    args: { ip: '192.0.2.3/24', peer: '192.0.2.2', listen: 1, port: 5201 },
    timeoutMs: 55_000,
  });
  running.push(receiver);
  const sender = startGuest({
    socketPath: a,
    mode: 'tcp-send',
    mac: '52:54:00:00:00:02',
    // pre: give the receiver time to reach its listen() once the sender's link is up
    args: { ip: '192.0.2.2/24', peer: '192.0.2.3', mib: 2, port: 5201, pre: 3 },
    timeoutMs: 55_000,
  });
  running.push(sender);
  const [rs, rr] = await Promise.all([sender.result(), receiver.result()]);
  const fin = await backend.stop();
  const ctx = `\nsender:\n${rs.lines.slice(-12).join('\n')}\nreceiver:\n${rr.lines.slice(-12).join('\n')}\ntestpmd: ${JSON.stringify(fin.forward)}`;
  assert.ok(rs.tcp?.ok && rr.tcp?.ok, `both nc ended cleanly${ctx}`);
  assert.equal(rs.sha256?.bytes, 2 * 1048576, ctx);
  assert.deepEqual(rr.sha256, rs.sha256, `received data == sent data${ctx}`);
  assert.ok((fin.forward[0]?.rxPackets ?? 0) > 1000 && (fin.forward[1]?.rxPackets ?? 0) > 0, ctx);
});

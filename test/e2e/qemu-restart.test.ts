// serve restarted, or the guest rebooted, under one running QEMU: the guest's traffic must come
// back intact, and nothing from before (a mapping, an IOTLB entry) may serve the new session.
//
//   1. QEMU as the client with reconnect=1: serve is SIGKILLed while the guest sends, started
//      again on the same socket; the same guest then sends 8 MiB whose sha256 the namespace's
//      sink must match. No IOMMU, and behind intel-iommu (strict).
//   2. serve --client against QEMU server=on: the same, serve reconnecting to the QEMU that stayed.
//   3. The guest reboots itself on the same connection (intel-iommu): the device is set up again,
//      the IOTLB starts empty, and the rebooted guest sends 8 MiB intact.
//
// The guest runs the image's shell (test/support/guest-shell.ts), so one guest can act before
// and after the event; the rig (namespace, serve on a tap, TCP sink) is test/support/qemu-rig.ts.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGuest, waitForGuestSocket, type Guest } from '../peers/qemu.js';
import { sleep } from '../peers/util.js';
import { GuestShell } from '../support/guest-shell.js';
import { boot, closeAllRigs, HOST_IP, onCleanup, PORT, shellLinkUp, shellSendChecked, startRig, type Rig } from '../support/qemu-rig.js';
import { total } from '../support/serve.js';
import type { DeviceState } from '../../src/control/state.js';
import { decodeMessage, FrontendRequest, IotlbType } from '../../src/protocol/index.js';
import { readTrace } from '../../src/trace/reader.js';
import type { TraceRecord } from '../../src/trace/records.js';

const dir = mkdtempSync(join(tmpdir(), 'vit-restart-'));
after(async () => {
  const leaks = await closeAllRigs();
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(leaks, [], 'processes left behind in test namespaces');
});

/** serve's state once a front-end is connected with both rings running. */
async function waitRunning(rig: Rig, timeoutMs = 30_000): Promise<DeviceState> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await rig.serve.state().catch(() => null);
    if (s && s.connected && s.queues.length >= 2 && s.queues.every((q) => q.running)) return s;
    assert.ok(Date.now() < end, `no front-end with running rings after ${timeoutMs} ms: ${JSON.stringify(s)}`);
    await sleep(100);
  }
}

/** A transfer in the background that serve's SIGKILL cuts: waits until frames move, then kills. */
async function killServeMidTransfer(rig: Rig, guest: Guest, sh: GuestShell): Promise<void> {
  await sh.ok('dd if=/dev/urandom of=/tmp/big bs=1048576 count=48 2>/dev/null');
  const before = total(await rig.serve.state(), 'tx', 'bytes');
  guest.write(`nc -w 5 ${HOST_IP} ${PORT} < /tmp/big &\n`);
  const end = Date.now() + 20_000;
  // Bytes, not frames: with segmentation offload a frame carries up to 64 KiB.
  while (total(await rig.serve.state(), 'tx', 'bytes') < before + 2 * 1024 * 1024) {
    assert.ok(Date.now() < end, 'the background transfer moved no frames');
    await sleep(50);
  }
  rig.serve.child.kill('SIGKILL');
}

/**
 * Translations that hit after the device was started again (the first SET_FEATURES after a
 * GET_VRING_BASE) without an UPDATE since that start covering them: entries that outlived the
 * session they belonged to. (A hit needs an UPDATE first: nothing else fills a cache.)
 */
async function hitsFromAnEarlierStart(trace: string): Promise<string[]> {
  const records: TraceRecord[] = [];
  for await (const r of readTrace(trace)) records.push(r);
  records.sort((a, b) => (a.timeNs < b.timeNs ? -1 : a.timeNs > b.timeNs ? 1 : 0));
  let stopped = false;
  let restarts = 0;
  let learnt: Array<[bigint, bigint]> | null = null;
  const stale: string[] = [];
  for (const r of records) {
    if (r.type === 'message') {
      if (r.channel !== 'frontend' || r.direction !== 'to-backend') continue;
      const m = decodeMessage('frontend', r.bytes, r.fds.map(() => -1));
      if (m.request === FrontendRequest.GET_VRING_BASE) stopped = true;
      else if (m.request === FrontendRequest.SET_FEATURES && stopped) {
        stopped = false;
        restarts++;
        learnt = [];
      } else if (learnt && m.request === FrontendRequest.IOTLB_MSG && m.body.kind === 'iotlb' && m.body.iotlbType === IotlbType.UPDATE) {
        learnt.push([m.body.iova, m.body.iova + m.body.size]);
      }
    } else if (learnt && r.result === 'hit' && !learnt.some(([s, e]) => r.iova >= s && r.iova < e)) {
      stale.push(`q${r.queue} 0x${r.iova.toString(16)} at ${Number(r.timeNs) / 1e6} ms`);
    }
  }
  assert.ok(restarts > 0, 'the trace shows no restart of the device (SET_FEATURES after GET_VRING_BASE)');
  return stale;
}

/**
 * The guest sends 8 MiB intact; serve is SIGKILLed in the middle of a bigger transfer and
 * started again; once the front-end has its rings running again the guest sends 8 MiB intact.
 */
async function restartUnderGuest(rig: Rig, guest: Guest): Promise<DeviceState> {
  const sh = new GuestShell(guest);
  await sh.ready();
  await shellLinkUp(sh);
  await shellSendChecked(rig, sh, 8);
  await killServeMidTransfer(rig, guest, sh);
  await rig.restartServe();
  const state = await waitRunning(rig);
  await shellSendChecked(rig, sh, 8);
  return state;
}

describe('serve restarted under a running guest', () => {
  for (const iommu of [false, true]) {
    it(`QEMU reconnect=1, serve SIGKILLed mid-transfer and started again: the same guest sends 8 MiB intact (${iommu ? 'intel-iommu' : 'no IOMMU'})`, { timeout: 180_000 }, async () => {
      const rig = await startRig(['--iotlb-strategy', 'coalescing'], { tcp: true });
      try {
        const guest = boot(rig, { mode: 'shell', iommu, reconnect: true, timeoutMs: 170_000 });
        const state = await restartUnderGuest(rig, guest);
        assert.equal(state.iommu, iommu);
        if (iommu) {
          const after = await rig.serve.state();
          assert.ok(after.queues.every((q) => (q.counters?.missesSent ?? 0) > 0), 'the new serve learnt its translations by misses');
        }
      } finally {
        await rig.close();
      }
    });
  }

  it('serve --client against QEMU server=on, SIGKILLed mid-transfer and started again: the same guest sends 8 MiB intact', { timeout: 180_000 }, async () => {
    const socket = join(dir, 'qemu-server.sock');
    const guest = startGuest({ socketPath: socket, server: true, mode: 'shell', iommu: true, extraKernelArgs: 'iommu.strict=1', timeoutMs: 170_000 });
    onCleanup(async () => void (await guest.kill()));
    await waitForGuestSocket(socket);
    const rig = await startRig(['--client'], { socket, tcp: true });
    try {
      await restartUnderGuest(rig, guest);
    } finally {
      await rig.close();
      await guest.kill();
    }
  });
});

describe('a guest rebooting on the same connection', () => {
  it('intel-iommu: the device is set up again with an empty IOTLB, and the rebooted guest sends 8 MiB intact', { timeout: 180_000 }, async () => {
    const rig = await startRig(['--iotlb-strategy', 'coalescing', '--trace', join(dir, 'reboot.vhtrace')], { tcp: true });
    try {
      const guest = boot(rig, { mode: 'shell', iommu: true, reboot: true, timeoutMs: 170_000 });
      const sh = new GuestShell(guest);
      await sh.ready();
      await shellLinkUp(sh);
      await shellSendChecked(rig, sh, 8);
      const first = await rig.serve.state({ entries: true });
      assert.ok(first.queues.some((q) => (q.iotlb?.entries.length ?? 0) > 0), 'IOTLB entries before the reboot');
      guest.write('reboot -f\n');
      await sh.ready(2);
      await shellLinkUp(sh);
      await shellSendChecked(rig, sh, 8);
      const state = await rig.serve.state();
      assert.equal(state.connections, 1, 'the reboot happened on the same connection');
      await rig.close();
      const stale = await hitsFromAnEarlierStart(join(dir, 'reboot.vhtrace'));
      assert.deepEqual(stale.slice(0, 10), [], `${stale.length} translations served by entries from before the reboot`);
    } finally {
      await rig.close();
    }
  });
});

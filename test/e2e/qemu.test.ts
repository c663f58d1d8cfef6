// serve against real QEMU guests (Linux virtio-net driver), traffic checked end to end.
//
// The host end is `serve --net tap:vit0` running inside a network namespace this file creates
// (serve runs under `ip netns exec`, so the tap is born inside the namespace). The namespace holds
// 192.0.2.1/24 on the tap and a Node TCP server that hashes what it receives; the guest is
// 192.0.2.2/24. Nothing leaves the namespace; 192.0.2.0/24 (TEST-NET-1) only.
//
//   1. no IOMMU: ping 5/5, 64 MiB over TCP with equal sha256 on both ends, 16 MiB host → guest;
//      checksum and segmentation offloads pass through the tap both ways (frames over the MTU)
//   2. reconnect: QEMU killed mid-transfer, a new QEMU against the same serve works; fds and RSS
//      back to their level; --client against QEMU server=on, including QEMU restarting
//   3. a short IOMMU ping session recorded with --trace, decoded with `trace decode --stats`
//      (VIT_RECORD_FIXTURES=1 writes it to fixtures/traces/qemu-iommu-guest.vhtrace)
//
// IOMMU guests for each strategy are in qemu-iommu.test.ts (strict invalidation) and
// qemu-lazy.test.ts (Linux's default lazy mode); each file is one `node --test` process with its
// own time budget, so the guest boots are spread over three files.
//
// The rig (namespace, serve on the tap, TCP server, guest boot, ping/transfer checks) is in
// test/support/qemu-rig.ts, shared with the other QEMU suites and bench/miss-policy-qemu.ts.
// A missing qemu-system-x86_64 / ip / busybox / kernel fails loudly (MissingPeerError).
// VIT_LONG=1 adds longer variants (more reconnect rounds).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGuest, waitForGuestSocket } from '../peers/qemu.js';
import { repoRoot, sleep } from '../peers/util.js';
import { memfdMappings } from '../support/netns.js';
import { fdCountOf, rssOf } from '../support/hostile-frontend.js';
import {
  assertDone, boot, closeAllRigs, GUEST_CIDR, HOST_IP, onCleanup, pingOk, receiveOk, startRig, tail, transferOk, waitDisconnected,
} from '../support/qemu-rig.js';
import { total } from '../support/serve.js';

const LONG = process.env.VIT_LONG === '1';

const dir = mkdtempSync(join(tmpdir(), 'vit-qemu-'));
after(async () => {
  const leaks = await closeAllRigs();
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(leaks, [], 'processes left behind in test namespaces');
});

describe('serve --net tap with a QEMU guest, no IOMMU', () => {
  it('guest pings the namespace 5/5, sends 64 MiB and receives 16 MiB over TCP intact', { timeout: 150_000 }, async () => {
    const rig = await startRig([], { tcp: true, source: 16 });
    try {
      const t0 = Date.now();
      await pingOk(rig);
      const tPing = Date.now();
      const r = await transferOk(rig, 64);
      const tTcp = Date.now();
      const state = await waitDisconnected(rig.serve);
      assert.equal(state.iommu, false);
      assert.ok(total(state, 'tx', 'bytes') >= 64 * 1024 * 1024, `serve carried ${total(state, 'tx', 'bytes')} bytes from the guest`);
      // CSUM + HOST_TSO4 reach the tap: the guest's TCP goes out in segments larger than its MTU.
      const perFrame = total(state, 'tx', 'bytes') / total(state, 'tx');
      assert.ok(perFrame > 1514, `${perFrame.toFixed(0)} bytes per guest frame: no segmentation offload reached the tap`);
      assert.ok(total(state, 'rx') > 0, 'serve delivered frames to the guest');
      assert.equal(state.queues.reduce((n, q) => n + (q.counters?.errors ?? 0), 0), 0, 'malformed frames');
      assert.equal(r.stats?.txDropped ?? 0, 0);
      const received = await receiveOk(rig);
      const afterRecv = await waitDisconnected(rig.serve);
      const rxPerFrame = (total(afterRecv, 'rx', 'bytes') - total(state, 'rx', 'bytes')) / (total(afterRecv, 'rx') - total(state, 'rx'));
      assert.ok(rxPerFrame > 1514, `${rxPerFrame.toFixed(0)} bytes per frame into the guest: no receive offload from the tap`);
      console.log(`# plain: ping ${tPing - t0} ms, 64 MiB tcp ${tTcp - tPing} ms (guest boot ${r.bootMs} ms), 16 MiB host → guest ${Date.now() - tTcp} ms`);
      assert.equal(received.host.bytes, 16 * 1024 * 1024);
    } finally {
      await rig.close();
    }
  });
});

describe('serve survives QEMU going away and coming back', () => {
  it('QEMU killed mid-transfer, a new QEMU on the same serve works; fds and RSS back to their level', { timeout: 180_000 }, async () => {
    const rig = await startRig(['--iotlb-strategy', 'coalescing'], { tcp: true });
    try {
      const pid = rig.serve.child.pid!;
      await sleep(500);
      const fd0 = fdCountOf(pid);
      const rss0 = rssOf(pid) / 1024;
      const rounds = LONG ? 4 : 1;
      const settled: Array<{ fds: number; rssKiB: number; memfdMaps: number }> = [];
      const during: number[] = [];
      for (let round = 0; round < rounds; round++) {
        // A big transfer, cut by SIGKILL while frames and IOTLB misses are in flight.
        const g = boot(rig, { mode: 'tcp-send', iommu: true, args: { mib: 96 } });
        await g.waitFor(/^VIT-RESULT sha256/, 90_000);
        const before = total(await rig.serve.state(), 'tx', 'bytes');
        const end = Date.now() + 20_000;
        while (total(await rig.serve.state(), 'tx', 'bytes') < before + 2 * 1024 * 1024) {
          if (Date.now() > end) throw new Error(`no traffic from the guest:\n${tail(g.lines)}`);
          await sleep(100);
        }
        during.push(rssOf(pid) / 1024);
        // (the check below means something: guest memory is mapped while a session runs)
        assert.ok(memfdMappings(pid) > 0, 'no memfd mapping seen during the session');
        g.process.kill('SIGKILL');
        await g.exited;
        await waitDisconnected(rig.serve);
        // The next front-end is served by the same process.
        await pingOk(rig, { iommu: true });
        await waitDisconnected(rig.serve);
        await sleep(300); // let retired workers finish tearing down
        settled.push({ fds: fdCountOf(pid), rssKiB: rssOf(pid) / 1024, memfdMaps: memfdMappings(pid) });
      }
      const state = await rig.serve.state();
      assert.equal(state.connections, rounds * 2, 'every QEMU was served by the one serve process');
      assert.equal(rig.serve.child.exitCode, null, 'serve is still running');
      const mib = (k: number): string => (k / 1024).toFixed(1);
      console.log(`# reconnect: start fds ${fd0} rss ${mib(rss0)} MiB; rss during transfer ${during.map(mib).join(', ')} MiB; after each round ` +
        settled.map((a) => `fds ${a.fds} rss ${mib(a.rssKiB)} MiB`).join('; '));
      // fds: exactly back (every per-connection fd: socket, backend channel, eventfds, memfd).
      for (const a of settled) assert.equal(a.fds, fd0, `fds after a session: ${a.fds}, at start ${fd0}`);
      // The guest memory (a 512 MiB memfd, mapped by the control path and by the worker) is unmapped.
      for (const a of settled) assert.equal(a.memfdMaps, 0, 'guest memory still mapped after the session');
      // RSS tolerance: at most 32 MiB over the start (allocator and V8 heap growth from a
      // session's worker thread may stay), and no growth from one session to the next beyond
      // 16 MiB. A worker or mapping kept per session would add its ~10+ MiB each round.
      const last = settled[settled.length - 1]!;
      assert.ok(last.rssKiB <= rss0 + 32 * 1024, `RSS ${last.rssKiB} KiB vs ${rss0} KiB at start (tolerance 32 MiB)`);
      for (let i = 1; i < settled.length; i++) {
        assert.ok(settled[i]!.rssKiB <= settled[0]!.rssKiB + 16 * 1024, `RSS grows per session: ${settled.map((a) => a.rssKiB).join(', ')} KiB`);
      }
    } finally {
      await rig.close();
    }
  });

  it('--client against QEMU server=on: connects, and reconnects to a restarted QEMU', { timeout: 120_000 }, async () => {
    const socket = join(dir, 'qemu-server.sock');
    // QEMU listens first; serve --client connects (and retries with backoff) whenever QEMU is there.
    const first = startGuest({ socketPath: socket, server: true, mode: 'ping', args: { ip: GUEST_CIDR, peer: HOST_IP, count: 5 }, timeoutMs: 90_000 });
    onCleanup(async () => void (await first.kill()));
    await waitForGuestSocket(socket);
    const rig = await startRig(['--client'], { socket });
    try {
      const r1 = await first.result();
      assertDone(r1, 'first QEMU (server=on)', rig.serve);
      assert.deepEqual(r1.ping, { ok: true, received: 5, sent: 5 }, `ping:\n${tail(r1.lines)}`);
      await waitDisconnected(rig.serve);
      // A new QEMU on the same path: serve finds it without being restarted.
      const second = boot(rig, { socketPath: socket, server: true, mode: 'ping', args: { count: 5 } });
      const r2 = await second.result();
      assertDone(r2, 'second QEMU (server=on)', rig.serve);
      assert.deepEqual(r2.ping, { ok: true, received: 5, sent: 5 }, `ping:\n${tail(r2.lines)}`);
      const state = await waitDisconnected(rig.serve);
      assert.equal(state.connections, 2);
    } finally {
      await rig.close();
    }
  });
});

describe('serve --trace of a real IOMMU guest', () => {
  it('records a short ping session that `trace decode --stats` reads', { timeout: 90_000 }, async () => {
    const trace = join(dir, 'qemu-iommu-guest.vhtrace');
    const rig = await startRig(['--iotlb-strategy', 'coalescing', '--trace', trace]);
    try {
      await pingOk(rig, { iommu: true }, 3);
      await waitDisconnected(rig.serve);
    } finally {
      await rig.close(); // serve closes the trace file on exit
    }
    const size = statSync(trace).size;
    assert.ok(size > 1000 && size < 1024 * 1024, `trace is ${size} bytes`);
    const out = spawnSync(process.execPath, [join(repoRoot(), 'bin', 'run.js'), 'trace', 'decode', trace, '--stats', '--no-color'], { encoding: 'utf8' });
    assert.equal(out.status, 0, `trace decode --stats failed:\n${out.stdout}\n${out.stderr}`);
    for (const what of ['SET_MEM_TABLE|ADD_MEM_REG', 'IOTLB_MSG', 'SET_VRING_ADDR']) {
      assert.match(out.stdout, new RegExp(what), `decode --stats mentions ${what}:\n${out.stdout}`);
    }
    assert.match(out.stdout, /update\s*│\s*[1-9]/, `IOTLB updates counted:\n${out.stdout}`);
    console.log(`# trace: ${size} bytes`);
    if (process.env.VIT_RECORD_FIXTURES === '1') {
      copyFileSync(trace, join(repoRoot(), 'fixtures', 'traces', 'qemu-iommu-guest.vhtrace'));
    }
  });
});

// The link a tap gives a guest, with a real QEMU (and, for what QEMU only does after a
// migration, the hostile front-end speaking for it):
//
//   1. serve --mtu 9000 and host_mtu=9000 on the NIC: QEMU sends NET_SET_MTU, serve accepts it
//      for the tap, the guest's eth0 has it, an 8000-byte ping crosses and jumbo TCP arrives
//      intact; GUEST_ANNOUNCE negotiated.
//   1b. offloads: the guest sees the ones serve offers; with them all turned off on the NIC,
//      TCP both ways is still intact (the kernel checksums and segments everything itself);
//      and with each one off alone (with what needs it), the rest on: TCP both ways intact,
//      MTU-sized frames in the direction that lost its segmentation, 64 KiB host → guest
//      while the guest still takes them.
//   2. SEND_RARP: the RARP from the guest's MAC comes out of the tap (tcpdump in the namespace).
//   3. --queues 2: a multiqueue tap, one queue per pair; 16 TCP flows from the host into a
//      2-vCPU guest and one flow out from each vCPU arrive intact (sha256 per flow), over both
//      queue pairs: split rings with a worker per pair, packed rings with one worker for both.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { FrontendRequest, ProtocolFeature, featureMask } from '../../src/protocol/index.js';
import { GuestShell } from '../support/guest-shell.js';
import { HostileFrontend } from '../support/hostile-frontend.js';
import { boot, closeAllRigsChecked, digests, HOST_IP, PORT, receiveOk, shellLinkUp, shellSendChecked, sinkDigests, SOURCE_PORT, startRig, TAP, transferOk, waitDisconnected } from '../support/qemu-rig.js';
import { total } from '../support/serve.js';
import type { DeviceState } from '../../src/control/state.js';
import type { OffloadProperty } from '../peers/qemu.js';

after(closeAllRigsChecked);

describe('serve --net tap: the guest\'s link', () => {
  it('serve --mtu 9000, host_mtu=9000: the tap and the guest get MTU 9000, an 8000-byte ping crosses and 8 MiB of jumbo TCP arrive intact; GUEST_ANNOUNCE negotiated', { timeout: 120_000 }, async () => {
    // QEMU gives the guest host_mtu in the NIC's config space and sends it as NET_SET_MTU;
    // serve --mtu is the tap's MTU from the start and the most that message may set.
    const rig = await startRig(['--mtu', '9000'], { tcp: true });
    try {
      const guest = boot(rig, { mode: 'shell', hostMtu: 9000, timeoutMs: 110_000 });
      const sh = new GuestShell(guest);
      await sh.ready();
      assert.ok((await sh.ok('cat /sys/class/net/eth0/mtu')).includes('9000'), 'the guest\'s eth0 MTU');
      const tapLink = spawnSync('ip', ['-n', rig.ns.name, 'link', 'show', TAP], { encoding: 'utf8' }).stdout;
      assert.match(tapLink, /mtu 9000/, `the tap: ${tapLink}`);
      const state = await rig.serve.state();
      assert.equal(state.mtu, 9000);
      for (const f of ['MTU', 'GUEST_ANNOUNCE']) assert.ok(state.features.names.includes(f), `${f} not negotiated: ${state.features.names.join(' ')}`);
      await shellLinkUp(sh);
      // One 8028-byte frame each way now that both ends have MTU 9000.
      await sh.ok(`ping -c 3 -W 3 -s 8000 ${HOST_IP}`, 30_000);
      await shellSendChecked(rig, sh, 8);
    } finally {
      await rig.close();
    }
  });

  it('SEND_RARP: a broadcast RARP from the guest\'s MAC leaves through the tap', { timeout: 60_000 }, async (t) => {
    if (spawnSync('tcpdump', ['--version']).error) assert.fail('tcpdump is missing (Debian package tcpdump; .ci/run installs it)');
    const rig = await startRig([]);
    try {
      const dump = spawn('ip', ['netns', 'exec', rig.ns.name, 'tcpdump', '-l', '-n', '-e', '-c', '1', '-i', TAP, 'rarp'], { stdio: ['ignore', 'pipe', 'pipe'] });
      t.after(() => void dump.kill('SIGKILL'));
      let out = '';
      let err = '';
      dump.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      dump.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      const listening = Date.now() + 10_000;
      while (!/listening on/.test(err)) {
        assert.ok(Date.now() < listening, `tcpdump did not start: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const fe = await HostileFrontend.connect(rig.serve.socket);
      try {
        await fe.negotiate({ protocol: featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.RARP) });
        // QEMU's payload: the MAC's six bytes, in memory order, in a u64.
        await fe.ok(FrontendRequest.SEND_RARP, { kind: 'u64', value: 0x0000_5634_1200_5452n });
      } finally {
        fe.close();
      }
      const end = Date.now() + 10_000;
      while (!out.includes('\n')) {
        assert.ok(Date.now() < end, `no RARP seen on the tap: ${out} ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.match(out, /52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff, ethertype Reverse ARP \(0x8035\), length 60/);
    } finally {
      await rig.close();
    }
  });

  // Split rings with a worker per pair (the default here), packed rings with both pairs on one
  // worker: each layout carries TCP both ways over both queue pairs.
  for (const { ring, workers } of [{ ring: 'split', workers: 2 }, { ring: 'packed', workers: 1 }] as const) {
    it(`--queues 2 --workers ${workers}, ${ring} rings: a multiqueue tap; 16 flows into a 2-vCPU guest and one from each vCPU out, intact, over both queue pairs`, { timeout: 200_000 }, async () => {
      const flows = 16;
      const rig = await startRig(['--queues', '2', '--workers', String(workers)], { source: 1, tcp: true });
      try {
        const guest = boot(rig, { mode: 'shell', queues: 2, cpus: 2, packed: ring === 'packed', timeoutMs: 190_000 });
        const sh = new GuestShell(guest);
        await sh.ready();
        await shellLinkUp(sh);
        const from = rig.source!.log.lines.length;
        // (a fifo opened read-write keeps nc's stdin open: at stdin EOF busybox nc half-closes,
        // and the source stops sending)
        await sh.ok(`mkfifo /tmp/hold; for i in $(seq ${flows}); do nc -w 10 ${HOST_IP} ${SOURCE_PORT} <> /tmp/hold > /tmp/r$i & done; wait`, 120_000);
        const got = digests(await sh.ok('sha256sum /tmp/r*'));
        const sent = rig.source!.log.lines.slice(from).map((l) => l.match(/^SOURCE sha256 ([0-9a-f]{64}) bytes/)?.[1]).filter((h): h is string => h !== undefined);
        assert.equal(sent.length, flows, `the source served ${sent.length} flows`);
        assert.deepEqual(got.sort(), sent.sort(), 'sha256 of every flow the guest received vs what the namespace sent');
        // Out: one sender on each vCPU; the guest picks a TX queue per CPU (XPS), so both
        // TX queues carry a flow.
        const sinkFrom = rig.tcp!.log.lines.length;
        const mine = digests(await sh.ok('for c in 0 1; do dd if=/dev/urandom of=/tmp/s$c bs=1048576 count=4 2>/dev/null; done; sha256sum /tmp/s0 /tmp/s1'));
        assert.equal(mine.length, 2, 'the guest hashed both files');
        const xps = (await sh.ok('cat /sys/class/net/eth0/queues/tx-*/xps_cpus')).filter((l) => /^[0-9a-f,]+$/.test(l));
        const txBytes = (s: DeviceState): number[] => s.queues.filter((q) => q.kind === 'tx').map((q) => q.counters?.bytes ?? 0);
        const before = txBytes(await rig.serve.state());
        await sh.ok(`for c in 0 1; do taskset -c $c nc -w 10 ${HOST_IP} ${PORT} < /tmp/s$c & done; wait`, 120_000);
        const received = await sinkDigests(rig, sinkFrom, 2);
        assert.deepEqual(received.sort(), mine.sort(), 'sha256 of what the namespace received vs what each vCPU sent');
        const state = await rig.serve.state();
        // The 16 flows in already put their ACKs on both TX queues: count what the two flows out
        // added. A flow starts on its sender's queue; later segments may go out from the softirq
        // that took an ACK (interrupts all land on one vCPU with vectors=0), so not all 4 MiB need
        // to, but each queue carries at least a window of data (both senders on vCPU 0: 0 on one).
        const sentPerQueue = txBytes(state).map((n, i) => n - before[i]!);
        assert.ok(sentPerQueue.every((n) => n >= 64 * 1024), `bytes per TX queue from the two senders: ${sentPerQueue.join(', ')} (one 4 MiB flow from each vCPU; the guest's xps_cpus per TX queue: ${xps.join(' ')})`);
        if (ring === 'packed') assert.ok(state.features.names.includes('RING_PACKED'), `RING_PACKED not negotiated: ${state.features.names.join(' ')}`);
        const threads = new Set(state.queues.map((q) => q.worker));
        assert.equal(threads.size, workers, `worker threads serving the rings: ${[...threads].join(', ')}`);
        const rxPackets = state.queues.filter((q) => q.kind === 'rx').map((q) => q.counters?.packets ?? 0);
        assert.equal(rxPackets.length, 2);
        assert.ok(rxPackets.every((n) => n > 0), `frames per RX queue: ${rxPackets.join(', ')} (the tap spreads flows over its queues)`);
        for (const q of state.queues) assert.equal(q.broken, null, `${q.kind} ring ${q.index} broke: ${q.broken}`);
      } finally {
        await rig.close();
      }
    });
  }

  it('offloads: the guest sees CSUM/TSO both ways; with every offload off on the NIC, TCP each way is still intact in MTU-sized frames', { timeout: 150_000 }, async () => {
    const rig = await startRig([], { tcp: true, source: 8 });
    try {
      // virtio feature bits as the guest's sysfs shows them: one character per bit.
      const bits = async (offloads: boolean): Promise<string> => {
        const g = boot(rig, { mode: 'shell', offloads, timeoutMs: 60_000 });
        const sh = new GuestShell(g);
        await sh.ready();
        const line = (await sh.ok('cat /sys/bus/virtio/devices/*/features')).find((l) => /^[01]{64}$/.test(l));
        await g.kill();
        await waitDisconnected(rig.serve);
        assert.ok(line, 'no feature bits in the guest\'s sysfs');
        return line;
      };
      const on = await bits(true);
      for (const [name, bit] of [['CSUM', 0], ['GUEST_CSUM', 1], ['GUEST_TSO4', 7], ['GUEST_TSO6', 8], ['HOST_TSO4', 11], ['HOST_TSO6', 12]] as const) {
        assert.equal(on[bit], '1', `the guest does not see ${name}: ${on}`);
      }
      const off = await bits(false);
      for (const bit of [0, 1, 7, 8, 11, 12]) assert.equal(off[bit], '0', `bit ${bit} still on with offloads off: ${off}`);
      const before = await rig.serve.state();
      await transferOk(rig, 8, { offloads: false });
      await receiveOk(rig, { offloads: false });
      const after = await waitDisconnected(rig.serve);
      for (const kind of ['tx', 'rx'] as const) {
        const perFrame = (total(after, kind, 'bytes') - total(before, kind, 'bytes')) / (total(after, kind) - total(before, kind));
        assert.ok(perFrame <= 1514, `${kind}: ${perFrame.toFixed(0)} bytes per frame with every offload off`);
      }
    } finally {
      await rig.close();
    }
  });

  // One offload off at a time, with the offloads that need it (TSO needs its direction's
  // checksum offload): serve must ask the tap for exactly what the guest still takes, and
  // pass on only what the guest still does. A Linux guest accepts 64 KiB frames it did not
  // negotiate (a build that asked the tap for TSO4 regardless gave it 52 KB frames and TCP
  // stayed intact), so the frame sizes in serve's counters are what shows it.
  const HOST_TSO: OffloadProperty[] = ['host_tso4', 'host_tso6', 'host_ecn', 'host_ufo'];
  const GUEST_TSO: OffloadProperty[] = ['guest_tso4', 'guest_tso6', 'guest_ecn', 'guest_ufo'];
  const oneOff: Array<{ name: string; off: OffloadProperty[]; mtuSized: 'tx' | 'rx' }> = [
    { name: 'guest → host segmentation (host_tso4/6, host_ecn, host_ufo)', off: HOST_TSO, mtuSized: 'tx' },
    { name: 'guest → host checksum (csum, gso and the segmentation that needs it)', off: ['csum', 'gso', ...HOST_TSO], mtuSized: 'tx' },
    { name: 'host → guest segmentation (guest_tso4/6, guest_ecn, guest_ufo)', off: GUEST_TSO, mtuSized: 'rx' },
    { name: 'host → guest checksum (guest_csum and the segmentation that needs it)', off: ['guest_csum', ...GUEST_TSO], mtuSized: 'rx' },
  ];
  for (const { name, off, mtuSized } of oneOff) {
    it(`offloads: ${name} off alone: TCP each way intact, MTU-sized frames ${mtuSized === 'tx' ? 'guest → host' : 'host → guest'}`, { timeout: 120_000 }, async () => {
      const rig = await startRig([], { tcp: true, source: 8 });
      try {
        const perFrame = async (kind: 'tx' | 'rx', move: () => Promise<unknown>): Promise<number> => {
          const before = await rig.serve.state();
          await move();
          const after = await waitDisconnected(rig.serve);
          return (total(after, kind, 'bytes') - total(before, kind, 'bytes')) / (total(after, kind) - total(before, kind));
        };
        const tx = await perFrame('tx', () => transferOk(rig, 4, { offloadsOff: off }));
        const rx = await perFrame('rx', () => receiveOk(rig, { offloadsOff: off }));
        const limited = mtuSized === 'tx' ? tx : rx;
        assert.ok(limited <= 1514, `${mtuSized}: ${limited.toFixed(0)} bytes per frame with ${off.join(', ')} off`);
        // The host's TCP writes large: with the guest's segmentation on, its frames stay large.
        if (mtuSized === 'tx') assert.ok(rx > 1514, `rx: ${rx.toFixed(0)} bytes per frame, though the guest takes 64 KiB segments`);
      } finally {
        await rig.close();
      }
    });
  }
});

// Live migration of a real QEMU guest between two serve processes on this machine.
//
//   source QEMU --vhost-user--> serve A --tap vitA--\
//                                                    vbr0 (192.0.2.1, TCP sink) in a namespace
//   dest QEMU   --vhost-user--> serve B --tap vitB--/   (dest started with -incoming unix:PATH)
//
// The guest sends 32 MiB of random bytes over TCP (or receives them: host -> guest); in the
// middle of it the source is told to `migrate` (QMP). QEMU asks serve A for dirty-page logging (SET_LOG_BASE, LOG_ALL) and copies
// the pages serve marked; the guest resumes on the destination, behind serve B, and the
// transfer ends there: the sha256 of what one end sent must equal what the other received.
// Split and packed rings, behind intel-iommu (strict), where serve writes through IOVAs and logs
// guest-physical pages, and host -> guest, where most of what serve writes is receive buffers.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGuest, type Guest, type GuestOptions } from '../peers/qemu.js';
import { sleep, waitForPath } from '../peers/util.js';
import { GuestShell } from '../support/guest-shell.js';
import { closeAllRigs, GUEST_CIDR, HOST_IP, onCleanup, PORT, SOURCE_PORT, STRICT_IOMMU } from '../support/qemu-rig.js';
import { createNetns, startTcpPeer, type Netns } from '../support/netns.js';
import { startServe, total, type ServeProcess } from '../support/serve.js';

const dir = mkdtempSync(join(tmpdir(), 'vit-migrate-'));
after(async () => {
  const leaks = await closeAllRigs();
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(leaks, [], 'processes left behind');
});

const MIB = 32;
/** VIT_MIGRATE_DEBUG=1: progress on stderr. */
const step = (what: string): void => {
  if (process.env.VIT_MIGRATE_DEBUG) console.error(`[migrate ${new Date().toISOString()}] ${what}`);
};

/** A QMP connection (QEMU's JSON monitor): one command at a time, events skipped. */
class Qmp {
  private buffer = '';
  private waiting: ((v: Record<string, unknown>) => void) | null = null;
  private constructor(private readonly socket: ReturnType<typeof connect>) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const msg = JSON.parse(this.buffer.slice(0, nl)) as Record<string, unknown>;
        this.buffer = this.buffer.slice(nl + 1);
        if (('return' in msg || 'error' in msg) && this.waiting) {
          const w = this.waiting;
          this.waiting = null;
          w(msg);
        }
      }
    });
  }

  static async open(path: string): Promise<Qmp> {
    await waitForPath(path, 30_000, 'QMP socket');
    const socket = connect(path);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const qmp = new Qmp(socket);
    await qmp.run('qmp_capabilities');
    return qmp;
  }

  run(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.waiting = (msg) => ('error' in msg ? reject(new Error(`QMP ${execute}: ${JSON.stringify(msg.error)}`)) : resolve(msg.return as Record<string, unknown>));
      this.socket.write(JSON.stringify({ execute, ...(args ? { arguments: args } : {}) }) + '\n');
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A tap serve creates in the namespace, once it exists, as a port of the bridge. */
async function enslave(ns: Netns, tap: string): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      ns.ip(['link', 'show', tap]);
      break;
    } catch {
      assert.ok(Date.now() < end, `${tap} did not appear`);
      await sleep(50);
    }
  }
  ns.ip(['link', 'set', tap, 'master', 'vbr0']);
  ns.ip(['link', 'set', tap, 'up']);
}

/** Waits until `bytes` more crossed serve A (`kind`: tx from the guest, rx to it), so the migration lands mid-transfer. */
async function waitMoved(serve: ServeProcess, kind: 'tx' | 'rx', bytes: number): Promise<void> {
  const start = total(await serve.state(), kind, 'bytes');
  const end = Date.now() + 60_000;
  while (total(await serve.state(), kind, 'bytes') < start + bytes) {
    assert.ok(Date.now() < end, 'the transfer did not start');
    await sleep(50);
  }
}

describe('live migration between two serve processes', () => {
  const variants = [
    { packed: false, iommu: false, receive: false }, { packed: true, iommu: false, receive: false },
    { packed: false, iommu: true, receive: false }, { packed: false, iommu: false, receive: true },
  ];
  for (const variant of variants) {
    const name = `${variant.packed ? 'packed' : 'split'}${variant.iommu ? ', intel-iommu' : ''}${variant.receive ? ', host -> guest' : ''}`;
    // Known failure, not understood yet: without an IOMMU, guest -> host, the sink sometimes gets a
    // clean end of stream after 15-20 of the 32 MiB (about 1 run in 3, both variants in the same
    // run). Until it is found these two run only with VIT_MIGRATE_KNOWN_FAILURE=1.
    const knownFailure = !variant.iommu && !variant.receive && process.env.VIT_MIGRATE_KNOWN_FAILURE !== '1';
    const skip = knownFailure ? 'KNOWN FAILURE, not run: guest -> host without an IOMMU sometimes ends short after migration (set VIT_MIGRATE_KNOWN_FAILURE=1 to run it)' : false;
    it(`${name}: a ${MIB} MiB TCP stream started on serve A ends intact on serve B`, { timeout: 300_000, skip }, async () => {
      const ns = createNetns();
      const processes: Array<{ stop(): Promise<unknown> }> = [];
      const guests: Guest[] = [];
      const cleanup = async (): Promise<void> => {
        for (const g of guests.splice(0)) await g.kill().catch(() => undefined);
        for (const p of processes.splice(0).reverse()) await p.stop().catch(() => undefined);
        ns.destroy();
      };
      onCleanup(cleanup);
      try {
        // Not --quiet: a failure message carries serve's log, connection closes and their reasons included.
        const serveArgs = ['--iotlb-strategy', 'coalescing'];
        // VIT_MIGRATE_TRACE_DIR=DIR: each serve records its session (`trace decode`) for a failure's post-mortem.
        const traceDir = process.env.VIT_MIGRATE_TRACE_DIR;
        const traceOf = (which: string): string[] => (traceDir ? ['--trace', join(traceDir, `${name.replace(/\W+/g, '-')}-${which}.vhtrace`)] : []);
        const serveA = await startServe(['--net', 'tap:vitA', ...serveArgs, ...traceOf('A')], { prefix: ns.execPrefix() });
        processes.push(serveA);
        const serveB = await startServe(['--net', 'tap:vitB', ...serveArgs, ...traceOf('B')], { prefix: ns.execPrefix() });
        processes.push(serveB);
        ns.ip(['link', 'add', 'vbr0', 'type', 'bridge']);
        await enslave(ns, 'vitA');
        await enslave(ns, 'vitB');
        ns.ip(['addr', 'add', `${HOST_IP}/24`, 'dev', 'vbr0']);
        ns.ip(['link', 'set', 'vbr0', 'up']);
        const peer = variant.receive ? await startTcpPeer(ns, HOST_IP, SOURCE_PORT, MIB * 1024 * 1024) : await startTcpPeer(ns, HOST_IP, PORT);
        processes.push(peer);

        const qmpPath = join(dir, `qmp-${name.replace(/\W+/g, '-')}.sock`);
        const incoming = join(dir, `incoming-${name.replace(/\W+/g, '-')}.sock`);
        // Source and destination must describe the same machine: only the socket and -incoming differ.
        const machine: Omit<GuestOptions, 'socketPath'> = {
          mode: 'shell', iommu: variant.iommu, packed: variant.packed, memMiB: 256, timeoutMs: 280_000,
          // A destination guest once hung in a kworker (soft lockup) after migration under load:
          // panicking on it prints the stack (a panic shows every console message; the lockup
          // report alone is cut by `quiet`) and ends the test at once.
          extraKernelArgs: [...(variant.iommu ? [STRICT_IOMMU] : []), 'softlockup_panic=1'].join(' '),
        };
        const source = startGuest({ ...machine, socketPath: serveA.socket, extraQemuArgs: ['-qmp', `unix:${qmpPath},server=on,wait=off`] });
        guests.push(source);
        step('source started');
        const sh = new GuestShell(source);
        await sh.ready();
        await sh.ok(`ip addr add ${GUEST_CIDR} dev eth0 && ip link set eth0 up`);
        await sh.ok('i=0; while [ "$(cat /sys/class/net/eth0/carrier)" != 1 ]; do [ $i -gt 300 ] && exit 1; sleep 0.1; i=$((i+1)); done', 40_000);
        let sent: string | undefined;
        if (!variant.receive) {
          const out = await sh.ok(`dd if=/dev/urandom of=/tmp/d bs=1048576 count=${MIB} 2>/dev/null && sha256sum /tmp/d`);
          sent = out.map((l) => l.match(/^([0-9a-f]{64})\s/)?.[1]).find(Boolean);
          assert.ok(sent, `no sha256 from the guest:\n${out.join('\n')}`);
        } else {
          await sh.ok('mkfifo /tmp/hold');
        }

        step(`guest ready, sha ${sent}`);
        const dest = startGuest({ ...machine, socketPath: serveB.socket, extraQemuArgs: ['-incoming', `unix:${incoming}`] });
        guests.push(dest);
        await waitForPath(incoming, 30_000, 'destination QEMU listening for the migration');
        const qmp = await Qmp.open(qmpPath);
        try {
          // Unthrottled: a unix socket on one machine; the default 32 MiB/s would take most of a minute.
          await qmp.run('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 ** 3 });
          // Receiving, stdin is a fifo held open: busybox nc half-closes on stdin EOF (build-guest.sh tcp-recv).
          source.write(variant.receive ? `nc -w 20 ${HOST_IP} ${SOURCE_PORT} <> /tmp/hold > /tmp/r &\n` : `nc -w 20 ${HOST_IP} ${PORT} < /tmp/d &\n`);
          await waitMoved(serveA, variant.receive ? 'rx' : 'tx', 4 * 1024 * 1024);
          step('transfer under way: migrate');
          let logged = false;
          await qmp.run('migrate', { uri: `unix:${incoming}` });
          const end = Date.now() + 180_000;
          for (;;) {
            const s = await serveA.state().catch(() => null);
            if (s?.dirtyLog.logging && s.dirtyLog.pagesMarked > 0) logged = true;
            const status = (await qmp.run('query-migrate')).status as string;
            step(`migration ${status}, serve A logging ${s?.dirtyLog.logging} marks ${s?.dirtyLog.pagesMarked} outside ${s?.dirtyLog.outside}`);
            if (status === 'completed') break;
            assert.ok(status !== 'failed' && status !== 'cancelled', `migration ${status}:\n${serveA.log.lines.slice(-10).join('\n')}`);
            assert.ok(Date.now() < end, `migration still ${status} after 180 s`);
            await sleep(100);
          }
          assert.ok(logged, 'serve A logged dirty pages during the migration (inspect)');
        } finally {
          qmp.close();
        }
        // The source is paused for good; its serve goes with it, as an operator would stop them.
        await source.kill();
        step('source killed');
        await waitForRunning(serveB, dest);
        step('serve B runs the rings');
        // A stall is reported like a short stream: where serve B's rings and the guest stopped.
        const host = await peer.result(150_000).catch(async (err: Error) =>
          assert.fail(`${err.message}\n${await shortTransferReport(dest, serveB)}\nserve B's log:\n${serveB.log.lines.slice(-20).join('\n')}`));
        if (host.bytes !== MIB * 1024 * 1024) {
          assert.fail(`the host end ${variant.receive ? 'sent' : 'received'} ${host.bytes} of ${MIB * 1024 * 1024} bytes (${host.ms} ms)\n${await shortTransferReport(dest, serveB)}`);
        }
        // The guest lives on at the destination: its console answers there.
        const sh2 = new GuestShell(dest);
        if (variant.receive) {
          const out = await sh2.ok('wait; sha256sum /tmp/r; stat -c %s /tmp/r', 150_000).catch(async (err: Error) =>
            assert.fail(`${err.message}\n${(await serveReport(serveB)).join('\n')}\nserve B's log:\n${serveB.log.lines.slice(-20).join('\n')}`));
          const got = out.map((l) => l.match(/^([0-9a-f]{64})\s/)?.[1]).find(Boolean);
          assert.ok(out.includes(String(MIB * 1024 * 1024)), `bytes the guest received:\n${out.join('\n')}`);
          assert.equal(got, host.hex, 'sha256 of what the guest received vs what the host sent');
        } else {
          assert.equal(host.hex, sent, 'sha256 of what the sink received vs what the guest sent');
          await sh2.ok('cat /proc/uptime', 30_000);
        }
        const b = await serveB.state();
        assert.ok(total(b, variant.receive ? 'rx' : 'tx', 'bytes') > 0, 'the transfer went on through serve B');
        assert.equal(b.dirtyLog.logging, false, 'the destination does not log');
      } finally {
        await cleanup();
      }
    });
  }
});

/** serve B once the migrated guest's rings run there. */
async function waitForRunning(serve: ServeProcess, dest: Guest): Promise<void> {
  const end = Date.now() + 60_000;
  for (;;) {
    const s = await serve.state().catch(() => null);
    if (s?.connected && s.queues.length >= 2 && s.queues.every((q) => q.running)) return;
    assert.ok(Date.now() < end, `serve B never ran the migrated guest's rings: ${JSON.stringify(s)}\n` +
      `serve B's log:\n${serve.log.lines.slice(-20).join('\n')}\ndestination QEMU (console, stderr):\n${dest.lines.slice(-30).join('\n')}`);
    await sleep(100);
  }
}

/** Where serve B's rings stand, one line per ring, for failure messages. */
async function serveReport(serveB: ServeProcess): Promise<string[]> {
  const lines: string[] = [];
  const b = await serveB.state().catch((err: Error) => err.message);
  if (typeof b === 'string') lines.push(`serve B: ${b}`);
  else {
    for (const q of b.queues) {
      lines.push(`serve B queue ${q.index}: running ${q.running} waitingForMapping ${q.waitingForMapping} broken ${q.broken} `
        + `lastAvail ${q.lastAvailIdx} avail ${q.availIdx} used ${q.usedIdx} ${JSON.stringify(q.counters)}`
        + (q.iotlb ? ` iotlb ${JSON.stringify({ ...q.iotlb, entries: q.iotlb.entries.length })}` : ''));
    }
  }
  return lines;
}

/** What a transfer that ended short left behind, for the failure message: serve B's rings and the guest's view. */
async function shortTransferReport(dest: Guest, serveB: ServeProcess): Promise<string> {
  const lines = await serveReport(serveB);
  const guest = await new GuestShell(dest)
    .run('cat /proc/net/dev; grep -i tcp /proc/net/snmp; cat /sys/class/net/eth0/queues/tx-0/byte_queue_limits/inflight; grep -i virtio /proc/interrupts; dmesg | tail -n 15; ps', 30_000)
    .then((r) => r.output, (err: Error) => [`guest shell: ${err.message}`]);
  return [...lines, 'guest:', ...guest].join('\n');
}

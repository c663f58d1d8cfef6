// A real QEMU guest behind `serve --net tap:vit0`, the tap inside a network namespace, for
// tests (test/e2e/qemu*.test.ts) and live benchmarks (bench/miss-policy-qemu.ts).
//
//   const rig = await startRig(['--iotlb-strategy', 'coalescing'], { tcp: true });
//   await pingOk(rig, { iommu: true, packed: true });          // ping 5/5
//   await transferOk(rig, 8, { iommu: true });                 // 8 MiB tcp-send, sha256 equal both ends
//   await receiveOk(rig, { iommu: true });                     // with { source: 8 }: 8 MiB tcp-recv, sha256 equal
//   const s = await waitDisconnected(rig.serve);               // serve's state() once QEMU is gone
//   await rig.close();                                         // or closeAllRigs() in after()
//
// The host end is serve itself, run under `ip netns exec` so the tap is born inside the
// namespace; the namespace holds 192.0.2.1/24 on the tap and (with `tcp`) a Node TCP server
// that hashes what it receives; the guest is 192.0.2.2/24. Nothing leaves the namespace.
//
// IOMMU guests boot with iommu.strict=1 unless `lazy` (see docs/peers.md): in Linux's default lazy
// mode QEMU 7.2 turns the guest's deferred flushes into INVALIDATEs only for pages it saw mapped
// at an earlier flush, so a caching back-end needs `serve --iotlb-reuse per-burst`.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { startGuest, type Guest, type GuestOptions, type GuestResult } from '../peers/qemu.js';
import { sleep } from '../peers/util.js';
import type { GuestShell } from './guest-shell.js';
import { createNetns, netnsPids, startTcpPeer, type Netns, type TcpPeer } from './netns.js';
import { startServe, type ServeProcess } from './serve.js';
import type { DeviceState } from '../../src/control/state.js';

export const TAP = 'vit0';
export const HOST_IP = '192.0.2.1';
export const GUEST_CIDR = '192.0.2.2/24';
export const PORT = 5201;
/** Where the namespace's TCP source (startRig's `source`) serves guests running tcp-recv. */
export const SOURCE_PORT = 5202;
export const STRICT_IOMMU = 'iommu.strict=1';

const cleanups: Array<() => Promise<void>> = [];
/** Processes still inside a namespace after everything we started there was stopped. */
const leaks: string[] = [];

/** Registers something for closeAllRigs() to tear down (last registered, first closed). */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

/** Closes every rig (and registered cleanup) still open; returns the namespace leaks seen so far. */
export async function closeAllRigs(): Promise<string[]> {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  return [...leaks];
}

/** A test file's after(): closeAllRigs(), failing when a process was left in a test namespace. */
export async function closeAllRigsChecked(): Promise<void> {
  assert.deepEqual(await closeAllRigs(), [], 'processes left behind in test namespaces');
}

/** One namespace + serve (inside it, on a tap) + optional TCP peer; torn down by the caller or closeAllRigs(). */
export interface Rig {
  ns: Netns;
  serve: ServeProcess;
  tcp: TcpPeer | null;
  /** Sends its MiB to each guest that connects (tcp-recv), with `source`. */
  source: TcpPeer | null;
  guests: Guest[];
  /**
   * Starts serve again, with the same arguments on the same socket (after it died, e.g. by
   * SIGKILL: its stale sockets are left for it to replace), and configures its new tap.
   * `rig.serve` is the new process afterwards.
   */
  restartServe(): Promise<void>;
  close(): Promise<void>;
}

/**
 * opts.http: the source answers busybox wget (http-recv) instead of nc (tcp-recv); opts.bin:
 * serve from another checkout's bin/run.js (a bench's A/B of two builds).
 */
export async function startRig(serveArgs: string[], opts: { socket?: string; tcp?: boolean; source?: number; http?: boolean; bin?: string } = {}): Promise<Rig> {
  const ns = createNetns();
  const guests: Guest[] = [];
  let serve: ServeProcess | null = null;
  let tcp: TcpPeer | null = null;
  let source: TcpPeer | null = null;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const g of guests) await g.kill().catch(() => undefined);
    await tcp?.stop().catch(() => undefined);
    await source?.stop().catch(() => undefined);
    await serve?.stop().catch(() => undefined);
    const pids = netnsPids(ns.name);
    if (pids.length > 0) leaks.push(`${ns.name}: ${pids.join(' ')}`);
    ns.destroy();
  };
  cleanups.push(close);
  const launch = async (socket: string | undefined, dir: string | undefined): Promise<ServeProcess> => {
    const started = await startServe(['--net', `tap:${TAP}`, '--quiet', ...serveArgs], {
      prefix: ns.execPrefix(), ...(socket ? { socket } : {}), ...(dir ? { dir } : {}), ...(opts.bin ? { bin: opts.bin } : {}),
    });
    await ns.configure(TAP, `${HOST_IP}/24`);
    return started;
  };
  try {
    serve = await launch(opts.socket, undefined);
    if (opts.tcp) tcp = await startTcpPeer(ns, HOST_IP, PORT);
    if (opts.source) source = await startTcpPeer(ns, HOST_IP, SOURCE_PORT, opts.source * 1024 * 1024, opts.http ? 'http' : 'raw');
  } catch (err) {
    await close();
    throw err;
  }
  const rig: Rig = {
    ns, serve, tcp, source, guests, close,
    async restartServe() {
      const old = serve!;
      await old.stop().catch(() => undefined);
      // startServe waits for the control socket to appear: the dead one's must go first.
      rmSync(old.control, { force: true });
      serve = await launch(old.socket, old.dir);
      rig.serve = serve;
    },
  };
  return rig;
}

/** `lazy`: with an IOMMU, keep Linux's default lazy invalidation instead of iommu.strict=1. */
export type BootOptions = Omit<GuestOptions, 'socketPath'> & { socketPath?: string; lazy?: boolean };

/** Starts a guest on the rig's serve (guest and peer addresses filled in; iommu.strict=1 with an IOMMU unless lazy). */
export function boot(rig: Rig, bootOpts: BootOptions): Guest {
  const { lazy, ...opts } = bootOpts;
  const iommuArgs = opts.iommu && !lazy ? [STRICT_IOMMU] : [];
  const g = startGuest({
    socketPath: rig.serve.socket,
    timeoutMs: 120_000,
    ...opts,
    args: { ip: GUEST_CIDR, peer: HOST_IP, port: PORT, ...(opts.args ?? {}) },
    extraKernelArgs: [...iommuArgs, opts.extraKernelArgs ?? ''].join(' ').trim(),
  });
  rig.guests.push(g);
  return g;
}

export function tail(lines: string[], n = 40): string {
  return lines.slice(-n).map((l) => '  | ' + l).join('\n');
}

export function assertDone(r: GuestResult, what: string, serve: ServeProcess): void {
  assert.ok(r.done && !r.timedOut, `${what}: the guest did not finish (timedOut=${r.timedOut}):\n${tail(r.lines)}\nserve:\n${tail(serve.log.lines, 20)}`);
  assert.equal(r.error, undefined, `${what}: guest error ${r.error}`);
}

export async function pingOk(rig: Rig, opts: Partial<BootOptions> = {}, count = 5): Promise<GuestResult> {
  const g = boot(rig, { mode: 'ping', ...opts, args: { count, ...(opts.args ?? {}) } });
  const r = await g.result();
  assertDone(r, 'ping', rig.serve);
  assert.deepEqual(r.ping, { ok: true, received: count, sent: count }, `ping:\n${tail(r.lines)}`);
  return r;
}

export interface TransferResult extends GuestResult {
  /** What the namespace's TCP server received (ms: first byte to EOF, as it timed it). */
  host: { hex: string; bytes: number; ms?: number };
}

/** tcp-send: the guest sends `mib` MiB; the namespace's server must hash the same bytes. */
export async function transferOk(rig: Rig, mib: number, opts: Partial<BootOptions> = {}): Promise<TransferResult> {
  assert.ok(rig.tcp, 'rig without a TCP peer');
  const from = rig.tcp.log.lines.length;
  const g = boot(rig, { mode: 'tcp-send', ...opts, args: { mib, ...(opts.args ?? {}) } });
  const r = await g.result();
  assertDone(r, `tcp-send ${mib} MiB`, rig.serve);
  assert.ok(r.sha256, `guest printed no sha256:\n${tail(r.lines)}`);
  assert.equal(r.sha256.bytes, mib * 1024 * 1024);
  assert.deepEqual(r.tcp, { ok: true, rc: 0 }, `nc in the guest failed:\n${tail(r.lines)}`);
  const host = await rig.tcp.result(15_000, from);
  assert.equal(host.bytes, r.sha256.bytes, 'bytes the namespace received');
  assert.equal(host.hex, r.sha256.hex, 'sha256 of what the namespace received vs what the guest sent');
  return { ...r, host };
}

/** tcp-recv: the namespace's source sends its MiB; the guest must hash the same bytes. */
export async function receiveOk(rig: Rig, opts: Partial<BootOptions> = {}): Promise<TransferResult> {
  assert.ok(rig.source, 'rig without a TCP source');
  const from = rig.source.log.lines.length;
  const g = boot(rig, { mode: 'tcp-recv', ...opts, args: { port: SOURCE_PORT, ...(opts.args ?? {}) } });
  const r = await g.result();
  assertDone(r, 'tcp-recv', rig.serve);
  const host = await rig.source.result(15_000, from);
  assert.ok(r.sha256, `guest printed no sha256:\n${tail(r.lines)}`);
  assert.equal(r.sha256.bytes, host.bytes, `bytes the guest received (source sent ${host.bytes}):\n${tail(r.lines)}`);
  assert.equal(r.sha256.hex, host.hex, 'sha256 of what the guest received vs what the namespace sent');
  assert.deepEqual(r.tcp, { ok: true, rc: 0 }, `nc in the guest failed:\n${tail(r.lines)}`);
  return { ...r, host };
}

/**
 * Polls `state` while a guest runs and keeps the last snapshot taken while connected: queue
 * details (IOTLB statistics) exist only while the workers do, i.e. until the guest disconnects.
 * `accept` decides which snapshots count (default: connected with IOTLB state on some queue).
 */
export function sampleState(
  serve: ServeProcess,
  everyMs = 300,
  accept: (s: DeviceState) => boolean = (s) => s.connected && s.queues.some((q) => q.iotlb),
): { last(): DeviceState | null; stop(): Promise<DeviceState | null> } {
  let last: DeviceState | null = null;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const s = await serve.state();
        if (accept(s)) last = s;
      } catch {
        /* serve busy or gone: keep the previous sample */
      }
      await sleep(everyMs);
    }
  })();
  return {
    last: () => last,
    async stop() {
      running = false;
      await loop;
      return last;
    },
  };
}

export async function waitDisconnected(serve: ServeProcess, timeoutMs = 10_000): Promise<DeviceState> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await serve.state();
    if (!s.connected) return s;
    if (Date.now() > end) throw new Error('serve still reports a connection after QEMU exited');
    await sleep(50);
  }
}

/** In a guest booted with mode 'shell': the rig's address on eth0, up, carrier seen. */
export async function shellLinkUp(sh: GuestShell): Promise<void> {
  await sh.ok(`ip addr add ${GUEST_CIDR} dev eth0 && ip link set eth0 up`);
  await sh.ok('i=0; while [ "$(cat /sys/class/net/eth0/carrier)" != 1 ]; do [ $i -gt 300 ] && exit 1; sleep 0.1; i=$((i+1)); done', 40_000);
}

/** The sha256 digests in `sha256sum` output (the console also echoes the command, wrapped). */
export function digests(lines: string[]): string[] {
  return lines.map((l) => l.match(/^([0-9a-f]{64})\s/)?.[1]).filter((h): h is string => h !== undefined);
}

/** The digests of the first `count` connections the namespace's sink reports after line `from`. */
export async function sinkDigests(rig: Rig, from: number, count: number): Promise<string[]> {
  const end = Date.now() + 15_000;
  for (;;) {
    const lines = rig.tcp!.log.lines.slice(from).filter((l) => l.startsWith('SINK '));
    const failed = lines.find((l) => l.startsWith('SINK error'));
    assert.equal(failed, undefined, `the sink: ${failed}`);
    if (lines.length >= count) return lines.slice(0, count).map((l) => l.split(' ')[2]!);
    assert.ok(Date.now() < end, `the sink reported ${lines.length} of ${count} connections:\n${lines.join('\n')}`);
    await sleep(100);
  }
}

/** The shell guest sends `mib` MiB of fresh random bytes; the namespace's sink must hash the same. */
export async function shellSendChecked(rig: Rig, sh: GuestShell, mib: number): Promise<void> {
  assert.ok(rig.tcp, 'rig without a TCP peer');
  const out = await sh.ok(`dd if=/dev/urandom of=/tmp/d bs=1048576 count=${mib} 2>/dev/null && sha256sum /tmp/d`);
  // (the console echoes the typed line too, wrapped at its width: pick the digest itself)
  const sent = digests(out)[0];
  assert.ok(sent, `no sha256 from the guest:\n${out.join('\n')}`);
  const from = rig.tcp.log.lines.length;
  await sh.ok(`nc -w 10 ${HOST_IP} ${PORT} < /tmp/d`, 90_000);
  const bytes = mib * 1024 * 1024;
  // Earlier connections (one cut by a restart) may report too: take the one of this size.
  const end = Date.now() + 15_000;
  for (;;) {
    const line = rig.tcp.log.lines.slice(from).find((l) => l.startsWith('SINK sha256 ') && l.includes(` bytes ${bytes} `));
    if (line) {
      assert.equal(line.split(' ')[2], sent, 'sha256 of what the namespace received vs what the guest sent');
      return;
    }
    assert.ok(Date.now() < end, `the sink reported no ${mib} MiB connection:\n${rig.tcp.log.lines.slice(from).join('\n')}`);
    await sleep(100);
  }
}

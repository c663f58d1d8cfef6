import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BackendRequest, FrontendRequest, IotlbType, MessageFramer, decodeHeader, decodeMessage, encodeMessage, type Frame,
} from '../../src/protocol/index.js';
import {
  FdWatcher, acceptUnix, closeFd, connectUnix, listenUnix, mapFd, memfdCreate, openFdCount, receiveMessage, sendMessage,
  socketPair, unmap,
} from '../../src/sys/index.js';
import { RecordingProxy } from '../../src/trace/proxy.js';
import { waitFor } from '../support/hostile-frontend.js';
import { parseTrace } from '../../src/trace/reader.js';
import { TraceWriter } from '../../src/trace/writer.js';
import type { MessageRecord } from '../../src/trace/records.js';

const dir = mkdtempSync(join(tmpdir(), 'vhproxy-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** One end of a vhost-user socket in a fake peer: frames what arrives, sends whole messages. */
class Peer {
  readonly received: Frame[] = [];
  /** fds that came with each received message (before any handler took them over). */
  readonly fdCounts: number[] = [];
  eof = false;
  closed = false;
  private watcher: FdWatcher | null = null;
  private readonly framer = new MessageFramer();
  private readonly buf = new Uint8Array(65536);
  onFrame: ((frame: Frame) => void) | undefined;

  constructor(readonly fd: number, readonly name: string) {
    this.resume();
  }

  pause(): void {
    this.watcher?.stop();
    this.watcher = null;
  }

  resume(): void {
    if (!this.watcher && !this.eof && !this.closed) this.watcher = new FdWatcher(this.fd, () => this.read());
  }

  private read(): void {
    for (;;) {
      let got;
      try {
        got = receiveMessage(this.fd, this.buf);
      } catch {
        got = { bytes: 0, fds: [] }; // ECONNRESET: the proxy closed with our data unread
      }
      if (got === null) return;
      if (got.bytes === 0) {
        this.eof = true;
        this.pause();
        return;
      }
      this.framer.push(this.buf.subarray(0, got.bytes), got.fds);
      for (let f = this.framer.next(); f; f = this.framer.next()) {
        this.received.push(f);
        this.fdCounts.push(f.fds.length);
        this.onFrame?.(f);
      }
    }
  }

  /** Sends one message whole, waiting (not spinning) while the socket is full. */
  async send(bytes: Uint8Array, fds: number[] = []): Promise<void> {
    let off = 0;
    let pass = fds;
    while (off < bytes.length) {
      const n = sendMessage(this.fd, bytes.subarray(off), pass);
      if (n < 0) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      off += n;
      pass = [];
    }
  }

  sendNow(bytes: Uint8Array, fds: number[] = []): void {
    assert.equal(sendMessage(this.fd, bytes, fds), bytes.length);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pause();
    for (const f of this.received) for (const fd of f.fds) closeFd(fd);
    for (const fd of this.framer.takeFds()) closeFd(fd);
    closeFd(this.fd);
  }
}

const FEATURES = (1n << 32n) | (1n << 33n) | (1n << 30n);

/** A tiny back-end: answers GET_FEATURES, maps memory tables, sends a MISS on the back-end channel. */
class FakeBackend {
  readonly listenFd: number;
  readonly conns: Peer[] = [];
  readonly channels: Peer[] = [];
  private readonly watcher: FdWatcher;
  readonly sent: Uint8Array[] = [];
  readonly channelSent: Uint8Array[] = [];
  autoReply = true;

  constructor(readonly path: string) {
    this.listenFd = listenUnix(path);
    this.watcher = new FdWatcher(this.listenFd, () => {
      for (let fd = acceptUnix(this.listenFd); fd >= 0; fd = acceptUnix(this.listenFd)) this.accept(fd);
    });
  }

  private accept(fd: number): void {
    const peer = new Peer(fd, 'backend');
    this.conns.push(peer);
    peer.onFrame = (f) => {
      if (!this.autoReply) return;
      const m = decodeMessage('frontend', f.bytes, f.fds);
      const reply = (bytes: Uint8Array): void => {
        this.sent.push(bytes);
        peer.sendNow(bytes);
      };
      if (m.request === FrontendRequest.GET_FEATURES) {
        reply(encodeMessage({ channel: 'frontend', request: m.request, isReply: true, body: { kind: 'u64', value: FEATURES } }));
      } else if (m.request === FrontendRequest.SET_MEM_TABLE) {
        const mem = new Uint8Array(mapFd(f.fds[0]!, 0, 4096, true));
        const seen = Buffer.from(mem.subarray(0, 5)).toString();
        mem.set(Buffer.from(`world:${seen}`), 100);
        unmap(mem.buffer as ArrayBuffer);
        if (m.needsReply) reply(encodeMessage({ channel: 'frontend', request: m.request, isReply: true, body: { kind: 'u64', value: 0n } }));
      } else if (m.request === FrontendRequest.SET_BACKEND_REQ_FD) {
        const chan = new Peer(f.fds[0]!, 'backend-channel');
        f.fds.length = 0; // the Peer owns it now
        this.channels.push(chan);
        const miss = encodeMessage({ channel: 'backend', request: BackendRequest.IOTLB_MSG, needsReply: true,
          body: { kind: 'iotlb', iova: 0xfffff000n, size: 0n, userAddr: 0n, perm: 3, iotlbType: IotlbType.MISS } });
        this.channelSent.push(miss);
        chan.sendNow(miss);
      }
    };
  }

  close(): void {
    this.watcher.stop();
    for (const p of [...this.conns, ...this.channels]) p.close();
    closeFd(this.listenFd);
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

function summary(records: MessageRecord[]): string[] {
  return records.map((r) => {
    const m = decodeMessage(r.channel, r.bytes, r.fds.map((_, i) => 100 + i));
    return `${r.channel} ${r.direction} ${m.name}${m.isReply ? ' reply' : ''}${r.fds.length ? ` [${r.fds.map((f) => `${f.kind}:${f.size}`).join(',')}]` : ''}`;
  });
}

test('relays exact bytes and fds both ways, splices the back-end channel, records everything, leaks nothing', async () => {
  const listen = join(dir, 'proxy.sock');
  const back = new FakeBackend(join(dir, 'backend.sock'));
  const writer = TraceWriter.inMemory();
  const logs: string[] = [];
  const proxy = new RecordingProxy({ listen, connect: back.path, writer, log: (l) => logs.push(l) });
  proxy.start();
  const closes: string[] = [];
  proxy.on('close', (_id, reason) => closes.push(reason));
  await proxy.flush(); // the relay thread is up (its own fds are open)
  const baseline = openFdCount();

  const front = new Peer(connectUnix(listen), 'frontend');
  const frontSent: Uint8Array[] = [];
  const fsend = async (bytes: Uint8Array, fds: number[] = []): Promise<void> => {
    frontSent.push(bytes);
    await front.send(bytes, fds);
  };

  // GET_FEATURES (always answered).
  await fsend(encodeMessage({ channel: 'frontend', request: FrontendRequest.GET_FEATURES, needsReply: false, body: { kind: 'none' } }));
  await waitFor('features reply', () => front.received.length === 1);
  assert.equal(decodeMessage('frontend', front.received[0]!.bytes).body.kind, 'u64');

  // SET_MEM_TABLE with a memfd: the back-end sees the same memory.
  const memfd = memfdCreate('guest-ram', 4096);
  const guest = new Uint8Array(mapFd(memfd, 0, 4096, true));
  guest.set(Buffer.from('hello'), 0);
  await fsend(encodeMessage({ channel: 'frontend', request: FrontendRequest.SET_MEM_TABLE, needsReply: true, body: { kind: 'memTable',
    regions: [{ guestAddr: 0n, size: 4096n, userAddr: 0x7f0000000000n, mmapOffset: 0n }] } }), [memfd]);
  await waitFor('mem table ack', () => front.received.length === 2);
  assert.equal(Buffer.from(guest.subarray(100, 111)).toString(), 'world:hello', 'memfd contents are shared through the proxy');
  unmap(guest.buffer as ArrayBuffer);
  closeFd(memfd);

  // SET_BACKEND_REQ_FD: the back-end's MISS arrives on our end of the pair; we answer on it.
  const [mine, theirs] = socketPair();
  await fsend(encodeMessage({ channel: 'frontend', request: FrontendRequest.SET_BACKEND_REQ_FD, body: { kind: 'none' } }), [theirs]);
  closeFd(theirs);
  const chan = new Peer(mine, 'frontend-channel');
  await waitFor('MISS on the back-end channel', () => chan.received.length === 1);
  assert.deepEqual(chan.received[0]!.bytes, back.channelSent[0]);
  const ack = encodeMessage({ channel: 'backend', request: BackendRequest.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n } });
  await chan.send(ack);
  await waitFor('ack on the back-end side of the channel', () => back.channels[0]?.received.length === 1);
  assert.deepEqual(back.channels[0]!.received[0]!.bytes, ack);

  // An UPDATE on the main channel.
  await fsend(encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, body: { kind: 'iotlb',
    iova: 0xfffff000n, size: 4096n, userAddr: 0x7f0000000000n, perm: 3, iotlbType: IotlbType.UPDATE } }));
  await waitFor('update at the back-end', () => back.conns[0]!.received.length === 4);

  // Exact bytes both ways on the main channel.
  assert.deepEqual(concat(back.conns[0]!.received.map((f) => f.bytes)), concat(frontSent));
  assert.deepEqual(concat(front.received.map((f) => f.bytes)), concat(back.sent));
  assert.deepEqual(back.conns[0]!.fdCounts, [0, 1, 1, 0]);

  // The trace holds the same sequence, with fd kinds.
  await proxy.flush();
  const records = [...parseTrace(writer.bytes())] as MessageRecord[];
  assert.deepEqual(summary(records), [
    'frontend to-backend GET_FEATURES',
    'frontend to-frontend GET_FEATURES reply',
    'frontend to-backend SET_MEM_TABLE [memfd:4096]',
    'frontend to-frontend SET_MEM_TABLE reply',
    'frontend to-backend SET_BACKEND_REQ_FD [socket:0]',
    'backend to-frontend IOTLB_MSG',
    'backend to-backend IOTLB_MSG reply',
    'frontend to-backend IOTLB_MSG',
  ]);
  assert.deepEqual(records[5]!.bytes, back.channelSent[0]);
  assert.ok(records.every((r) => r.connection === 0));
  assert.ok(records.every((r, i) => i === 0 || r.timeNs >= records[i - 1]!.timeNs));

  // Disconnect the front-end: the proxy closes the back-end side and the channel, no fds leak.
  front.close();
  chan.close();
  await waitFor('proxy closes the connection', () => closes.length === 1);
  await waitFor('back-end sees EOF', () => back.conns[0]!.eof && back.channels[0]!.eof);
  back.conns[0]!.close();
  back.channels[0]!.close();
  for (const f of front.received) assert.equal(f.fds.length, 0);
  assert.equal(openFdCount(), baseline, 'fd count back to baseline');
  assert.equal(proxy.connections.size, 0);
  assert.match(closes[0]!, /front-end disconnected/);

  await proxy.close();
  back.close();
  writer.close();
});

/** A started proxy in front of a fake back-end, recording into memory; `closes` collects close reasons. */
async function startRig(name: string, opts: { autoReply?: boolean; stallTimeoutMs?: number } = {}) {
  const listen = join(dir, `proxy-${name}.sock`);
  const back = new FakeBackend(join(dir, `backend-${name}.sock`));
  back.autoReply = opts.autoReply ?? true;
  const writer = TraceWriter.inMemory();
  const proxy = new RecordingProxy({ listen, connect: back.path, writer, ...(opts.stallTimeoutMs ? { stallTimeoutMs: opts.stallTimeoutMs } : {}) });
  proxy.start();
  const closes: string[] = [];
  proxy.on('close', (_id, reason) => closes.push(reason));
  await proxy.flush(); // the relay thread is up (its own fds are open)
  return { listen, back, writer, proxy, closes };
}

test('garbage from a peer closes that connection; the proxy keeps accepting', async () => {
  const { listen, back, writer, proxy, closes } = await startRig('garbage');
  const baseline = openFdCount();

  const bad = new Peer(connectUnix(listen), 'bad');
  const header = new Uint8Array(12);
  new DataView(header.buffer).setUint32(0, 1, true);
  new DataView(header.buffer).setUint32(4, 1, true);
  new DataView(header.buffer).setUint32(8, 0x100000, true); // 1 MiB payload: refused
  // An fd sent with the garbage must not leak in the proxy.
  const [x, y] = socketPair();
  bad.sendNow(header, [y]);
  closeFd(y);
  await waitFor('garbage close', () => closes.length === 1);
  assert.match(closes[0]!, /garbage from front-end/);
  await waitFor('front-end sees EOF', () => bad.eof);
  await waitFor('back-end sees EOF', () => back.conns[0]?.eof === true);
  bad.close();
  closeFd(x);
  back.conns[0]!.close();
  assert.equal(openFdCount(), baseline);

  // The back-end sending garbage closes too.
  const good = new Peer(connectUnix(listen), 'good');
  await good.send(encodeMessage({ channel: 'frontend', request: FrontendRequest.GET_FEATURES, body: { kind: 'none' } }));
  await waitFor('reply on the new connection', () => good.received.length === 1);
  back.conns[1]!.sendNow(header);
  await waitFor('second close', () => closes.length === 2);
  assert.match(closes[1]!, /garbage from back-end/);
  await waitFor('front-end EOF', () => good.eof);
  good.close();
  back.conns[1]!.close();
  assert.equal(openFdCount(), baseline);
  // Only the good connection's two messages were recorded (garbage never is).
  const recorded = [...parseTrace(writer.bytes())] as MessageRecord[];
  assert.deepEqual(recorded.map((r) => [r.connection, decodeHeader(r.bytes).request]),
    [[1, FrontendRequest.GET_FEATURES], [1, FrontendRequest.GET_FEATURES]]);

  // No back-end listening: the front-end is refused, nothing leaks.
  back.close();
  const before = openFdCount();
  const lonely = new Peer(connectUnix(listen), 'lonely');
  await waitFor('refused front-end sees EOF', () => lonely.eof);
  lonely.close();
  assert.equal(openFdCount(), before);
  await proxy.close();
  writer.close();
});

test('a back-end that stops reading: queued with backpressure, delivered in order, no busy loop', async () => {
  const { listen, back, writer, proxy } = await startRig('backlog', { autoReply: false });
  const front = new Peer(connectUnix(listen), 'frontend');
  await waitFor('back-end accepted', () => back.conns.length === 1);
  back.conns[0]!.pause();
  const n = 20_000; // 20000 * 44 bytes = 880 KB: far more than the socket buffers
  const sent: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    sent.push(encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, body: { kind: 'iotlb',
      iova: BigInt(i) * 4096n, size: 4096n, userAddr: 0x7f0000000000n + BigInt(i) * 4096n, perm: 3, iotlbType: IotlbType.UPDATE } }));
  }
  const sending = (async () => { for (const m of sent) await front.send(m); })();
  await new Promise((r) => setTimeout(r, 300));
  const cpuBefore = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 300));
  const cpu = process.cpuUsage(cpuBefore);
  assert.ok(cpu.user + cpu.system < 200_000, `stalled proxy should be nearly idle (used ${(cpu.user + cpu.system) / 1000} ms CPU in 300 ms)`);
  assert.ok(back.conns[0]!.received.length < n);
  back.conns[0]!.resume();
  await sending;
  await waitFor('all delivered', () => back.conns[0]!.received.length === n, 20_000);
  assert.deepEqual(concat(back.conns[0]!.received.map((f) => f.bytes)), concat(sent));
  await proxy.flush();
  assert.equal(proxy.recorded, n);
  front.close();
  await waitFor('closed', () => proxy.connections.size === 0);
  await proxy.close();
  back.close();
  writer.close();
});

test('a peer that accepts nothing for the stall timeout is disconnected', async () => {
  const { listen, back, writer, proxy, closes } = await startRig('stall', { autoReply: false, stallTimeoutMs: 200 });
  const front = new Peer(connectUnix(listen), 'frontend');
  await waitFor('back-end accepted', () => back.conns.length === 1);
  back.conns[0]!.pause();
  const msg = encodeMessage({ channel: 'frontend', request: FrontendRequest.SET_OWNER, body: { kind: 'none' } });
  let stop = false;
  const pump = (async () => {
    for (let i = 0; i < 200_000 && !stop && !front.eof; i++) {
      if (sendMessage(front.fd, msg) < 0) await new Promise((r) => setTimeout(r, 5));
    }
  })().catch(() => {});
  await waitFor('stall close', () => closes.length === 1, 5000);
  stop = true;
  await pump;
  assert.match(closes[0]!, /accepted nothing for 200 ms/);
  front.close();
  await proxy.close();
  back.close();
  writer.close();
});

test('CLI: trace record relays, and SIGTERM flushes and closes the trace', async () => {
  const { spawn } = await import('node:child_process');
  const { existsSync } = await import('node:fs');
  const { readTrace } = await import('../../src/trace/reader.js');
  const { fileURLToPath } = await import('node:url');
  const listen = join(dir, 'cli-proxy.sock');
  const out = join(dir, 'cli.vhtrace');
  const back = new FakeBackend(join(dir, 'cli-backend.sock'));
  const bin = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
  const child = spawn(process.execPath, [bin, 'trace', 'record', '--listen', listen, '--connect', back.path, '-o', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitFor('proxy listening', () => /listening on/.test(stderr), 10_000);
    assert.ok(existsSync(listen));
    const front = new Peer(connectUnix(listen), 'frontend');
    await front.send(encodeMessage({ channel: 'frontend', request: FrontendRequest.GET_FEATURES, body: { kind: 'none' } }));
    await waitFor('reply through the CLI proxy', () => front.received.length === 1);
    front.close();
    await waitFor('connection closed', () => /closed after 2 messages/.test(stderr));
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /SIGTERM: closing/);
  assert.match(stderr, /2 messages written/);
  const records = [];
  for await (const r of readTrace(out)) records.push(r as MessageRecord);
  assert.deepEqual(summary(records), ['frontend to-backend GET_FEATURES', 'frontend to-frontend GET_FEATURES reply']);
  for (const c of back.conns) c.close();
  back.close();
});

test('merged reads: fds are recorded and forwarded with the message that carried them (the last of the read)', async () => {
  const { eventfdCreate } = await import('../../src/sys/index.js');
  const { listen, back, writer, proxy } = await startRig('merge', { autoReply: false });
  const front = new Peer(connectUnix(listen), 'frontend');
  await waitFor('back-end accepted', () => back.conns.length === 1);
  const vringState = (request: number, index: number, num: number): Uint8Array =>
    encodeMessage({ channel: 'frontend', request, body: { kind: 'vringState', index, num } });
  const call = (index: number): Uint8Array =>
    encodeMessage({ channel: 'frontend', request: FrontendRequest.SET_VRING_CALL, body: { kind: 'u64', value: BigInt(index) } });
  // Back to back, faster than the relay thread wakes: the kernel usually merges fd-less sends
  // with the next one that carries an fd into a single recvmsg, as QEMU's back-to-back
  // SET_VRING_NUM / SET_VRING_BASE / SET_VRING_CALL do (the framer's own test makes sure of it).
  const efds = [eventfdCreate(), eventfdCreate()];
  const sent = [vringState(FrontendRequest.SET_VRING_NUM, 0, 256), vringState(FrontendRequest.SET_VRING_BASE, 0, 0), call(0),
    vringState(FrontendRequest.SET_VRING_NUM, 1, 256), call(1)];
  front.sendNow(sent[0]!);
  front.sendNow(sent[1]!);
  front.sendNow(sent[2]!, [efds[0]!]);
  front.sendNow(sent[3]!);
  front.sendNow(sent[4]!, [efds[1]!]);
  for (const fd of efds) closeFd(fd);
  await waitFor('all relayed', () => back.conns[0]!.received.length === sent.length);
  assert.deepEqual(back.conns[0]!.fdCounts, [0, 0, 1, 0, 1], 'the back-end gets each fd with its own message');
  assert.deepEqual(concat(back.conns[0]!.received.map((f) => f.bytes)), concat(sent));
  await proxy.flush();
  const recorded = [...parseTrace(writer.bytes())] as MessageRecord[];
  assert.deepEqual(summary(recorded), [
    'frontend to-backend SET_VRING_NUM', 'frontend to-backend SET_VRING_BASE', 'frontend to-backend SET_VRING_CALL [eventfd:0]',
    'frontend to-backend SET_VRING_NUM', 'frontend to-backend SET_VRING_CALL [eventfd:0]',
  ]);
  front.close();
  await waitFor('closed', () => proxy.connections.size === 0);
  await proxy.close();
  back.close();
  writer.close();
});

test('a backlog that starts after a long idle time is not mistaken for a stall', { timeout: 20_000 }, async () => {
  const stall = 200;
  const { listen, back, writer, proxy, closes } = await startRig('idle', { autoReply: false, stallTimeoutMs: stall });
  const front = new Peer(connectUnix(listen), 'frontend');
  await waitFor('back-end accepted', () => back.conns.length === 1);
  const msg = (i: number): Uint8Array => encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, body: { kind: 'iotlb',
    iova: BigInt(i) * 4096n, size: 4096n, userAddr: 0x7f0000000000n + BigInt(i) * 4096n, perm: 3, iotlbType: IotlbType.UPDATE } });
  // How many such messages an unread unix stream socket takes before EAGAIN (small sends all
  // succeed until the sender's buffer is over its limit, so the last one fills it exactly).
  const [a, b] = socketPair();
  let capacity = 0;
  while (sendMessage(a, msg(0)) > 0) capacity++;
  closeFd(a);
  closeFd(b);

  try {
    back.conns[0]!.pause();
    for (let i = 0; i < capacity; i++) await front.send(msg(i));
    // Every message forwarded fills the back-end's socket exactly (capacity was measured so).
    await waitFor('all forwarded', async () => (await proxy.flush(), proxy.recorded === capacity));
    await new Promise((r) => setTimeout(r, 2 * stall)); // idle for longer than the stall timeout
    // One more: the proxy's first send since the idle time hits EAGAIN and starts a backlog.
    await front.send(msg(capacity));
    await waitFor('backlog', async () => (await proxy.flush(), proxy.recorded === capacity + 1 || closes.length > 0));
    await new Promise((r) => setTimeout(r, stall / 4)); // the back-end is slow for a moment, well under the stall timeout
    assert.deepEqual(closes, [], 'the connection survives a short backlog');
    back.conns[0]!.resume();
    await waitFor('all delivered', () => back.conns[0]!.received.length === capacity + 1 || closes.length > 0, 10_000);
    assert.deepEqual(closes, []);
    assert.equal(back.conns[0]!.received.length, capacity + 1);
  } finally {
    front.close();
    await waitFor('closed', () => proxy.connections.size === 0).catch(() => undefined);
    await proxy.close();
    back.close();
    writer.close();
  }
});

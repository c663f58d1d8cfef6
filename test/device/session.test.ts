/**
 * The session (src/device/session.ts) over a real socket pair, with a device that has no
 * queue pairs: requests are answered in order, plain IOTLB requests take the session's
 * direct path (applied and acked with no handler or promise), and whatever that path does
 * not take reaches the handler table and is refused or applied exactly as before.
 */
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetDevice } from '../../src/device/device.js';
import { Session } from '../../src/device/session.js';
import {
  decodeMessage, encodeMessage, FrontendRequest, IotlbType, MessageFramer, VirtioFeature, type VhostMessage,
} from '../../src/protocol/index.js';
import { closeFd, eventfdCreate, receiveMessage, sendMessage, socketPair } from '../../src/sys/index.js';
import type { SocketReturn } from '../../src/datapath/iotlb-fast-path.js';

interface Rig {
  frontend: number;
  device: NetDevice;
  session: Session;
  logs: string[];
}

const sessions: Session[] = [];
const open: number[] = [];
afterEach(async () => {
  for (const s of sessions.splice(0)) {
    s.close('test over');
    await s.done;
  }
  for (const fd of open.splice(0)) closeFd(fd);
});

function rig(): Rig {
  const [frontend, backend] = socketPair();
  open.push(frontend);
  const logs: string[] = [];
  const device = new NetDevice({
    queuePairs: 1, net: { kind: 'sink' } as never, strategy: 'coalescing', batchMisses: false, prefetch: 0,
    traceTranslations: false, log: (level, text) => logs.push(`${level} ${text}`),
  });
  const session = new Session(backend, device, {
    connection: 1, trace: null, log: (level, text) => logs.push(`${level} ${text}`), onClosed: () => undefined,
  });
  sessions.push(session);
  return { frontend, device, session, logs };
}

function request(request: number, body: Parameters<typeof encodeMessage>[0]['body'], needsReply = false): Uint8Array {
  return encodeMessage({ channel: 'frontend', request, needsReply, body });
}

function iotlb(iotlbType: number, iova: bigint, size: bigint, userAddr = 0n, perm = 3): Uint8Array {
  return request(FrontendRequest.IOTLB_MSG, { kind: 'iotlb', iotlbType, iova, size, userAddr, perm }, true);
}

/** Reads replies until `count` have arrived (the session answers from the event loop). */
async function replies(fd: number, count: number): Promise<VhostMessage[]> {
  const framer = new MessageFramer();
  const buf = new Uint8Array(4096);
  const got: VhostMessage[] = [];
  const deadline = Date.now() + 5000;
  while (got.length < count) {
    if (Date.now() > deadline) throw new Error(`only ${got.length} of ${count} replies arrived`);
    const r = receiveMessage(fd, buf);
    if (r === null) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      continue;
    }
    framer.push(buf.subarray(0, r.bytes), r.fds);
    for (let f = framer.next(); f !== null; f = framer.next()) got.push(decodeMessage('frontend', f.bytes, f.fds));
  }
  return got;
}

function ackValue(msg: VhostMessage): bigint {
  assert.equal(msg.isReply, true);
  assert.equal(msg.body.kind, 'u64');
  return (msg.body as { value: bigint }).value;
}

/** The device's view of the IOTLB, as `iova+size->uaddr perm` strings. */
function shadow(device: NetDevice): string[] {
  return device.iotlbShadow.entries().map((e) => `${e.iova.toString(16)}+${e.size.toString(16)}->${e.uaddr.toString(16)} ${e.perm}`);
}

function negotiate(r: Rig, iommu: boolean): void {
  const features = (1n << BigInt(VirtioFeature.VERSION_1)) | (iommu ? 1n << BigInt(VirtioFeature.ACCESS_PLATFORM) : 0n);
  sendMessage(r.frontend, request(FrontendRequest.SET_FEATURES, { kind: 'u64', value: features }));
}

describe('session', () => {
  it('applies and acks plain IOTLB UPDATE and INVALIDATE in order, recording each ack', async () => {
    const r = rig();
    negotiate(r, true);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x10000n, 0x2000n, 0x7f0000000000n, 3));
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x40000n, 0x1000n, 0x7f0000100000n, 1));
    let acks = await replies(r.frontend, 2);
    assert.deepEqual(acks.map(ackValue), [0n, 0n]);
    assert.deepEqual(shadow(r.device), ['10000+2000->7f0000000000 3', '40000+1000->7f0000100000 1']);

    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x10000n, 0x2000n));
    acks = await replies(r.frontend, 1);
    assert.deepEqual(acks.map(ackValue), [0n]);
    assert.deepEqual(shadow(r.device), ['40000+1000->7f0000100000 1']);
    assert.equal(r.device.ackLatency(false).all.count, 2);
    assert.equal(r.device.ackLatency(true).all.count, 1);
    assert.deepEqual(r.logs.filter((l) => l.includes('refused')), []);
  });

  it('sends the handler\'s refusal for IOTLB requests the direct path leaves to it', async () => {
    const r = rig();
    negotiate(r, true);
    // perm NONE, size 0, and a wrapping UPDATE are not plain: the handler refuses each (ack 1).
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x10000n, 0x1000n, 0x7f0000000000n, 0));
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x10000n, 0n, 0x7f0000000000n, 3));
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, (1n << 64n) - 0x1000n, 0x2000n, 0x7f0000000000n, 3));
    // A whole-space INVALIDATE is not plain either: the handler clamps and applies it (ack 0).
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x20000n, 0x1000n, 0x7f0000000000n, 3));
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0n, (1n << 64n) - 1n));
    const acks = await replies(r.frontend, 5);
    assert.deepEqual(acks.map(ackValue), [1n, 1n, 1n, 0n, 0n]);
    assert.deepEqual(shadow(r.device), [], 'the clamped whole-space INVALIDATE dropped the entry');
    assert.equal(r.logs.filter((l) => l.includes('IOTLB_MSG refused')).length, 3);
  });

  it('refuses IOTLB requests while ACCESS_PLATFORM is not negotiated, and keeps the connection', async () => {
    const r = rig();
    negotiate(r, false);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x10000n, 0x1000n, 0x7f0000000000n, 3));
    assert.deepEqual((await replies(r.frontend, 1)).map(ackValue), [1n]);
    assert.deepEqual(shadow(r.device), []);
    assert.ok(r.logs.some((l) => l.includes('ACCESS_PLATFORM is not negotiated')), r.logs.join('\n'));
    sendMessage(r.frontend, request(FrontendRequest.GET_FEATURES, { kind: 'none' }));
    const [features] = await replies(r.frontend, 1);
    assert.equal(features.request, FrontendRequest.GET_FEATURES);
  });

  it('answers an IOTLB request without NEED_REPLY with nothing, and the next request still gets its reply', async () => {
    const r = rig();
    negotiate(r, true);
    sendMessage(r.frontend, request(FrontendRequest.IOTLB_MSG, { kind: 'iotlb', iotlbType: IotlbType.UPDATE, iova: 0x10000n, size: 0x1000n, userAddr: 0x7f0000000000n, perm: 3 }, false));
    sendMessage(r.frontend, request(FrontendRequest.GET_FEATURES, { kind: 'none' }));
    const [first] = await replies(r.frontend, 1);
    assert.equal(first.request, FrontendRequest.GET_FEATURES);
    assert.deepEqual(shadow(r.device), ['10000+1000->7f0000000000 3']);
  });

  it('frames what a fast path read ahead before reading on, and ends the connection (closing its fds) when that breaks the stream', async () => {
    const r = rig();
    const efd = eventfdCreate(0);
    const getFeatures = request(FrontendRequest.GET_FEATURES, { kind: 'none' });
    // A header announcing 4 GiB of payload: the framer refuses it at once.
    const hostile = getFeatures.slice(0, 12);
    new DataView(hostile.buffer).setUint32(8, 0xffff_ffff, true);
    // Stand-in for a reader thread: the first lend comes back with a whole request it did
    // not take, the second with the hostile header and an fd.
    const backs: SocketReturn[] = [
      { reason: 'not a plain IOTLB request', fatal: false, readAhead: { bytes: getFeatures, fds: [] } },
      { reason: 'a message with fds', fatal: false, readAhead: { bytes: hostile, fds: [efd] } },
    ];
    Object.defineProperty(r.device, 'socketLendable', { get: () => backs.length > 0 });
    r.device.lendSocket = () => Promise.resolve(backs.shift()!);
    sendMessage(r.frontend, getFeatures);
    const answers = await replies(r.frontend, 2);
    assert.deepEqual(answers.map((m) => m.request), [FrontendRequest.GET_FEATURES, FrontendRequest.GET_FEATURES], 'the read-ahead request was answered');
    await r.session.done;
    assert.ok(r.logs.some((l) => l.includes('unreadable stream')), r.logs.join('\n'));
    assert.throws(() => closeFd(efd), /EBADF/, 'the session closed the fd that came with the read-ahead');
  });
});

/**
 * The worker's read of a lent front-end socket (src/datapath/iotlb-fast-path.ts), over a real
 * socket pair: plain IOTLB requests are applied, reported back and acked; everything else
 * reaches the session byte for byte and fd for fd: what the fast path read as its read-ahead,
 * the rest still queued.
 */
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createIotlbRing, IotlbRingConsumer, IotlbRingProducer } from '../../src/datapath/iotlb-ring.js';
import { IotlbFastPath } from '../../src/datapath/iotlb-fast-path.js';
import { decodeMessage, encodeMessage, FrontendRequest, IotlbType, MessageFramer } from '../../src/protocol/index.js';
import { closeFd, eventfdCreate, receiveMessage, sendMessage, socketPair } from '../../src/sys/index.js';
import { LatencyHistogram } from '../../src/stats/latency.js';
import { RecordingSink } from '../support/recording-sink.js';

function iotlb(iotlbType: number, iova: bigint, size: bigint, userAddr = 0n, perm = 3, needsReply = true): Uint8Array {
  return encodeMessage({
    channel: 'frontend', request: FrontendRequest.IOTLB_MSG, needsReply,
    body: { kind: 'iotlb', iotlbType, iova, size, userAddr, perm },
  });
}

interface Rig {
  frontend: number;
  backend: number;
  fast: IotlbFastPath;
  sink: RecordingSink;
  applied: IotlbRingConsumer;
  reported: RecordingSink;
  acks: { update: LatencyHistogram; invalidate: LatencyHistogram };
}

const open: number[] = [];
afterEach(() => {
  for (const fd of open.splice(0)) closeFd(fd);
});

function rig(): Rig {
  const [frontend, backend] = socketPair();
  open.push(frontend, backend);
  const ring = createIotlbRing();
  const sink = new RecordingSink();
  const acks = { update: new LatencyHistogram(), invalidate: new LatencyHistogram() };
  const fast = new IotlbFastPath(sink, new IotlbRingProducer(ring), acks.update, acks.invalidate);
  fast.fd = backend;
  return { frontend, backend, fast, sink, applied: new IotlbRingConsumer(ring), reported: new RecordingSink(), acks };
}

/**
 * What the session gets once the socket is back, framed as it frames it: the fast path's
 * read-ahead first, then everything the back-end can read now.
 */
function sessionGets(r: Rig): Array<{ name: string; fds: number }> {
  const framer = new MessageFramer();
  const out: Array<{ name: string; fds: number }> = [];
  const take = (bytes: Uint8Array, fds: number[]): void => {
    framer.push(bytes, fds);
    for (let f = framer.next(); f !== null; f = framer.next()) {
      out.push({ name: decodeMessage('frontend', f.bytes, f.fds).name, fds: f.fds.length });
      for (const passed of f.fds) closeFd(passed);
    }
  };
  const ahead = r.fast.returned.readAhead;
  if (ahead) take(ahead.bytes, ahead.fds);
  const buf = new Uint8Array(4096);
  for (let got = receiveMessage(r.backend, buf); got !== null && got.bytes > 0; got = receiveMessage(r.backend, buf)) take(buf.subarray(0, got.bytes), got.fds);
  return out;
}

function acksReceived(fd: number): bigint[] {
  const buf = new Uint8Array(1024);
  const got = receiveMessage(fd, buf);
  if (got === null) return [];
  const values: bigint[] = [];
  for (let at = 0; at < got.bytes; at += 20) {
    const reply = decodeMessage('frontend', buf.slice(at, at + 20), []);
    assert.ok(reply.isReply);
    assert.equal(reply.request, FrontendRequest.IOTLB_MSG);
    values.push(reply.body.kind === 'u64' ? reply.body.value : -1n);
  }
  return values;
}

describe('IOTLB fast path on a lent socket', () => {
  it('applies UPDATE and INVALIDATE in order, reports them back and acks each one that asks', () => {
    const r = rig();
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x1000n, 0x2000n, 0x7f0000n, 1));
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x1000n, 0x1000n));
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x9000n, 0x1000n, 0x8000n, 3, false));
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x5000n, 0n)); // empty: widened to one byte, as the handler does
    assert.equal(r.fast.poll(), true, r.fast.returned.reason);
    const expected = ['update 1000+2000 -> 7f0000 perm 1', 'invalidate 1000+1000', 'update 9000+1000 -> 8000 perm 3', 'invalidate 5000+1'];
    assert.deepEqual(r.sink.ops, expected);
    assert.equal(r.fast.handled, 4);
    r.applied.drain(r.reported);
    assert.deepEqual(r.reported.ops.map((op) => op.replace(/ -> .*/, '')), expected.map((op) => op.replace(/ -> .*/, '')));
    assert.deepEqual(acksReceived(r.frontend), [0n, 0n, 0n], 'three asked for a reply');
    assert.equal(r.acks.update.summary().count + r.acks.invalidate.summary().count, 3);
    assert.equal(r.fast.lent, true);
  });

  it("applies a lazy guest's flush itself, the half that ends at 2^64 clamped below 2^53 as the session clamps it", () => {
    const r = rig();
    // QEMU 8.0 and later: one pair per flush, from the guest's vCPU, which waits for both acks.
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0n, 0xfee0_0000n, 0n, 0));
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0xfef0_0000n, 2n ** 64n - 0xfef0_0000n, 0n, 0));
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0n, 2n ** 64n - 1n, 0n, 0));
    assert.equal(r.fast.poll(), true, r.fast.returned.reason);
    const toLimit = (from: number): string => `invalidate ${from.toString(16)}+${(2 ** 53 - from).toString(16)}`;
    assert.deepEqual(r.sink.ops, ['invalidate 0+fee00000', toLimit(0xfef0_0000), toLimit(0)]);
    assert.deepEqual(acksReceived(r.frontend), [0n, 0n, 0n]);
    assert.equal(r.fast.lent, true, 'the socket stays with the fast path');
  });

  it('hands a message with fds to the session, with its fd, and gives the socket back', () => {
    const r = rig();
    const efd = eventfdCreate(0);
    open.push(efd);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n, 0x1000n, 3));
    assert.equal(r.fast.poll(), true);
    sendMessage(r.frontend, encodeMessage({ channel: 'frontend', request: FrontendRequest.SET_VRING_CALL, body: { kind: 'u64', value: 0n } }), [efd]);
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x1000n, 0x1000n));
    assert.equal(r.fast.poll(), false);
    assert.equal(r.fast.returned.reason, 'a message with fds');
    assert.equal(r.fast.returned.fatal, false);
    assert.equal(r.fast.lent, false);
    assert.deepEqual(r.sink.ops, ['update 1000+1000 -> 1000 perm 3']);
    assert.deepEqual(acksReceived(r.frontend), [0n]);
    assert.deepEqual(sessionGets(r), [{ name: 'SET_VRING_CALL', fds: 1 }, { name: 'IOTLB_MSG', fds: 0 }]);
  });

  it('takes an IOTLB request whose neighbour behind carries fds, and leaves that one whole', () => {
    const r = rig();
    const efd = eventfdCreate(0);
    open.push(efd);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n, 0x1000n, 3));
    sendMessage(r.frontend, encodeMessage({ channel: 'frontend', request: FrontendRequest.SET_VRING_CALL, body: { kind: 'u64', value: 0n } }), [efd]);
    assert.equal(r.fast.poll(), false);
    assert.deepEqual(r.sink.ops, ['update 1000+1000 -> 1000 perm 3'], 'a read of one request stops before the next send');
    assert.deepEqual(sessionGets(r), [{ name: 'SET_VRING_CALL', fds: 1 }]);
  });

  for (const [what, bytes] of [
    ['another request', encodeMessage({ channel: 'frontend', request: FrontendRequest.GET_FEATURES, body: { kind: 'none' } })],
    ['an IOTLB MISS (not a front-end request)', iotlb(IotlbType.MISS, 0x1000n, 0n)],
    ['an UPDATE of size 0', iotlb(IotlbType.UPDATE, 0x1000n, 0n, 0x1000n)],
    ['an UPDATE with no permission', iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n, 0x1000n, 0)],
    ['an INVALIDATE with perm 4', iotlb(IotlbType.INVALIDATE, 0x1000n, 0x1000n, 0n, 4)],
    ['an UPDATE that wraps', iotlb(IotlbType.UPDATE, 0x1f_ffff_ffff_f000n, 0x2000n, 0x1000n)],
  ] as const) {
    it(`hands ${what} to the session, byte for byte`, () => {
      const r = rig();
      sendMessage(r.frontend, bytes);
      assert.equal(r.fast.poll(), false);
      assert.equal(r.fast.returned.reason, 'not a plain IOTLB request');
      assert.deepEqual(r.sink.ops, []);
      const framer = new MessageFramer();
      framer.push(r.fast.returned.readAhead!.bytes);
      const buf = new Uint8Array(256);
      const got = receiveMessage(r.backend, buf);
      if (got !== null) framer.push(buf.subarray(0, got.bytes));
      assert.deepEqual(framer.next()?.bytes, bytes, 'read-ahead and socket together hold the whole message');
    });
  }

  it('hands a half-sent message to the session, which gets the rest from the socket', () => {
    const r = rig();
    const whole = iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n, 0x1000n);
    sendMessage(r.frontend, whole.subarray(0, 30));
    assert.equal(r.fast.poll(), false);
    assert.deepEqual(r.fast.returned.readAhead?.bytes, whole.subarray(0, 30));
    sendMessage(r.frontend, whole.subarray(30));
    assert.deepEqual(sessionGets(r), [{ name: 'IOTLB_MSG', fds: 0 }]);
    assert.deepEqual(r.sink.ops, []);
  });

  it('stays lent with nothing queued, and gives the socket back at end of stream', () => {
    const r = rig();
    assert.equal(r.fast.poll(), true);
    closeFd(open.shift()!); // the front-end's end
    assert.equal(r.fast.poll(), false);
    assert.equal(r.fast.returned.reason, 'end of stream');
  });

  it('does not read what it could not report back (the main thread has not collected yet)', () => {
    const r = rig();
    // UPDATEs without acks, one at a time, until the report ring is full; then one more.
    const capacity = 1024;
    const update = (i: number): Uint8Array => iotlb(IotlbType.UPDATE, BigInt(0x1000 * (i + 1)), 0x1000n, 0x1000n, 3, false);
    let sent = 0;
    do assert.ok(sendMessage(r.frontend, update(sent++)) > 0); while (r.fast.poll());
    assert.equal(sent, capacity);
    assert.ok(sendMessage(r.frontend, update(sent)) > 0);
    assert.equal(r.fast.returned.reason, 'applied operations not yet collected');
    assert.equal(r.fast.handled, capacity);
    assert.equal(r.sink.ops.length, capacity);
    r.applied.drain(r.reported);
    assert.equal(r.reported.ops.length, capacity);
    assert.equal(r.fast.returned.readAhead, undefined);
    assert.equal(sessionGets(r).length, 1, 'the last UPDATE was left on the socket');
  });

  it('ends the connection when the ack cannot be sent (the front-end is gone)', () => {
    const r = rig();
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x1000n, 0x1000n));
    closeFd(open.shift()!);
    assert.equal(r.fast.poll(), false);
    assert.deepEqual(r.fast.returned, { reason: 'could not send the IOTLB_MSG ack', fatal: true });
    assert.deepEqual(r.sink.ops, ['invalidate 1000+1000'], 'applied before the ack, as the session does');
  });
});

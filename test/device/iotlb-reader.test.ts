/**
 * The IOTLB reader thread (src/device/iotlb-reader.ts, `serve --iotlb-reader thread`), a real
 * thread over a real socket pair, with this test as the queue-pair worker at the other end of
 * the IOTLB ring: requests reach the ring and are acked; an INVALIDATE is acked only once the
 * worker is quiescent; a sleeping worker is woken; anything else, or the session asking,
 * brings the socket back with the rest left queued.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createIotlbRing, IotlbRingConsumer } from '../../src/datapath/iotlb-ring.js';
import { IotlbReaderThread } from '../../src/device/iotlb-reader.js';
import { decodeMessage, encodeMessage, FrontendRequest, IotlbType } from '../../src/protocol/index.js';
import { closeFd, eventfdCreate, eventfdRead, pollReadable, receiveMessage, sendMessage, socketPair } from '../../src/sys/index.js';
import { RecordingSink } from '../support/recording-sink.js';

function iotlb(iotlbType: number, iova: bigint, size: bigint, userAddr = 0n, perm = 3): Uint8Array {
  return encodeMessage({
    channel: 'frontend', request: FrontendRequest.IOTLB_MSG, needsReply: true,
    body: { kind: 'iotlb', iotlbType, iova, size, userAddr, perm },
  });
}

/** Waits up to `ms` for an IOTLB_MSG ack on the front-end's end; true if one came. */
function ackWithin(fd: number, ms: number): boolean {
  const fds = new Int32Array([fd]);
  const ready = new Uint8Array(1);
  if (pollReadable(fds, 1, ms, ready) === 0) return false;
  const buf = new Uint8Array(64);
  const got = receiveMessage(fd, buf);
  assert.ok(got !== null && got.bytes === 20, 'one 20-byte ack');
  const reply = decodeMessage('frontend', buf.subarray(0, 20), []);
  assert.ok(reply.isReply && reply.request === FrontendRequest.IOTLB_MSG);
  assert.deepEqual(reply.body, { kind: 'u64', value: 0n }, 'a success ack');
  return true;
}

const open: number[] = [];
const readers: IotlbReaderThread[] = [];
afterEach(() => {
  for (const fd of open.splice(0)) closeFd(fd);
});
after(async () => {
  for (const reader of readers) await reader.close();
});

function rig() {
  const [frontend, backend] = socketPair();
  const wakeFd = eventfdCreate(0);
  open.push(frontend, backend, wakeFd);
  const shadow = new RecordingSink();
  const reader = new IotlbReaderThread(shadow, () => undefined);
  readers.push(reader);
  const ring = createIotlbRing();
  const worker = new IotlbRingConsumer(ring);
  const applied = new RecordingSink();
  return { frontend, backend, wakeFd, shadow, reader, worker, applied, pairs: [{ iotlbRing: ring, wakeFd }] };
}

describe('IOTLB reader thread', () => {
  it('queues UPDATE and INVALIDATE for the worker and acks each; the shadow gets them when the socket comes back', async () => {
    const r = rig();
    const back = r.reader.lend(r.backend, r.pairs);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x1000n, 0x2000n, 0x7f0000n, 1));
    assert.ok(ackWithin(r.frontend, 2000), 'UPDATE acked');
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x1000n, 0x1000n));
    assert.ok(ackWithin(r.frontend, 2000), 'INVALIDATE acked while the worker is quiescent');
    r.worker.resume(r.applied);
    r.worker.quiesce();
    assert.deepEqual(r.applied.ops, ['update 1000+2000 -> 7f0000 perm 1', 'invalidate 1000+1000']);
    // Anything but a plain IOTLB request goes back to the session with the socket, as read.
    const getFeatures = encodeMessage({ channel: 'frontend', request: FrontendRequest.GET_FEATURES, body: { kind: 'none' } });
    sendMessage(r.frontend, getFeatures);
    const returned = await back;
    assert.deepEqual({ reason: returned.reason, fatal: returned.fatal }, { reason: 'not a plain IOTLB request', fatal: false });
    assert.deepEqual(returned.readAhead, { bytes: getFeatures, fds: [] });
    assert.deepEqual(r.shadow.ops, r.applied.ops);
    assert.equal(receiveMessage(r.backend, new Uint8Array(64)), null, 'nothing left on the socket');
    assert.equal(r.reader.ackLatency(false).summary().count + r.reader.ackLatency(true).summary().count, 2);
  });

  it('acks an INVALIDATE only once the worker is out of its step', async () => {
    const r = rig();
    const back = r.reader.lend(r.backend, r.pairs);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x4000n, 0x1000n, 0x9000n, 3));
    assert.ok(ackWithin(r.frontend, 2000));
    r.worker.resume(r.applied); // in a step: it may hold the translation
    sendMessage(r.frontend, iotlb(IotlbType.INVALIDATE, 0x4000n, 0x1000n));
    assert.equal(ackWithin(r.frontend, 100), false, 'no ack while the worker may still use the entry');
    r.worker.quiesce();
    assert.ok(ackWithin(r.frontend, 2000), 'acked once the worker is quiescent');
    r.reader.reclaim();
    assert.deepEqual(await back, { reason: 'taken back by the session', fatal: false });
  });

  it('wakes a sleeping worker for what it queues', async () => {
    const r = rig();
    const back = r.reader.lend(r.backend, r.pairs);
    assert.equal(r.worker.mayStartSleeping(), true);
    sendMessage(r.frontend, iotlb(IotlbType.UPDATE, 0x8000n, 0x1000n, 0xa000n, 3));
    assert.ok(ackWithin(r.frontend, 2000));
    const ready = new Uint8Array(1);
    assert.equal(pollReadable(new Int32Array([r.wakeFd]), 1, 2000, ready), 1, 'the wake-up eventfd was written');
    assert.ok(eventfdRead(r.wakeFd) >= 1);
    r.worker.stoppedSleeping();
    r.reader.reclaim();
    await back;
  });

  it('gives the socket back at end of stream, and can be lent again', async () => {
    const r = rig();
    const first = r.reader.lend(r.backend, r.pairs);
    r.reader.reclaim();
    await first;
    const second = r.reader.lend(r.backend, r.pairs);
    closeFd(r.frontend);
    open.splice(open.indexOf(r.frontend), 1);
    assert.deepEqual(await second, { reason: 'end of stream', fatal: false });
  });
});

// serve --iotlb-reader thread: once the rings run, a thread of its own reads and acks every
// IOTLB request of a front-end that maps each buffer (an UPDATE and an INVALIDATE per frame),
// frames loop intact; requests the thread does not take (one with an fd included) reach the
// session whole while it holds the socket; and the session still ends cleanly.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loopFrames, startPair, stopPair } from './helpers.js';
import { FrontendRequest } from '../../src/protocol/index.js';
import { closeFd, eventfdCreate } from '../../src/sys/index.js';

describe('serve --iotlb-reader thread', () => {
  it('200 dynamically mapped frames loop; the reader thread acks the IOTLB requests; inspect and the shutdown answer', async () => {
    const pair = await startPair(['--iotlb-reader', 'thread'], { iommu: 'dynamic' });
    try {
      const result = await loopFrames(pair.fe, 200);
      assert.deepEqual(result.errors, []);
      assert.equal(result.received, 200);
      const state = await pair.serve.state();
      assert.ok(state.queues.every((q) => q.running), 'both rings run');
      const { updateAck, invalidateAck, ackedByWorker, ackedByReaderThread } = state.roundTrips;
      assert.ok(invalidateAck.count >= 200, `INVALIDATEs acked: ${invalidateAck.count}`);
      assert.equal(ackedByWorker, 0);
      // Before the rings run the session reads the requests itself; after, the thread does.
      assert.ok(ackedByReaderThread >= 300 && ackedByReaderThread <= updateAck.count + invalidateAck.count, `acked by the reader thread: ${ackedByReaderThread}`);
      assert.equal(state.threads.iotlbReader, 'thread');
      // The thread reads these and hands them to the session as read: the reply comes, the
      // new call fd is taken (acked), and the rings go on.
      const features = pair.fe.conn.request(FrontendRequest.GET_FEATURES);
      assert.ok(features?.kind === 'u64' && features.value !== 0n, 'GET_FEATURES answered');
      const oldCall = pair.fe.rx.callFd;
      pair.fe.rx.callFd = eventfdCreate(0);
      pair.fe.conn.request(FrontendRequest.SET_VRING_CALL, { kind: 'u64', value: 0n }, [pair.fe.rx.callFd]);
      closeFd(oldCall);
      const more = await loopFrames(pair.fe, 100, { firstSeq: 200 });
      assert.deepEqual(more.errors, []);
      assert.equal(more.received, 100);
      const after = await pair.serve.state();
      assert.ok(after.roundTrips.ackedByReaderThread >= ackedByReaderThread + 150, 'the socket was lent again after the hand-back');
    } finally {
      await stopPair(pair);
    }
  });
});

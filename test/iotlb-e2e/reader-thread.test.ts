// serve --iotlb-reader thread: once the rings run, a thread of its own reads and acks every
// IOTLB request of a front-end that maps each buffer (an UPDATE and an INVALIDATE per frame),
// frames loop intact, and the session still ends cleanly (the thread gives the socket back).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loopFrames, startPair, stopPair } from './helpers.js';

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
    } finally {
      await stopPair(pair);
    }
  });
});

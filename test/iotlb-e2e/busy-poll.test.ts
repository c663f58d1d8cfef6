// serve --busy-poll-us: every idle policy moves dynamically mapped frames and still answers
// the control path (a worker that never sleeps must still read its commands: stopping the
// rings, snapshots for inspect and the shutdown all go through them).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loopFrames, startPair, stopPair } from './helpers.js';
import { renderState } from '../../src/control/render.js';

describe('serve --busy-poll-us', () => {
  for (const budget of ['0', '200', '-1']) {
    it(`--busy-poll-us ${budget}: 100 dynamically mapped frames loop, inspect answers, the session ends cleanly`, async () => {
      const pair = await startPair(['--busy-poll-us', budget, '--iotlb-reader', 'worker'], { iommu: 'dynamic' });
      try {
        const result = await loopFrames(pair.fe, 100);
        assert.deepEqual(result.errors, []);
        assert.equal(result.received, 100);
        const state = await pair.serve.state();
        assert.ok(state.queues.every((q) => q.running), 'both rings run');
        const { updateAck, invalidateAck, ackedByWorker } = state.roundTrips;
        assert.ok(invalidateAck.count >= 100, `INVALIDATEs acked: ${invalidateAck.count}`);
        // Once the rings run, the session lends its socket and the worker acks IOTLB requests itself.
        assert.ok(ackedByWorker >= 100 && ackedByWorker <= updateAck.count + invalidateAck.count, `acked by the worker: ${ackedByWorker}`);
        // Behind a vIOMMU the window is the budget itself: inspect prints it once.
        const text = renderState(state, null, false);
        if (budget === '200') {
          assert.match(text, /idle: poll 200 µs then sleep/);
          assert.match(text, /idle sleeps so far: worker 0 \d+/);
        }
        assert.doesNotMatch(text, /idle poll window now/);
      } finally {
        await stopPair(pair);
      }
    });
  }
});

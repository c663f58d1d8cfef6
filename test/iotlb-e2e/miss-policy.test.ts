// Miss policies of `serve` against the test front-end with dynamic mappings (every buffer
// mapped just before it is posted, so every buffer misses): stop-at-first
// (--no-iotlb-batch-misses) sends one miss and waits; batching (the default) walks the rest of
// the available burst and sends every distinct miss at once; either way, and with the front-end
// answering a batch pipelined, frames come back intact.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkLoopedFrame, frameLength, writeFrame } from '../support/frontend/frames.js';
import { BackendRequest, IotlbType } from '../../src/protocol/index.js';
import type { VhostUserFrontend } from '../support/frontend/frontend.js';
import { waitFor } from '../support/hostile-frontend.js';
import type { ServeProcess } from '../support/serve.js';
import { assertClean, loopFrames, startPair, stopPair, type Pair } from './helpers.js';

const POSTED = 8;

/**
 * Posts POSTED dynamically mapped TX frames and returns the misses the device sent before
 * any was answered; then answers them and checks those frames come back intact.
 */
async function missesBeforeAnswering(fe: VhostUserFrontend, serve: ServeProcess): Promise<number[]> {
  // First let the device learn the rings (their misses are answered while the front-end runs):
  // run the front-end until serve has both rings mapped, with no miss outstanding.
  await waitFor('both rings mapped by the device', async () => {
    await fe.runFor(20);
    const rings = (await serve.state()).queues.filter((q) => q.index === 0 || q.index === 1);
    return rings.length === 2 && rings.every((q) => q.running && !q.waitingForMapping && q.iotlb?.pendingMisses === 0);
  }, 10_000);
  assert.ok(fe.stats.missesReceived > 0, 'the device never asked for its rings');
  for (let seq = 0; seq < POSTED; seq++) assert.ok(fe.txSendWith(frameLength(seq), (m, o) => writeFrame(m, o, seq, frameLength(seq))));
  fe.flush();
  // Read the back-end channel without answering (service() would): wait (bounded) for the
  // first request, however long the device takes to get to the burst, then read until the
  // channel stays quiet for 20 ms — well before an unanswered miss is asked again
  // (MISS_RETRY_MS, 100 ms).
  const c = fe.conn;
  const deadline = Date.now() + 5000;
  while (c.backendPending === 0 && Date.now() < deadline) c.waitReadable(20);
  let seen = -1;
  while (c.backendPending !== seen && Date.now() < deadline) {
    seen = c.backendPending;
    c.waitReadable(20);
  }
  const iovas: number[] = [];
  const queued = [];
  for (let msg = c.nextBackendRequest(); msg !== undefined; msg = c.nextBackendRequest()) {
    queued.push(msg);
    if (msg.request === BackendRequest.IOTLB_MSG && msg.body.kind === 'iotlb' && msg.body.iotlbType === IotlbType.MISS) iovas.push(Number(msg.body.iova));
  }
  c.requeueBackend(queued); // the front-end answers them as usual from here
  const errors: string[] = [];
  let received = 0;
  await fe.runUntil(() => received === POSTED, 10_000, (b, off, len) => {
    const err = checkLoopedFrame(b, off, len, received, frameLength(received));
    if (err !== null) errors.push(err);
    received++;
  });
  assert.deepEqual(errors, []);
  return iovas;
}

describe('IOTLB miss policies with dynamic mappings', () => {
  let pair: Pair | undefined;
  after(async () => void (await stopPair(pair)));

  it('stop-at-first sends one miss for a burst of freshly mapped buffers, and waits', async () => {
    await stopPair(pair);
    pair = await startPair(['--iotlb-strategy', 'coalescing', '--no-iotlb-batch-misses'], { iommu: 'dynamic' });
    const misses = await missesBeforeAnswering(pair.fe, pair.serve);
    assert.equal(misses.length, 1, `misses sent: ${misses.map((m) => m.toString(16))}`);
    const r = await loopFrames(pair.fe, 200, { firstSeq: POSTED, maxLen: 1514 });
    assert.deepEqual(r.errors, []);
  });

  it('by default every distinct miss of the burst goes out at once, each once', async () => {
    await stopPair(pair);
    pair = await startPair(['--iotlb-strategy', 'coalescing'], { iommu: 'dynamic' });
    const misses = await missesBeforeAnswering(pair.fe, pair.serve);
    // One IOVA page per posted buffer (each dma_map gets its own IOVA), none twice.
    assert.equal(new Set(misses.map((m) => Math.floor(m / 4096))).size, misses.length, 'a miss was sent twice');
    assert.equal(misses.length, POSTED, `misses sent: ${misses.map((m) => m.toString(16))}`);
    const r = await loopFrames(pair.fe, 200, { firstSeq: POSTED, maxLen: 1514 });
    assert.deepEqual(r.errors, []);
  });

  for (const missReplies of ['serial', 'pipelined'] as const) {
    it(`--iotlb-batch-misses: frames loop back intact with ${missReplies} miss replies, no canary touched`, async () => {
      await stopPair(pair);
      pair = await startPair(['--iotlb-strategy', 'coalescing', '--iotlb-batch-misses'], { iommu: 'dynamic', missReplies, slotSize: 1600 });
      const r = await loopFrames(pair.fe, 1500);
      assert.deepEqual(r.errors, []);
      assert.equal(r.received, 1500);
      assertClean(pair.fe);
      assert.ok(pair.fe.stats.invalidatesSent >= 3000, `${pair.fe.stats.invalidatesSent} invalidations`);
      // A lookup misses when a miss is sent, when the batch's walk looks at a chain behind
      // it, and when the ring reaches a chain whose answer has not come yet: about 1-1.4
      // missed lookups per miss sent. Walking the chains again for every UPDATE that answers
      // the batch (each walk's lookups all miss) made it 2.4-5.7 with serial replies.
      for (const q of (await pair.serve.state()).queues) {
        const missed = q.iotlb!.stats.misses;
        const sent = q.counters!.missesSent;
        assert.ok(sent > 0 && missed <= 2 * sent, `queue ${q.index}: ${missed} lookups missed for ${sent} misses sent`);
      }
    });
  }
});

/**
 * A worker's translation records are stamped on the trace writer's clock: a record made
 * between two of the main thread's time stamps falls between them. (Each thread's
 * performance.timeOrigin is its own reading of the wall clock; stamping with it put a
 * worker's misses tens of µs after the UPDATEs that answered them.)
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { createTranslationRing, TranslationRingConsumer } from '../../src/datapath/translation-ring.js';
import { TraceWriter } from '../../src/trace/writer.js';

it('worker records carry the trace writer clock', async () => {
  const writer = TraceWriter.inMemory();
  const ring = createTranslationRing();
  const turn = new Int32Array(new SharedArrayBuffer(4)); // odd: the worker's turn to record
  const rounds = 200;
  const ringUrl = new URL('../../src/datapath/translation-ring.js', import.meta.url).href;
  const worker = new Worker(`
    const { workerData } = require('node:worker_threads');
    import(workerData.ringUrl).then(({ TranslationRingProducer }) => {
      const producer = new TranslationRingProducer(workerData.ring, workerData.startHrNs);
      const turn = workerData.turn;
      for (let i = 0; i < workerData.rounds; i++) {
        while ((Atomics.load(turn, 0) & 1) === 0);
        producer.record(0, i, 1, 1, 0);
        Atomics.add(turn, 0, 1);
      }
    });
  `, { eval: true, workerData: { ring, turn, rounds, ringUrl, startHrNs: writer.startHrNs } });
  const windows: Array<[number, number]> = [];
  try {
    for (let i = 0; i < rounds; i++) {
      const before = Number(writer.elapsedNs());
      Atomics.add(turn, 0, 1);
      const deadline = Date.now() + 5000;
      while ((Atomics.load(turn, 0) & 1) === 1) {
        if (Date.now() > deadline) throw new Error('the worker did not record');
      }
      windows.push([before, Number(writer.elapsedNs())]);
    }
  } finally {
    await worker.terminate();
  }
  const stamps: number[] = [];
  new TranslationRingConsumer(ring).drain({ translation: (timeNs) => void stamps.push(timeNs) });
  assert.equal(stamps.length, rounds);
  // The offset to the shared clock is re-measured every ms: allow 2 µs for its error.
  const outside = stamps.filter((t, i) => t < windows[i][0] - 2000 || t > windows[i][1] + 2000);
  assert.deepEqual(outside.length, 0, `${outside.length} of ${rounds} stamps outside their window, e.g. ${outside[0]} vs ${JSON.stringify(windows[stamps.indexOf(outside[0]!)])}`);
});

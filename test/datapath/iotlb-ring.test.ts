/**
 * The IOTLB ring's acknowledgement rule (src/datapath/iotlb-ring.ts): an INVALIDATE may be
 * acknowledged once the worker applied it or while the worker is quiescent — and never while
 * a worker that has not applied it may still translate.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { createIotlbRing, IotlbOp, IotlbRingConsumer, IotlbRingProducer, type IotlbOpSink } from '../../src/datapath/iotlb-ring.js';

class RecordingSink implements IotlbOpSink {
  readonly ops: string[] = [];
  update(iova: number, size: number): void {
    this.ops.push(`update ${iova.toString(16)}+${size.toString(16)}`);
  }
  invalidate(iova: number, size: number): void {
    this.ops.push(`invalidate ${iova.toString(16)}+${size.toString(16)}`);
  }
}

function pair(): { producer: IotlbRingProducer; consumer: IotlbRingConsumer; sink: RecordingSink } {
  const buffer = createIotlbRing();
  return { producer: new IotlbRingProducer(buffer), consumer: new IotlbRingConsumer(buffer), sink: new RecordingSink() };
}

describe('IOTLB ring acknowledgement', () => {
  // Atomics.waitAsync does not keep the event loop alive (in serve, the sockets do).
  let keepAlive: NodeJS.Timeout;
  before(() => void (keepAlive = setInterval(() => undefined, 1000)));
  after(() => clearInterval(keepAlive));

  it('waits for a worker that may be translating until it drains', async () => {
    const { producer, consumer, sink } = pair();
    consumer.resume(sink); // busy from here
    const seq = producer.push(IotlbOp.Invalidate, 0x1000, 0x1000, 0, 0);
    assert.equal(await producer.waitApplied(seq, 30), false, 'acknowledged while the worker had not applied it');
    consumer.drain(sink);
    assert.equal(await producer.waitApplied(seq, 30), true);
    assert.deepEqual(sink.ops, ['invalidate 1000+1000']);
  });

  it('acknowledges at once while the worker is quiescent, which applies it first thing on resume', async () => {
    const { producer, consumer, sink } = pair();
    consumer.resume(sink);
    consumer.quiesce();
    const seq = producer.push(IotlbOp.Invalidate, 0x2000, 0x1000, 0, 0);
    assert.equal(await producer.waitApplied(seq, 1000), true);
    assert.deepEqual(sink.ops, [], 'nothing applied yet');
    assert.equal(producer.backlog, 1);
    consumer.resume(sink);
    assert.deepEqual(sink.ops, ['invalidate 2000+1000']);
    assert.equal(producer.backlog, 0);
  });

  it('acknowledges a waiter as soon as the busy worker goes quiescent', async () => {
    const { producer, consumer, sink } = pair();
    consumer.resume(sink);
    const seq = producer.push(IotlbOp.Invalidate, 0x3000, 0x1000, 0, 0);
    const started = Date.now();
    const waiting = producer.waitApplied(seq, 2000);
    setTimeout(() => consumer.quiesce(), 20);
    assert.equal(await waiting, true);
    assert.ok(Date.now() - started < 1000, 'the quiesce notified the waiter');
    assert.deepEqual(sink.ops, []);
  });

  it('blocks for a burst in flight and no longer: a worker thread ending its step releases the producer', async () => {
    const buffer = createIotlbRing();
    const control = new Int32Array(new SharedArrayBuffer(8)); // [go, done]
    const ringUrl = new URL('../../src/datapath/iotlb-ring.js', import.meta.url).href;
    const worker = new Worker(`
      const { workerData } = require('node:worker_threads');
      import(workerData.ringUrl).then(({ IotlbRingConsumer }) => {
        const consumer = new IotlbRingConsumer(workerData.buffer);
        const sink = { update() {}, invalidate() {} };
        consumer.resume(sink);                                 // a step begins...
        Atomics.store(workerData.control, 0, 1);
        Atomics.notify(workerData.control, 0);
        const until = performance.now() + 30;                 // ...and translates for 30 ms
        while (performance.now() < until);
        Atomics.store(workerData.control, 1, 1);
        consumer.quiesce();                                    // the step ends: the producer may ack
      });
    `, { eval: true, workerData: { buffer, control, ringUrl } });
    try {
      const producer = new IotlbRingProducer(buffer);
      while (Atomics.load(control, 0) === 0) await new Promise((r) => setTimeout(r, 1));
      const seq = producer.push(IotlbOp.Invalidate, 0x4000, 0x1000, 0, 0);
      assert.equal(producer.waitAppliedSync(seq, 5), false, 'released while the step that may use the entry still ran');
      assert.equal(Atomics.load(control, 1), 0);
      assert.equal(producer.waitAppliedSync(seq, 2000), true);
      assert.equal(Atomics.load(control, 1), 1, 'released only after the step ended');
    } finally {
      await worker.terminate();
    }
  });

  it('a producer learns the worker sleeps (and must wake it) or the worker sees the operation before sleeping', () => {
    const { producer, consumer, sink } = pair();
    consumer.resume(sink);
    consumer.quiesce();
    assert.equal(producer.workerSleeping, false);
    assert.equal(consumer.mayStartSleeping(), true);
    assert.equal(producer.workerSleeping, true, 'a sleeper is visible to the producer');
    consumer.stoppedSleeping();
    assert.equal(producer.workerSleeping, false);
    producer.push(IotlbOp.Update, 0x5000, 0x1000, 0x9000, 3);
    assert.equal(consumer.mayStartSleeping(), false, 'an operation queued before the worker slept keeps it awake');
    consumer.stoppedSleeping();
    consumer.resume(sink);
    assert.deepEqual(sink.ops, ['update 5000+1000']);
  });

  it('a worker thread never uses an entry after its INVALIDATE was acknowledged', async () => {
    // The worker keeps a one-bit cache per key (set by UPDATE, cleared by INVALIDATE) and,
    // in bursts between resume() and quiesce(), checks the key the main thread last
    // acknowledged as invalidated: finding it still cached is a use after the ack.
    // No violation proves something only if the worker really worked: it counts its rounds,
    // its lookups of acknowledged keys, the UPDATEs it applied, and the INVALIDATEs that
    // removed an entry it had cached since an earlier drain (one lookups could have used).
    const buffer = createIotlbRing();
    // [acked key, stop, violations, checks, rounds, updates, live invalidations]
    const control = new Int32Array(new SharedArrayBuffer(7 * 4));
    const KEYS = 4096;
    const ringUrl = new URL('../../src/datapath/iotlb-ring.js', import.meta.url).href;
    const worker = new Worker(`
      const { workerData } = require('node:worker_threads');
      import(workerData.ringUrl).then(({ IotlbRingConsumer }) => {
        const control = workerData.control;
        const consumer = new IotlbRingConsumer(workerData.buffer);
        const cached = new Uint8Array(workerData.keys);
        const cachedIn = new Int32Array(workerData.keys); // the drain that applied the key's UPDATE
        let drains = 0;
        const sink = {
          update: (k) => { cached[k] = 1; cachedIn[k] = drains; Atomics.add(control, 5, 1); },
          invalidate: (k) => {
            if (cached[k] === 1 && cachedIn[k] !== drains) Atomics.add(control, 6, 1);
            cached[k] = 0;
          },
        };
        let bursts = 0;
        while (Atomics.load(control, 1) === 0) {
          drains++;
          consumer.resume(sink);
          // Like the runtime's step(): drain at the start of a burst, then translate.
          for (let burst = 0; burst < 4; burst++) {
            drains++;
            if (consumer.hasWork()) consumer.drain(sink);
            for (let lookup = 0; lookup < 64; lookup++) {
              const acked = Atomics.load(control, 0);
              if (acked > 0 && cached[acked] === 1) Atomics.add(control, 2, 1);
              if (acked > 0) Atomics.add(control, 3, 1);
            }
          }
          consumer.quiesce();
          Atomics.add(control, 4, 1);
          if ((++bursts & 7) === 0) Atomics.wait(control, 1, 0, 0.01); // sometimes sleep, quiescent
        }
      });
    `, { eval: true, workerData: { buffer, control, ringUrl, keys: KEYS } });
    const producer = new IotlbRingProducer(buffer);
    try {
      for (let key = 1; key < KEYS; key++) {
        producer.push(IotlbOp.Update, key, 1, 0, 3);
        // Give the worker a chance to apply the update, so the invalidate has something to remove.
        const until = performance.now() + 1;
        while (producer.backlog > 0 && performance.now() < until);
        const seq = producer.push(IotlbOp.Invalidate, key, 1, 0, 0);
        assert.ok(await producer.waitApplied(seq, 5000), `invalidate of key ${key} never acknowledged`);
        Atomics.store(control, 0, key);
      }
      // Let the worker apply what is left (and look the last acked key up) before stopping it.
      const end = Date.now() + 5000;
      while (producer.backlog > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 1));
      const rounds = Atomics.load(control, 4);
      while (Atomics.load(control, 4) < rounds + 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 1));
    } finally {
      Atomics.store(control, 1, 1);
      await worker.terminate();
    }
    const [violations, checks, rounds, updates, live] = [2, 3, 4, 5, 6].map((i) => Atomics.load(control, i));
    const seen = `${rounds} rounds, ${checks} checks, ${updates} updates applied, ${live} live invalidations`;
    assert.equal(violations, 0, `the worker found an acknowledged invalidation still cached (${seen})`);
    // The worker ran: every UPDATE reached its cache, and it ran rounds and lookups throughout.
    assert.equal(updates, KEYS - 1, `the worker did not apply every UPDATE (${seen})`);
    assert.ok(rounds >= 100, `the worker hardly ran (${seen})`);
    assert.ok(checks > 1000, `the worker checked acknowledged keys while they were acked (${seen})`);
    // Most INVALIDATEs removed an entry the worker held across a lookup burst (a real race to lose),
    // not one applied in the same drain as its UPDATE.
    assert.ok(live >= (KEYS - 1) / 4, `too few INVALIDATEs removed an entry the worker held (${seen})`);
  });
});

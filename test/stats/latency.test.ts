/**
 * The latency histogram (src/stats/latency.ts) against exact percentiles of the same samples:
 * each reported quantile is at or above the true one and within one bucket (2^(1/4), ~19%),
 * merging two histograms equals recording everything into one, and nonsense samples are
 * ignored rather than bucketed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LatencyHistogram, LATENCY_SLOTS } from '../../src/stats/latency.js';
import { Prng } from '../../src/iotlb/prng.js';

const exact = (sorted: number[], q: number): number => sorted[Math.ceil(q * sorted.length) - 1]!;

test('quantiles bound the exact ones from above, within one bucket, for spread-out samples', () => {
  const rnd = new Prng(42);
  const samples: number[] = [];
  const h = new LatencyHistogram();
  for (let i = 0; i < 20_000; i++) {
    // Log-uniform from 1 µs to ~65 ms, as round trips spread.
    const us = 2 ** (rnd.below(16_000) / 1000);
    samples.push(us);
    h.record(us);
  }
  samples.sort((a, b) => a - b);
  for (const q of [0.5, 0.9, 0.99, 1]) {
    const want = exact(samples, q);
    const got = h.quantileUs(q);
    assert.ok(got >= want, `q${q}: ${got} below the exact ${want}`);
    assert.ok(got <= want * 2 ** 0.25 * 1.0001, `q${q}: ${got} more than a bucket above ${want}`);
  }
  const s = h.summary();
  assert.equal(s.count, 20_000);
  assert.equal(s.maxUs, Math.round(samples.at(-1)! * 10) / 10);
  assert.ok(Math.abs(s.meanUs - samples.reduce((a, b) => a + b, 0) / samples.length) < 0.1);
});

test('add() of two histograms equals one that saw every sample; shared slots work in place', () => {
  const a = new LatencyHistogram();
  const b = new LatencyHistogram(new Float64Array(new SharedArrayBuffer(LATENCY_SLOTS * 8)));
  const all = new LatencyHistogram();
  for (let i = 1; i <= 500; i++) {
    (i % 3 === 0 ? a : b).record(i * 1.7);
    all.record(i * 1.7);
  }
  const sum = new LatencyHistogram();
  sum.add(a);
  sum.add(b);
  // Buckets, count and max exactly; the sum of µs up to float rounding (a different order of additions).
  const sumSlot = LATENCY_SLOTS - 2;
  assert.deepEqual([...sum.slots].filter((_, i) => i !== sumSlot), [...all.slots].filter((_, i) => i !== sumSlot));
  assert.ok(Math.abs(sum.slots[sumSlot]! - all.slots[sumSlot]!) < 1e-6);
  assert.deepEqual(sum.summary(), all.summary());
});

test('negative and NaN samples are not counted; an empty histogram reports zeros', () => {
  const h = new LatencyHistogram();
  h.record(-5);
  h.record(Number.NaN);
  assert.equal(h.count, 0);
  assert.deepEqual(h.summary(), { count: 0, meanUs: 0, p50Us: 0, p90Us: 0, p99Us: 0, maxUs: 0 });
  h.record(0.2);
  assert.equal(h.quantileUs(0.5), 0.2, 'sub-µs samples land in bucket 0, capped at the max seen');
  assert.throws(() => new LatencyHistogram(new Float64Array(10)), /needs 103 slots/);
});

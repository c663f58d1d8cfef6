import { test } from 'node:test';
import assert from 'node:assert/strict';
import { markBest, type BenchRow } from '../../src/replay/run.js';

/** A row with only what markBest reads set; the rest is irrelevant to it. */
function row(strategy: string, replaysPerSec: number, marginPct: number): BenchRow {
  return { strategy, replaysPerSec, marginPct, relative: 0, best: false, withinMargin: false } as BenchRow;
}

test('markBest: the fastest is best; another is within the margin only when its upper bound reaches the fastest\'s lower bound', () => {
  const rows = [row('a', 100, 2), row('b', 97, 1.1), row('c', 96, 1), row('d', 50, 97)];
  markBest(rows);
  assert.deepEqual(rows.map((r) => [r.strategy, r.best, r.withinMargin]), [
    ['a', true, false],
    ['b', false, true], // 97 * 1.011 = 98.07 >= 98
    ['c', false, false], // 96 * 1.01 = 96.96 < 98
    ['d', false, true], // 50 * 1.97 = 98.5: a wide margin cannot be told apart either
  ]);
  assert.deepEqual(rows.map((r) => r.relative), [1, 0.97, 0.96, 0.5]);
});

test('markBest: one row is best; no rows is no error', () => {
  const rows = [row('only', 5, 0)];
  markBest(rows);
  assert.equal(rows[0].best, true);
  assert.equal(rows[0].withinMargin, false);
  markBest([]);
});

/**
 * The idle poll window (src/datapath/poll-window.ts): kept when polling caught the work,
 * halved when the spell outlasted the budget, doubled when a longer window would have caught
 * it; fixed when the budget is 0 (never poll) or unbounded (never sleep).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { GROW_START_MS, PollWindow } from '../../src/datapath/poll-window.js';

describe('PollWindow', () => {
  it('starts at the budget and keeps it while work comes within the window', () => {
    const w = new PollWindow(1);
    for (const idle of [0.001, 0.2, 0.999, 1]) w.spellEnded(idle);
    assert.equal(w.windowMs, 1);
  });

  it('halves on each spell longer than the budget, down to 0 (sleep at once)', () => {
    const w = new PollWindow(1);
    const seen: number[] = [];
    for (let i = 0; i < 8; i++) {
      w.spellEnded(3);
      seen.push(w.windowMs);
    }
    assert.deepEqual(seen, [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0, 0]);
  });

  it('grows back by doubling from GROW_START_MS when spells end between the window and the budget', () => {
    const w = new PollWindow(1);
    for (let i = 0; i < 10; i++) w.spellEnded(5);
    assert.equal(w.windowMs, 0);
    w.spellEnded(0.3);
    assert.equal(w.windowMs, GROW_START_MS);
    w.spellEnded(0.3);
    assert.equal(w.windowMs, 2 * GROW_START_MS);
    for (let i = 0; i < 20; i++) w.spellEnded(0.3);
    assert.equal(w.windowMs, 32 * GROW_START_MS, 'grown until it covers the spells, no further');
    for (let i = 0; i < 20; i++) w.spellEnded(0.9);
    assert.equal(w.windowMs, 1, 'capped at the budget');
  });

  it('a guest that pauses for milliseconds between bursts of short gaps settles on short polls', () => {
    // A TCP sender through a tap: gaps of tens of µs inside a burst, then a pause of 2-3 ms.
    const w = new PollWindow(1);
    for (let burst = 0; burst < 50; burst++) {
      for (let i = 0; i < 10; i++) w.spellEnded(0.03);
      w.spellEnded(2.5);
    }
    assert.ok(w.windowMs <= 0.08, `window ${w.windowMs} ms`);
    assert.ok(w.windowMs > 0, 'the short gaps still earn a poll');
  });

  it('a budget of 0 never polls and an unbounded one never sleeps, whatever the spells', () => {
    const never = new PollWindow(0);
    const always = new PollWindow(Infinity);
    for (const idle of [0.3, 5, 0.01, 100]) {
      never.spellEnded(idle);
      always.spellEnded(idle);
    }
    assert.equal(never.windowMs, 0);
    assert.equal(always.windowMs, Infinity);
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeRig } from './helpers.js';
import { VRING_USED_F_NO_NOTIFY } from '../../src/virtqueue/split.js';

function needEvent(ev: number, nw: number, old: number): boolean {
  return ((nw - ev - 1) & 0xffff) < ((nw - old) & 0xffff);
}

/** Deterministic PRNG so failures reproduce. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

test('EVENT_IDX: interrupts exactly per vring_need_event(used_event, new, old)', () => {
  const rig = makeRig({ size: 64, eventIdx: true, startIdx: 65500 });
  const q = rig.queue;
  const rnd = prng(7);
  let old = -1;
  let interrupts = 0;
  let suppressed = 0;
  for (let round = 0; round < 2000; round++) {
    // The driver moves used_event somewhere around the current used index.
    const ev = (q.usedIdx + Math.floor(rnd() * 12) - 4) & 0xffff;
    rig.driver.setUsedEvent(ev);
    const n = 1 + Math.floor(rnd() * 5);
    for (let i = 0; i < n; i++) q.pushUsed(0, 0);
    assert.equal(q.flushUsed(), n);
    assert.equal(rig.driver.usedIdx(), q.usedIdx);
    const want = old < 0 ? true : needEvent(ev, q.usedIdx, old);
    assert.equal(q.needsInterrupt(), want, `round ${round} ev=${ev} new=${q.usedIdx} old=${old}`);
    want ? interrupts++ : suppressed++;
    old = q.usedIdx;
    // Nothing new since the last decision: no interrupt.
    assert.equal(q.needsInterrupt(), false);
  }
  assert.ok(interrupts > 100 && suppressed > 100, `${interrupts} / ${suppressed}`);
});

test('no EVENT_IDX: avail->flags NO_INTERRUPT suppresses interrupts', () => {
  const rig = makeRig({ size: 16 });
  const q = rig.queue;
  q.pushUsed(0, 0);
  q.flushUsed();
  assert.equal(q.needsInterrupt(), true);
  rig.driver.setNoInterrupt(true);
  q.pushUsed(0, 0);
  q.flushUsed();
  assert.equal(q.needsInterrupt(), false);
  rig.driver.setNoInterrupt(false);
  q.pushUsed(0, 0);
  q.flushUsed();
  assert.equal(q.needsInterrupt(), true);
});

test('used entries are invisible until the one used->idx store per burst', () => {
  const rig = makeRig({ size: 16 });
  const q = rig.queue;
  q.pushUsed(3, 100);
  q.pushUsed(5, 200);
  assert.equal(rig.driver.usedIdx(), 0);
  assert.equal(q.flushUsed(), 2);
  assert.equal(rig.driver.usedIdx(), 2);
  assert.equal(q.flushUsed(), 0);
});

test('kick suppression without EVENT_IDX: NO_NOTIFY flag, and the recheck after enable', () => {
  const rig = makeRig({ size: 16 });
  const q = rig.queue;
  const d = rig.driver;
  q.disableNotifications();
  assert.equal(d.usedFlags() & VRING_USED_F_NO_NOTIFY, VRING_USED_F_NO_NOTIFY);
  d.addBuffer(rig.bufBase, 64, false);
  d.publish();
  assert.equal(d.needsKick(), false);
  // The device is about to sleep: enable, and the recheck sees the buffer added meanwhile.
  assert.equal(q.enableNotifications(), 1);
  assert.equal(d.usedFlags() & VRING_USED_F_NO_NOTIFY, 0);
  d.addBuffer(rig.bufBase, 64, false);
  d.publish();
  assert.equal(d.needsKick(), true);
});

test('kick suppression with EVENT_IDX: avail_event written on enable, race recheck', () => {
  const rig = makeRig({ size: 16, eventIdx: true });
  const q = rig.queue;
  const d = rig.driver;
  q.disableNotifications(); // no-op with EVENT_IDX
  assert.equal(d.usedFlags(), 0);
  assert.equal(q.enableNotifications(), 0);
  assert.equal(d.availEvent(), 0);
  d.addBuffer(rig.bufBase, 64, false);
  d.publish();
  assert.equal(d.needsKick(), true, 'crossing avail_event=0 kicks');
  assert.equal(q.availableCount(), 1);
  d.addBuffer(rig.bufBase, 64, false);
  d.publish();
  assert.equal(d.needsKick(), false, 'avail_event still 0: no kick for idx 2');
  // Device consumes both then arms for the next one.
  q.consume(2);
  assert.equal(q.availableCount(), 0);
  assert.equal(q.enableNotifications(), 0);
  assert.equal(d.availEvent(), 2);
  d.addBuffer(rig.bufBase, 64, false);
  d.publish();
  assert.equal(d.needsKick(), true);
  // Race: the driver published between the device's last check and its enable.
  q.consume(1);
  d.addBuffer(rig.bufBase, 64, false);
  d.publish();
  d.needsKick();
  assert.equal(q.enableNotifications(), 1, 'recheck reports the buffer: do not sleep');
});

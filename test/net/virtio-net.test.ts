import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Capture, HDR, addChainedFrame, makeRig, makePackedRig, netq, poke, peek, frame, txIndirectFrame, GPA } from '../virtqueue/helpers.js';
import { transmitBurst, receiveBurst, receiveFrame, NetCounter, RX_DONE, RX_DROPPED, RX_NO_ROOM } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { FLOAT64_COPY_EXACT, wideOf } from '../../src/memory/wide-view.js';
import { LoopbackEndpoint } from '../../src/net/loopback.js';
import { SinkEndpoint } from '../../src/net/sink.js';
import { SourceEndpoint, SOURCE_SEQ_OFFSET } from '../../src/net/source.js';

test('TX: chained frame (header in its own descriptor, frame in two) delivers exact bytes', () => {
  const rig = makeRig();
  const { f, head } = addChainedFrame(rig);
  rig.driver.publish();
  const txq = netq(rig.queue);
  const cap = new Capture();
  assert.equal(transmitBurst(txq, cap, 32), 1);
  assert.deepEqual(cap.frames[0], f);
  assert.equal(cap.pieces[0], 2);
  assert.equal(rig.driver.popUsed(), head);
  assert.equal(rig.driver.lastLen, 0);
  assert.equal(txq.counters[NetCounter.packets], 1);
  assert.equal(txq.counters[NetCounter.bytes], 100);
  assert.equal(cap.flushes, 1);
});

test('TX: header spanning descriptors (4 + 8+frame) and a 10-byte legacy header', () => {
  for (const hdrLen of [12, 10]) {
    const rig = makeRig();
    const f = frame(60, hdrLen);
    const b = rig.bufBase;
    poke(rig, b, HDR.subarray(0, 4));
    const second = new Uint8Array(hdrLen - 4 + 20);
    second.fill(0xee, 0, hdrLen - 4);
    second.set(f.subarray(0, 20), hdrLen - 4);
    poke(rig, b + 0x40, second);
    poke(rig, b + 0x100, f.subarray(20));
    rig.driver.addChain([b, b + 0x40, b + 0x100], [4, second.length, 40], 3);
    rig.driver.publish();
    const cap = new Capture();
    assert.equal(transmitBurst(netq(rig.queue, hdrLen), cap, 32), 1);
    assert.deepEqual(cap.frames[0], f);
  }
});

test('TX: indirect table delivers exact bytes', () => {
  const rig = makeRig();
  const head = txIndirectFrame(rig);
  assert.equal(rig.queue.chainDescs, 5);
  assert.equal(rig.driver.popUsed(), head);
});

test('TX: burst limit, ring wrap-around of the 16-bit indices, too-short chains dropped', () => {
  const rig = makeRig({ size: 8, startIdx: 65533 });
  const txq = netq(rig.queue);
  const cap = new Capture();
  let sent = 0;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 6; i++) {
      const a = rig.bufBase + i * 0x100;
      poke(rig, a, HDR);
      poke(rig, a + 12, frame(20, sent + i));
      rig.driver.addBuffer(a, 32, false);
    }
    rig.driver.publish();
    assert.equal(transmitBurst(txq, cap, 4), 4);
    assert.equal(transmitBurst(txq, cap, 4), 2);
    for (let i = 0; i < 6; i++) assert.deepEqual(cap.frames[sent + i], frame(20, sent + i));
    sent += 6;
    while (rig.driver.popUsed() >= 0);
  }
  // Header + 13 bytes: shorter than an Ethernet header.
  rig.driver.addBuffer(rig.bufBase, 25, false);
  rig.driver.publish();
  assert.equal(transmitBurst(txq, cap, 4), 1);
  assert.equal(cap.frames.length, sent);
  assert.equal(txq.counters[NetCounter.errors], 1);
  assert.ok(rig.driver.popUsed() >= 0);
});

test('TX: endpoint backpressure leaves the chain unconsumed', () => {
  const rig = makeRig();
  poke(rig, rig.bufBase, HDR);
  poke(rig, rig.bufBase + 12, frame(50));
  rig.driver.addBuffer(rig.bufBase, 62, false);
  rig.driver.publish();
  const txq = netq(rig.queue);
  const cap = new Capture();
  cap.refuse = true;
  assert.equal(transmitBurst(txq, cap, 32), 0);
  assert.equal(rig.queue.lastAvailIdx, 0);
  assert.equal(rig.driver.usedCount(), 0);
  cap.refuse = false;
  assert.equal(transmitBurst(txq, cap, 32), 1);
  assert.deepEqual(cap.frames[0], frame(50));
});

/** A sink that takes `accept` frames, then holds the rest (backpressure) until told otherwise. */
class TakeSome extends Capture {
  constructor(private accept: number) {
    super();
  }
  override transmit(sg: ScatterList, first: number, len: number): boolean {
    if (this.accept === 0) return false;
    this.accept--;
    return super.transmit(sg, first, len);
  }
  takeAll(): void {
    this.accept = Infinity;
  }
}

test('used entries come back in the order their chains were made available (what VIRTIO_F_IN_ORDER promises), in both layouts', () => {
  for (const rig of [makeRig({ size: 32 }), makePackedRig({ size: 32 })]) {
    const layout = rig.queue.layout;
    // TX: a plain frame, a chain too short to hold one (dropped), a chained frame, an indirect
    // one, then two the sink holds back for a second burst.
    const txq = netq(rig.queue);
    const sink = new TakeSome(3);
    const plain = rig.bufBase + 0x3000;
    poke(rig, plain, HDR);
    poke(rig, plain + 12, frame(60));
    const tx: number[] = [];
    tx.push(rig.driver.addBuffer(plain, 72, false));
    tx.push(rig.driver.addBuffer(plain, 20, false));
    tx.push(addChainedFrame(rig).head);
    const table = rig.bufBase + 0x1000;
    tx.push(rig.driver.addIndirect(table, [plain, plain + 12], [12, 60], 2));
    tx.push(rig.driver.addBuffer(plain, 72, false));
    tx.push(rig.driver.addBuffer(plain, 72, false));
    rig.driver.publish();
    assert.equal(transmitBurst(txq, sink, 32), 4, `${layout}: the fifth chain is held (the sink took three frames)`);
    assert.equal(rig.driver.usedCount(), 4);
    sink.takeAll();
    assert.equal(transmitBurst(txq, sink, 32), 2);
    const txUsed: number[] = [];
    for (let h; (h = rig.driver.popUsed()) >= 0;) txUsed.push(h);
    assert.deepEqual(txUsed, tx, `${layout} TX: used ids in availability order`);
    assert.equal(txq.counters[NetCounter.drops], 1);
  }
  for (const rig of [makeRig({ size: 32 }), makePackedRig({ size: 32 })]) {
    // RX, mergeable: frames that fit one buffer (a run) around one that needs three.
    const layout = rig.queue.layout;
    const rxq = netq(rig.queue, 12, true);
    const rx: number[] = [];
    for (let i = 0; i < 8; i++) rx.push(rig.driver.addBuffer(rig.bufBase + 0x4000 + i * 0x100, 48, true));
    rig.driver.publish();
    const frames = new ScatterList(4);
    for (const len of [30, 30, 100, 30]) {
      const f = frame(len);
      frames.push(f, 0, len);
    }
    assert.equal(receiveBurst(rxq, frames), 4);
    const rxUsed: number[] = [];
    for (let h; (h = rig.driver.popUsed()) >= 0;) rxUsed.push(h);
    assert.deepEqual(rxUsed, rx.slice(0, 6), `${layout} RX: used ids in availability order`);
  }
});

function rxBuffers(rig: ReturnType<typeof makeRig>, n: number, len: number, at = rig.bufBase): number[] {
  const heads: number[] = [];
  for (let i = 0; i < n; i++) heads.push(rig.driver.addBuffer(at + i * 0x800, len, true));
  rig.driver.publish();
  return heads;
}

function oneFrame(bytes: Uint8Array): ScatterList {
  const sg = new ScatterList(4);
  sg.push(bytes, 0, bytes.length);
  return sg;
}

test('RX without MRG_RXBUF: header + frame in one chain, num_buffers 1; too big dropped, chain kept', () => {
  const rig = makeRig();
  const rxq = netq(rig.queue, 12, false);
  const heads = rxBuffers(rig, 2, 200);
  rig.bytes.fill(0xcc, rig.bufBase - GPA, rig.bufBase - GPA + 0x1000);
  const f = frame(150);
  assert.equal(receiveBurst(rxq, oneFrame(f)), 1);
  assert.equal(rig.driver.popUsed(), heads[0]);
  assert.equal(rig.driver.lastLen, 162);
  const got = peek(rig, rig.bufBase, 200);
  assert.deepEqual(got.subarray(0, 10), new Uint8Array(10));
  assert.equal(got[10] | (got[11] << 8), 1);
  assert.deepEqual(got.subarray(12, 162), f);
  assert.equal(got[162], 0xcc, 'nothing written past the frame');
  // 189 + 12 > 200: dropped, counted, the chain stays for the next frame.
  assert.equal(receiveFrame(rxq, oneFrame(frame(189)), 0, 189, false), RX_DROPPED);
  assert.equal(rxq.counters[NetCounter.drops], 1);
  assert.equal(rig.queue.lastAvailIdx, 1);
  assert.equal(receiveBurst(rxq, oneFrame(frame(188))), 1);
  assert.equal(rig.driver.popUsed(), heads[1]);
  assert.equal(rig.driver.lastLen, 200);
  // No buffers left.
  assert.equal(receiveFrame(rxq, oneFrame(f), 0, 150, false), RX_NO_ROOM);
});

test('RX runs copy 8-byte-aligned frames in 64-byte blocks and the words after them, in both layouts', () => {
  // Buffers whose frame (after the 12-byte header) starts 8-byte aligned, and source frames
  // with wide views of mixed lengths: run-fill.ts's per-frame copy (64-byte blocks, then
  // single words; frames of one length take copyAlikeFrames, tested below). Lengths
  // cover a single word, one block, a block plus a word, two blocks plus one, and the longest
  // the word copy takes; 61 is not a multiple of 8 and goes through copyPiece instead.
  assert.ok(FLOAT64_COPY_EXACT, 'this engine keeps NaN bits on Float64Array copies');
  const lens = [8, 64, 72, 136, 152, 61];
  const stride = 160;
  const backing = new Uint8Array(lens.length * stride);
  const frames = new ScatterList(lens.length);
  const wide = wideOf(backing);
  lens.forEach((len, i) => {
    backing.set(frame(len, i + 2), i * stride);
    frames.push(backing, i * stride, len, wide);
  });
  for (const rig of [makeRig(), makePackedRig()]) {
    const rxq = netq(rig.queue, 12, true);
    const at = (i: number): number => rig.bufBase + 4 + i * 0x400;
    rig.bytes.fill(0xcc, rig.bufBase - GPA, rig.bufBase - GPA + lens.length * 0x400);
    for (let i = 0; i < lens.length; i++) rig.driver.addBuffer(at(i), 12 + 200, true);
    rig.driver.publish();
    assert.equal(receiveBurst(rxq, frames), lens.length, rig.queue.layout);
    lens.forEach((len, i) => {
      assert.equal(rig.driver.popUsed(), i);
      assert.equal(rig.driver.lastLen, 12 + len);
      const got = peek(rig, at(i), 12 + len + 8);
      assert.deepEqual([...got.subarray(0, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], `${rig.queue.layout} buffer ${i}'s header`);
      assert.deepEqual(got.subarray(12, 12 + len), frame(len, i + 2), `${rig.queue.layout} frame of ${len} bytes`);
      assert.ok(got.subarray(12 + len).every((b) => b === 0xcc), `${rig.queue.layout}: nothing written past the ${len}-byte frame`);
    });
  }
});

test('RX runs copy alike frames (one length, one array, as a source gives) exact, and fall back per frame when one buffer is misaligned', () => {
  // One length per burst, from one backing array at an 8-byte stride: the uniform copy
  // (each frame's first 64 bytes, then the rest). 100 leaves 36 bytes for the second pass,
  // 152 is the longest below the builtin copy. A burst whose third buffer puts its frame
  // only 4-byte aligned must go the per-frame way and land as exact.
  assert.ok(FLOAT64_COPY_EXACT, 'this engine keeps NaN bits on Float64Array copies');
  const count = 6;
  for (const len of [64, 100, 128, 152]) {
    const stride = (len + 7) & ~7;
    const backing = new Uint8Array(count * stride);
    const frames = new ScatterList(count);
    const wide = wideOf(backing);
    for (let i = 0; i < count; i++) {
      backing.set(frame(len, i + 3), i * stride);
      frames.push(backing, i * stride, len, wide);
    }
    for (const misaligned of [-1, 2]) {
      for (const rig of [makeRig(), makePackedRig()]) {
        const where = `${rig.queue.layout}, ${len}-byte frames${misaligned < 0 ? '' : ', one buffer misaligned'}`;
        const rxq = netq(rig.queue, 12, true);
        const at = (i: number): number => rig.bufBase + (i === misaligned ? 8 : 4) + i * 0x400;
        rig.bytes.fill(0xcc, rig.bufBase - GPA, rig.bufBase - GPA + count * 0x400);
        for (let i = 0; i < count; i++) rig.driver.addBuffer(at(i), 12 + 200, true);
        rig.driver.publish();
        assert.equal(receiveBurst(rxq, frames), count, where);
        assert.equal(rxq.counters[NetCounter.bytes], count * len, where);
        for (let i = 0; i < count; i++) {
          assert.equal(rig.driver.popUsed(), i, where);
          assert.equal(rig.driver.lastLen, 12 + len, where);
          const got = peek(rig, at(i), 12 + len + 8);
          assert.deepEqual([...got.subarray(0, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], `${where}: buffer ${i}'s header`);
          assert.deepEqual(got.subarray(12, 12 + len), frame(len, i + 3), `${where}: frame ${i}`);
          assert.ok(got.subarray(12 + len).every((b) => b === 0xcc), `${where}: nothing written past frame ${i}`);
        }
      }
    }
  }
});

test('RX with a header from the endpoint (a tap\'s receive offloads): its 10 bytes reach the guest, num_buffers ours, in every layout', () => {
  const offload = Uint8Array.from([1, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0, 0xee, 0xee]); // NEEDS_CSUM, TCPv4, num_buffers junk
  // One buffer.
  const rig = makeRig();
  const rxq = netq(rig.queue, 12, false);
  rxBuffers(rig, 1, 200);
  rxq.rxHeader = offload;
  assert.equal(receiveFrame(rxq, oneFrame(frame(100)), 0, 100, false), RX_DONE);
  const got = peek(rig, rig.bufBase, 112);
  assert.deepEqual(got.subarray(0, 10), offload.subarray(0, 10));
  assert.equal(got[10] | (got[11] << 8), 1);
  assert.deepEqual(got.subarray(12), frame(100));
  // Mergeable, over three chains.
  const rig2 = makeRig();
  const rxq2 = netq(rig2.queue, 12, true);
  rxBuffers(rig2, 4, 48);
  rxq2.rxHeader = offload;
  assert.equal(receiveFrame(rxq2, oneFrame(frame(100)), 0, 100, false), RX_DONE);
  const first = peek(rig2, rig2.bufBase, 12);
  assert.deepEqual(first.subarray(0, 10), offload.subarray(0, 10));
  assert.equal(first[10] | (first[11] << 8), 3);
  // The header split over a 5-byte chain and the next.
  const rig3 = makeRig();
  const rxq3 = netq(rig3.queue, 12, true);
  rig3.driver.addBuffer(rig3.bufBase, 5, true);
  rig3.driver.addBuffer(rig3.bufBase + 0x100, 100, true);
  rig3.driver.publish();
  rxq3.rxHeader = offload;
  assert.equal(receiveFrame(rxq3, oneFrame(frame(30)), 0, 30, false), RX_DONE);
  const split = new Uint8Array([...peek(rig3, rig3.bufBase, 5), ...peek(rig3, rig3.bufBase + 0x100, 7)]);
  assert.deepEqual(split.subarray(0, 10), offload.subarray(0, 10));
  assert.equal(split[10] | (split[11] << 8), 2);
});

test('RX legacy 10-byte header', () => {
  const rig = makeRig();
  const rxq = netq(rig.queue, 10, false);
  rxBuffers(rig, 1, 100);
  rig.bytes.fill(0xcc, rig.bufBase - GPA, rig.bufBase - GPA + 100);
  assert.equal(receiveBurst(rxq, oneFrame(frame(60))), 1);
  rig.driver.popUsed();
  assert.equal(rig.driver.lastLen, 70);
  assert.deepEqual(peek(rig, rig.bufBase, 10), new Uint8Array(10));
  assert.deepEqual(peek(rig, rig.bufBase + 10, 60), frame(60));
});

test('RX with MRG_RXBUF: frame spread over chains, num_buffers and used lens exact', () => {
  const rig = makeRig();
  const rxq = netq(rig.queue, 12, true);
  const heads = rxBuffers(rig, 6, 32);
  const f = frame(100);
  assert.equal(receiveBurst(rxq, oneFrame(f)), 1);
  const used: [number, number][] = [];
  for (let h; (h = rig.driver.popUsed()) >= 0;) used.push([h, rig.driver.lastLen]);
  assert.deepEqual(used, [[heads[0], 32], [heads[1], 32], [heads[2], 32], [heads[3], 16]]);
  const first = peek(rig, rig.bufBase, 32);
  assert.equal(first[10] | (first[11] << 8), 4);
  const out = new Uint8Array(100);
  out.set(first.subarray(12), 0);
  out.set(peek(rig, rig.bufBase + 0x800, 32), 20);
  out.set(peek(rig, rig.bufBase + 0x1000, 32), 52);
  out.set(peek(rig, rig.bufBase + 0x1800, 16), 84);
  assert.deepEqual(out, f);
  // Needs 4 chains, only 2 left: no room, nothing consumed.
  assert.equal(receiveFrame(rxq, oneFrame(f), 0, 100, false), RX_NO_ROOM);
  assert.equal(rig.queue.lastAvailIdx, 4);
  // Header split over a 5-byte chain and the next one.
  const rig2 = makeRig();
  const rxq2 = netq(rig2.queue, 12, true);
  rig2.driver.addBuffer(rig2.bufBase, 5, true);
  rig2.driver.addBuffer(rig2.bufBase + 0x100, 100, true);
  rig2.driver.publish();
  assert.equal(receiveBurst(rxq2, oneFrame(frame(30))), 1);
  const b0 = peek(rig2, rig2.bufBase, 5);
  const b1 = peek(rig2, rig2.bufBase + 0x100, 37);
  assert.deepEqual(b0, new Uint8Array(5));
  assert.deepEqual(b1.subarray(0, 7), new Uint8Array([0, 0, 0, 0, 0, 2, 0]));
  assert.deepEqual(b1.subarray(7), frame(30));
});

test('loopback: TX frame comes back on RX with MACs swapped; backpressure keeps TX chains', () => {
  const tx = makeRig({ size: 16 });
  const rx = makeRig({ size: 16, ringOffset: 0x40000, memory: { memory: tx.memory, region: tx.region } });
  const txq = netq(tx.queue, 12, false);
  const rxq = netq(rx.queue, 12, false);
  const lo = new LoopbackEndpoint(rxq);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 3; i++) {
    const f = frame(64, i);
    frames.push(f);
    const a = tx.bufBase + i * 0x100;
    poke(tx, a, HDR);
    poke(tx, a + 12, f);
    tx.driver.addChain([a, a + 12], [12, 64], 2);
  }
  tx.driver.publish();
  const rxBase = 0x80000 + GPA;
  rx.driver.addBuffer(rxBase, 2048, true);
  rx.driver.publish();
  // Only one RX buffer: the first frame goes through, then backpressure.
  assert.equal(transmitBurst(txq, lo, 32), 1);
  assert.equal(tx.queue.lastAvailIdx, 1);
  assert.equal(tx.driver.usedCount(), 1);
  assert.equal(rx.driver.popUsed(), 0);
  assert.equal(rx.driver.lastLen, 76);
  assert.equal(txq.counters[NetCounter.held], 1, 'the refused frame is counted as held');
  const got = peek(rx, rxBase + 12, 64);
  const want = frames[0].slice();
  want.set(frames[0].subarray(6, 12), 0);
  want.set(frames[0].subarray(0, 6), 6);
  assert.deepEqual(got, want);
  assert.equal(rxq.interruptPending, true);
  // More RX buffers: the rest flows, nothing lost; MAC pairs split across pieces too.
  rx.driver.addChain([rxBase + 0x1000, rxBase + 0x1000 + 20], [20, 1000], 0);
  rx.driver.addBuffer(rxBase + 0x2000, 2048, true);
  rx.driver.publish();
  assert.equal(transmitBurst(txq, lo, 32), 2);
  assert.equal(rx.driver.popUsed() >= 0, true);
  const g1 = new Uint8Array(64);
  g1.set(peek(rx, rxBase + 0x1000 + 12, 8), 0);
  g1.set(peek(rx, rxBase + 0x1000 + 20, 56), 8);
  const w1 = frames[1].slice();
  w1.set(frames[1].subarray(6, 12), 0);
  w1.set(frames[1].subarray(0, 6), 6);
  assert.deepEqual(g1, w1);
  assert.equal(rxq.counters[NetCounter.packets], 3);
  assert.equal(txq.counters[NetCounter.packets], 3);
  assert.equal(rxq.counters[NetCounter.drops], 0);
  assert.equal(txq.counters[NetCounter.held], 1);
});

test('loopback with whenFull drop: frames RX has no room for are consumed and counted as RX drops, never held', () => {
  const tx = makeRig({ size: 16 });
  const rx = makeRig({ size: 16, ringOffset: 0x40000, memory: { memory: tx.memory, region: tx.region } });
  const txq = netq(tx.queue, 12, false);
  const rxq = netq(rx.queue, 12, false);
  const lo = new LoopbackEndpoint(rxq, 'drop');
  for (let i = 0; i < 4; i++) {
    const a = tx.bufBase + i * 0x100;
    poke(tx, a, HDR);
    poke(tx, a + 12, frame(64, i));
    tx.driver.addChain([a, a + 12], [12, 64], 2);
  }
  tx.driver.publish();
  rx.driver.addBuffer(0x80000 + GPA, 2048, true);
  rx.driver.publish();
  assert.equal(transmitBurst(txq, lo, 32), 4, 'every TX chain is consumed');
  assert.equal(tx.driver.usedCount(), 4);
  assert.equal(rxq.counters[NetCounter.packets], 1);
  assert.equal(rxq.counters[NetCounter.drops], 3);
  assert.equal(txq.counters[NetCounter.held], 0);
});

test('sink counts, source fills RX with sequence-numbered frames and whole headers over whatever the buffers held', () => {
  const rig = makeRig();
  const sink = new SinkEndpoint();
  poke(rig, rig.bufBase, HDR);
  rig.driver.addBuffer(rig.bufBase, 12 + 64, false);
  rig.driver.publish();
  assert.equal(transmitBurst(netq(rig.queue), sink, 32), 1);
  assert.equal(sink.frames, 1);
  assert.equal(sink.bytes, 64);

  const rx = makeRig();
  const rxq = netq(rx.queue, 12, true);
  const src = new SourceEndpoint(rxq, { frameSize: 64 });
  rxBuffers(rx, 3, 2048);
  // Headers are stored only where they differ: junk must still be overwritten, and a buffer
  // that already holds the header (the second) keeps it.
  rx.bytes.fill(0xcc, rx.bufBase - GPA, rx.bufBase - GPA + 3 * 0x800);
  rx.bytes.fill(0, rx.bufBase - GPA + 0x800, rx.bufBase - GPA + 0x800 + 12);
  rx.bytes[rx.bufBase - GPA + 0x800 + 10] = 1;
  assert.equal(src.poll(10), 3);
  for (let i = 0; i < 3; i++) {
    assert.equal(rx.driver.popUsed(), i);
    assert.equal(rx.driver.lastLen, 76);
    assert.deepEqual([...peek(rx, rx.bufBase + i * 0x800, 12)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], `buffer ${i}'s header`);
    const f = peek(rx, rx.bufBase + i * 0x800 + 12, 64);
    assert.equal(f[12], 0x08);
    assert.equal((f[SOURCE_SEQ_OFFSET + 2] << 8) | f[SOURCE_SEQ_OFFSET + 3], i);
  }
  assert.equal(rxq.counters[NetCounter.packets], 3);
  assert.equal(receiveFrame(rxq, oneFrame(frame(64)), 0, 64, false), RX_NO_ROOM);
  void RX_DONE;
});

// Stream framing: the same messages (and fd attachment) however the stream is cut.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FrontendRequest as F, MAX_PAYLOAD, MessageFramer, ProtocolError, decodeMessage } from '../../src/protocol/index.js';
import { b, frame } from './bytes.js';
import { P } from './fixtures.js';

/** A realistic start-up sequence; the fds ride on the first byte of their message. */
const MESSAGES: { bytes: Uint8Array; fds: number[] }[] = [
  { bytes: frame(F.SET_OWNER, 1, P.none()[0]), fds: [] },
  { bytes: frame(F.GET_FEATURES, 1, P.none()[0]), fds: [] },
  { bytes: frame(F.SET_MEM_TABLE, 1, P.memTable(2)[0]), fds: [30, 31] },
  { bytes: frame(F.SET_VRING_NUM, 1, P.state(0, 256)[0]), fds: [] },
  { bytes: frame(F.SET_VRING_KICK, 1, P.u64(0n)[0]), fds: [32] },
  { bytes: frame(F.SET_CONFIG, 9, P.config(256)[0]), fds: [] },
  { bytes: frame(F.SET_VRING_CALL, 1, P.u64(0n)[0]), fds: [33] },
];
const STREAM = b();
MESSAGES.forEach((m) => STREAM.raw(m.bytes));
const BYTES = STREAM.build();
const STARTS = MESSAGES.reduce<number[]>((acc, m, i) => [...acc, i === 0 ? 0 : acc[i - 1]! + MESSAGES[i - 1]!.bytes.length], []);

/**
 * Feeds BYTES in chunks of `size`; a chunk carries the fds of every message starting inside it.
 * `views`: as a relay reads, each chunk into the same buffer, through pushView(); frames that
 * are views of that buffer are counted, and copied before the buffer is written again.
 */
function feed(size: number, views?: { count: number }): { bytes: Uint8Array; fds: number[] }[] {
  const framer = new MessageFramer();
  const readBuffer = new Uint8Array(BYTES.length);
  const out: { bytes: Uint8Array; fds: number[] }[] = [];
  for (let at = 0; at < BYTES.length; at += size) {
    const end = Math.min(at + size, BYTES.length);
    // A real recvmsg never mixes two sendmsg's ancillary data with the bytes before them,
    // so only a chunk that starts a message carries fds; split the chunk at message starts.
    const cuts = [at, ...STARTS.filter((s) => s > at && s < end), end];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const idx = STARTS.indexOf(cuts[i]!);
      const fds = idx >= 0 ? MESSAGES[idx]!.fds : [];
      if (!views) {
        framer.push(BYTES.subarray(cuts[i]!, cuts[i + 1]!), fds);
        for (let f = framer.next(); f; f = framer.next()) out.push(f);
        continue;
      }
      readBuffer.fill(0xee); // whatever a view still showed of the last read is gone
      readBuffer.set(BYTES.subarray(cuts[i]!, cuts[i + 1]!));
      framer.pushView(readBuffer.subarray(0, cuts[i + 1]! - cuts[i]!), fds);
      for (let f = framer.next(); f; f = framer.next()) {
        if (f.bytes.buffer === readBuffer.buffer) views.count++;
        out.push({ bytes: f.bytes.slice(), fds: f.fds });
      }
    }
  }
  assert.equal(framer.bufferedBytes, 0);
  return out;
}

describe('MessageFramer', () => {
  it('splits the stream the same way at every chunk size', () => {
    for (let size = 1; size <= BYTES.length; size++) {
      const frames = feed(size);
      assert.deepEqual(frames, MESSAGES, `chunk size ${size}`);
    }
  });

  it('pushView: the same frames and fds at every chunk size; whole messages of a read are views of it, nothing else is', () => {
    for (let size = 1; size <= BYTES.length; size++) {
      const views = { count: 0 };
      assert.deepEqual(feed(size, views), MESSAGES, `chunk size ${size}`);
      if (size === BYTES.length) assert.equal(views.count, MESSAGES.length, 'one read of everything: every message a view');
      if (size < 12) assert.equal(views.count, 0, 'reads smaller than a header: every message copied');
    }
  });

  it('a refused header after whole messages in the same chunk: those stay to be taken, only the header counts as buffered', () => {
    for (const pushWith of ['push', 'pushView'] as const) {
      const framer = new MessageFramer();
      const bad = b().u32(F.SET_CONFIG).u32(1).u32(MAX_PAYLOAD + 1).build();
      const chunk = new Uint8Array(MESSAGES[0]!.bytes.length + MESSAGES[1]!.bytes.length + bad.length);
      chunk.set(MESSAGES[0]!.bytes, 0);
      chunk.set(MESSAGES[1]!.bytes, MESSAGES[0]!.bytes.length);
      chunk.set(bad, chunk.length - bad.length);
      if (pushWith === 'push') framer.push(chunk.subarray(0, 1)); // a byte held: push's path, not the view's
      assert.throws(() => framer[pushWith](pushWith === 'push' ? chunk.subarray(1) : chunk), ProtocolError);
      if (pushWith === 'push') assert.equal(framer.bufferedBytes, chunk.length, pushWith);
      else assert.equal(framer.bufferedBytes, MESSAGES[0]!.bytes.length + MESSAGES[1]!.bytes.length, pushWith);
      assert.deepEqual(framer.next()?.bytes, MESSAGES[0]!.bytes, pushWith);
      assert.deepEqual(framer.next()?.bytes, MESSAGES[1]!.bytes, pushWith);
      assert.equal(framer.bufferedBytes, pushWith === 'push' ? bad.length : 0, pushWith);
    }
  });

  it('pushView refuses a header announcing more than MAX_PAYLOAD, as push does', () => {
    const framer = new MessageFramer();
    assert.throws(() => framer.pushView(b().u32(F.SET_CONFIG).u32(1).u32(MAX_PAYLOAD + 1).build(), [91]),
      (err: unknown) => err instanceof ProtocolError && err.code === 'PAYLOAD_TOO_LARGE');
    assert.throws(() => framer.pushView(new Uint8Array(1)), ProtocolError);
    assert.deepEqual(framer.takeFds(), [91]);
  });

  it('splits the stream the same way at every single cut point', () => {
    for (let cut = 0; cut <= BYTES.length; cut++) {
      const framer = new MessageFramer();
      framer.push(BYTES.subarray(0, cut));
      framer.push(BYTES.subarray(cut));
      const frames = [];
      for (let f = framer.next(); f; f = framer.next()) frames.push(f.bytes);
      assert.deepEqual(frames, MESSAGES.map((m) => m.bytes), `cut at ${cut}`);
    }
  });

  it('frames decode as the messages that went in', () => {
    const framer = new MessageFramer();
    framer.push(MESSAGES[2]!.bytes, [30, 31]);
    const f = framer.next()!;
    const msg = decodeMessage('frontend', f.bytes, f.fds);
    assert.equal(msg.name, 'SET_MEM_TABLE');
    assert.deepEqual(msg.fds, [30, 31]);
  });

  it('fds of a read that merged several sends belong to the last message (Linux stops after the send with fds)', () => {
    const framer = new MessageFramer();
    const first = MESSAGES[1]!.bytes; // GET_FEATURES, no fd
    const second = MESSAGES[6]!.bytes; // SET_VRING_CALL + fd
    const merged = new Uint8Array(first.length + second.length);
    merged.set(first, 0);
    merged.set(second, first.length);
    framer.push(merged, [41]);
    assert.deepEqual(framer.next()?.fds, []);
    assert.deepEqual(framer.next()?.fds, [41]);
  });

  it('fds arriving mid-message attach to the message in progress', () => {
    const framer = new MessageFramer();
    const m = MESSAGES[4]!.bytes;
    framer.push(m.subarray(0, 5));
    framer.push(m.subarray(5), [77]);
    assert.deepEqual(framer.next(), { bytes: m, fds: [77] });
    // fds with an empty chunk attach to the next byte's message.
    framer.push(new Uint8Array(0), [78]);
    framer.push(m);
    assert.deepEqual(framer.next()?.fds, [78]);
  });

  it('reports buffered bytes until next() hands them out', () => {
    const framer = new MessageFramer();
    framer.push(BYTES.subarray(0, 20));
    assert.equal(framer.bufferedBytes, 20);
    assert.ok(framer.next());
    assert.equal(framer.bufferedBytes, 8);
    assert.equal(framer.next(), null);
  });

  it('refuses a header announcing more than MAX_PAYLOAD before buffering it', () => {
    const framer = new MessageFramer();
    framer.push(b().u32(F.SET_CONFIG).u32(1).build(), [90]);
    const tooBig = () => framer.push(b().u32(MAX_PAYLOAD + 1).build());
    assert.throws(tooBig, (err: unknown) => err instanceof ProtocolError && err.code === 'PAYLOAD_TOO_LARGE' && err.field === 'size');
    // The framer stays failed, and hands back the fds it still holds so the caller can close them.
    assert.throws(() => framer.push(new Uint8Array(1)), ProtocolError);
    assert.deepEqual(framer.takeFds(), [90]);
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrontendRequest, IotlbType, encodeMessage } from '../../src/protocol/index.js';
import { closeFd, eventfdCreate, openFdCount, receiveMessage, sendMessage, socketPair } from '../../src/sys/index.js';
import { Relay, type RelaySink } from '../../src/trace/relay.js';

const update = (i: number): Uint8Array => encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, body: { kind: 'iotlb',
  iova: BigInt(i) * 4096n, size: 4096n, userAddr: 0x7f0000000000n + BigInt(i) * 4096n, perm: 3, iotlbType: IotlbType.UPDATE } });

/** Reads what `fd` holds now: total bytes, and whether the peer closed. */
function drain(fd: number): { bytes: number; eof: boolean } {
  const buf = new Uint8Array(65536);
  let bytes = 0;
  for (;;) {
    let got;
    try {
      got = receiveMessage(fd, buf);
    } catch {
      return { bytes, eof: true }; // ECONNRESET: closed with our data unread
    }
    if (got === null) return { bytes, eof: false };
    if (got.bytes === 0) return { bytes, eof: true };
    bytes += got.bytes;
  }
}

test('a fault on the send-retry path closes that connection and its fds; the others go on', () => {
  let failRecords = false;
  const closes: Array<{ id: number; reason: string }> = [];
  const sink: RelaySink = {
    record: () => {
      if (failRecords) throw new Error('injected sink fault');
    },
    closed: (id, reason) => closes.push({ id, reason }),
    log: () => {},
  };
  const wake = eventfdCreate();
  const [front, relayFront] = socketPair();
  const [back, relayBack] = socketPair();
  const [front2, relayFront2] = socketPair();
  const [back2, relayBack2] = socketPair();
  const relay = new Relay(sink, 10_000, wake);
  relay.add(0, relayFront, relayBack);
  relay.add(1, relayFront2, relayBack2);
  try {
    // The back-end of connection 0 reads nothing: the relay queues, pauses the front-end and
    // schedules a send retry.
    for (let i = 0; relay.backlogs === 0; i++) {
      assert.ok(i < 100_000, 'the relay never backed up');
      if (sendMessage(front, update(i)) < 0) relay.poll();
      else if (i % 16 === 15) relay.poll();
    }
    failRecords = true;
    sendMessage(front, update(1)); // read once the backlog clears, on the retry path
    drain(back);
    const before = openFdCount();
    for (let i = 0; i < 50 && closes.length === 0; i++) relay.poll(); // throws without the guard
    assert.equal(closes.length, 1, 'the faulty connection was closed');
    assert.equal(closes[0]!.id, 0);
    assert.match(closes[0]!.reason, /relay error: .*injected sink fault/s);
    assert.equal(openFdCount(), before - 2, 'the relay closed both of its sockets of that connection');
    assert.equal(drain(front).eof, true, 'the front-end sees the close');
    assert.equal(relay.size, 1);

    failRecords = false;
    const message = update(7);
    assert.equal(sendMessage(front2, message), message.length);
    let moved = 0;
    for (let i = 0; i < 50 && moved === 0; i++) {
      relay.poll();
      moved = drain(back2).bytes;
    }
    assert.equal(moved, message.length, 'the other connection still relays');
  } finally {
    relay.closeAll('test over');
    for (const fd of [front, back, front2, back2, wake]) closeFd(fd);
  }
});

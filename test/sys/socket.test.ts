import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  acceptUnix,
  closeFd,
  connectUnix,
  eventfdCreate,
  fdKind,
  listenUnix,
  mapFd,
  memfdCreate,
  openFdCount,
  readFd,
  receiveMessage,
  sendMessage,
  socketPair,
  unmap,
  writeFd,
  writevFd,
} from '../../src/sys/index.js';

function socketPath(): string {
  return join(tmpdir(), `vit-${process.pid}-${Math.random().toString(36).slice(2, 10)}.sock`);
}

test('a memfd passed over a socket pair is shared memory at both ends, both directions', () => {
  const [a, b] = socketPair();
  const memfd = memfdCreate('vit-shared', 8192);
  assert.equal(sendMessage(a, new Uint8Array([0x42]), [memfd]), 1);
  const into = new Uint8Array(4);
  const got = receiveMessage(b, into);
  assert.ok(got);
  assert.equal(got.bytes, 1);
  assert.equal(into[0], 0x42);
  assert.equal(got.fds.length, 1);
  const passed = got.fds[0]!;
  assert.notEqual(passed, memfd);
  assert.deepEqual(fdKind(passed), { kind: 'memfd', size: 8192 });

  const sender = new Uint8Array(mapFd(memfd, 0, 8192));
  const receiver = new Uint8Array(mapFd(passed, 4096, 4096));
  sender[4096 + 10] = 0xab;
  assert.equal(receiver[10], 0xab);
  receiver[4095] = 0xcd;
  assert.equal(sender[8191], 0xcd);

  unmap(sender.buffer as ArrayBuffer);
  unmap(receiver.buffer as ArrayBuffer);
  for (const fd of [a, b, memfd, passed]) closeFd(fd);
});

test('10,000 messages with 1-3 fds each leave the open fd count unchanged', () => {
  const before = openFdCount();
  const [a, b] = socketPair();
  const pool = [eventfdCreate(), eventfdCreate(), eventfdCreate()];
  const header = new Uint8Array(4);
  const into = new Uint8Array(4);
  const batch = 64; // keep in-flight fds well under the kernel's per-user limit
  let sent = 0;
  while (sent < 10_000) {
    const n = Math.min(batch, 10_000 - sent);
    for (let i = 0; i < n; i++) {
      const count = ((sent + i) % 3) + 1;
      new DataView(header.buffer).setUint32(0, count, true);
      assert.equal(sendMessage(a, header, pool.slice(0, count)), 4);
    }
    for (let i = 0; i < n; i++) {
      const got = receiveMessage(b, into, 0, 4);
      assert.ok(got);
      assert.equal(got.bytes, 4);
      assert.equal(got.fds.length, new DataView(into.buffer).getUint32(0, true));
      if ((sent + i) % 1000 === 0) assert.equal(fdKind(got.fds[0]!).kind, 'eventfd');
      for (const fd of got.fds) closeFd(fd);
    }
    sent += n;
  }
  assert.equal(receiveMessage(b, into), null, 'nothing left: EAGAIN is null');
  for (const fd of [a, b, ...pool]) closeFd(fd);
  assert.equal(openFdCount(), before);
});

test('truncated ancillary data closes every fd that arrived and throws ECTRUNC', () => {
  const [a, b] = socketPair();
  const sentFds = [eventfdCreate(), eventfdCreate(), eventfdCreate(), eventfdCreate()];
  const start = openFdCount();
  for (const maxFds of [1, 0]) {
    assert.equal(sendMessage(a, new Uint8Array([1, 2]), sentFds), 2);
    assert.throws(
      () => receiveMessage(b, new Uint8Array(8), 0, 8, maxFds),
      (error: NodeJS.ErrnoException & { bytes?: number }) => {
        assert.equal(error.code, 'ECTRUNC');
        assert.equal(error.syscall, 'recvmsg');
        assert.equal(error.bytes, 2);
        return true;
      },
    );
    assert.equal(openFdCount(), start, `maxFds=${maxFds}: no received fd leaked`);
  }
  // Eight fds fit the default room exactly.
  const eight = [...sentFds, ...sentFds];
  assert.equal(sendMessage(a, new Uint8Array([3]), eight), 1);
  const got = receiveMessage(b, new Uint8Array(1));
  assert.equal(got?.fds.length, 8);
  for (const fd of got!.fds) closeFd(fd);
  for (const fd of [a, b, ...sentFds]) closeFd(fd);
});

test('sendMessage rejects more than 8 fds before the syscall, and reports EBADF', () => {
  const [a, b] = socketPair();
  const efd = eventfdCreate();
  assert.throws(
    () => sendMessage(a, new Uint8Array(1), new Array(9).fill(efd)),
    (error: NodeJS.ErrnoException) => error instanceof RangeError && error.code === 'EINVAL' && error.syscall === 'sendmsg',
  );
  assert.equal(receiveMessage(b, new Uint8Array(4)), null, 'nothing was sent');
  assert.throws(() => receiveMessage(b, new Uint8Array(4), 4), RangeError, 'an empty window would look like EOF');
  assert.throws(() => receiveMessage(b, new Uint8Array(4), 0, 5), RangeError);
  assert.throws(() => sendMessage(a, new Uint8Array(0), [efd]), RangeError);
  assert.throws(() => sendMessage(a, new Uint8Array(1), [-1]), RangeError);
  assert.throws(() => sendMessage(a, 'x' as unknown as Uint8Array), TypeError);

  closeFd(a);
  assert.throws(
    () => sendMessage(a, new Uint8Array([1]), [efd]),
    (error: NodeJS.ErrnoException) => {
      assert.equal(error.code, 'EBADF');
      assert.equal(error.errno, 9);
      assert.equal(error.syscall, 'sendmsg');
      assert.match(error.message, /^sendmsg: Bad file descriptor \(EBADF\)$/);
      return true;
    },
  );
  closeFd(b);
  closeFd(efd);
  assert.throws(() => closeFd(efd), { code: 'EBADF', syscall: 'close' });
});

test('sendMessage returns -1 once the socket buffer is full', () => {
  const [a, b] = socketPair();
  const chunk = new Uint8Array(65536);
  let result = 0;
  for (let i = 0; i < 10_000 && result !== -1; i++) result = sendMessage(a, chunk);
  assert.equal(result, -1);
  closeFd(a);
  // Draining the peer ends in EOF (bytes 0).
  const into = new Uint8Array(65536);
  let got = receiveMessage(b, into);
  while (got !== null && got.bytes > 0) got = receiveMessage(b, into);
  assert.deepEqual(got, { bytes: 0, fds: [] });
  closeFd(b);
});

test('listen/connect/accept round trip on a path in tmpdir', () => {
  const path = socketPath();
  const listener = listenUnix(path);
  try {
    assert.equal(acceptUnix(listener), -1, 'nothing pending');
    const client = connectUnix(path);
    const server = acceptUnix(listener);
    assert.ok(server >= 0);
    assert.equal(fdKind(server).kind, 'socket');
    assert.equal(writeFd(client, new TextEncoder().encode('ping'), 0, 4), 4);
    const into = new Uint8Array(8);
    assert.equal(readFd(server, into, 2, 6), 4);
    assert.equal(new TextDecoder().decode(into.subarray(2, 6)), 'ping');
    assert.equal(readFd(server, into, 0, 8), -1, 'nonblocking: EAGAIN is -1');
    assert.equal(writeFd(server, into, 2, 4), 4);
    assert.equal(readFd(client, into, 0, 8), 4);
    closeFd(client);
    assert.equal(readFd(server, into, 0, 8), 0, 'EOF');
    closeFd(server);

    assert.throws(() => listenUnix(path), { code: 'EADDRINUSE' }, 'a live listener is not replaced');
  } finally {
    closeFd(listener);
  }
  assert.throws(() => connectUnix(path), { code: 'ECONNREFUSED', syscall: 'connect' });
  const again = listenUnix(path); // the stale socket file is removed first
  closeFd(again);
  unlinkSync(path);
  assert.throws(() => connectUnix(path), { code: 'ENOENT' });
});

test('listenUnix never removes a file that is not a socket', () => {
  const path = socketPath();
  writeFileSync(path, 'keep me');
  try {
    assert.throws(() => listenUnix(path), { code: 'EADDRINUSE', syscall: 'bind' });
    assert.ok(existsSync(path));
  } finally {
    unlinkSync(path);
  }
  assert.throws(() => listenUnix('x'.repeat(200)), RangeError);
});

test('writevFd sends a head then a range of scatter-list pieces in one write, checking every piece', () => {
  const [a, b] = socketPair();
  try {
    const enc = new TextEncoder();
    const memory = enc.encode('..guest memory..');
    const other = enc.encode('xyz');
    const pieces = [other, memory, other, memory];
    const offsets = new Uint32Array([0, 2, 1, 8]);
    const lengths = new Uint32Array([3, 5, 2, 6]);
    const head = enc.encode('HDR!');
    // Pieces 1..3: "guest" + "yz" + "memory", behind the first 3 bytes of the head.
    assert.equal(writevFd(a, head, 3, pieces, offsets, lengths, 1, 4), 3 + 5 + 2 + 6);
    const into = new Uint8Array(32);
    const n = receiveMessage(b, into)!.bytes;
    assert.equal(new TextDecoder().decode(into.subarray(0, n)), 'HDRguestyzmemory');
    // An empty range sends the head alone.
    assert.equal(writevFd(a, head, 4, pieces, offsets, lengths, 2, 2), 4);
    assert.equal(receiveMessage(b, into)!.bytes, 4);
    // A piece that runs past its array, a range past the lists, a head longer than its array: refused, nothing sent.
    assert.throws(() => writevFd(a, head, 0, pieces, offsets, new Uint32Array([3, 5, 2, 9]), 0, 4), /piece 3 runs past its array/);
    assert.throws(() => writevFd(a, head, 0, pieces, offsets, lengths, 0, 5), RangeError);
    assert.throws(() => writevFd(a, head, 5, pieces, offsets, lengths, 0, 1), RangeError);
    assert.throws(() => writevFd(a, head, 0, [other, 'no' as unknown as Uint8Array], offsets, lengths, 0, 2), /piece 1 is not a Uint8Array/);
    assert.equal(receiveMessage(b, into), null, 'nothing was sent by the refused calls');
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

// A hostile front-end against the REAL serve process: every request a malicious or broken
// front-end can send in the wrong state, with the wrong sizes, indexes or fds. serve must
// answer clearly (a REPLY_ACK failure, or closing that one connection), never crash, never
// keep an fd it was not meant to keep — and then serve the next, well-behaved front-end.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FrontendRequest as F, IotlbType, MAX_PAYLOAD, type MemoryRegion, type VhostMessage } from '../../src/protocol/index.js';
import { eventfdWrite } from '../../src/sys/index.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE } from '../../src/virtqueue/split.js';
import { VirtioFeature } from '../../src/protocol/features.js';
import { PackedDriver, layoutPacked, type PackedLayout } from '../support/frontend/packed-driver.js';
import { startServe, type ServeProcess } from '../support/serve.js';
import {
  GUEST, HostileFrontend, SharedGuestMemory, closeFds, expectFdsBack, expectServing, fdCountOf, makeFds, rawMessage,
  setupLoopback, testFeatures, waitFor,
} from '../support/hostile-frontend.js';

const u64 = (value: bigint | number) => ({ kind: 'u64' as const, value: BigInt(value) });
const state = (index: number, num: number) => ({ kind: 'vringState' as const, index, num });
const region = (guestAddr: bigint, size: bigint, userAddr: bigint, mmapOffset = 0n): MemoryRegion => ({ guestAddr, size, userAddr, mmapOffset });

describe('hostile front-end against serve', () => {
  let serve: ServeProcess;
  let pid: number;
  /** serve's fd count with no front-end connected. */
  let idleFds: number;

  before(async () => {
    serve = await startServe(['--net', 'loopback', '--queues', '1']);
    pid = serve.child.pid!;
    await expectServing(serve.socket); // warm up: the first worker start loads code
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    idleFds = fdCountOf(pid);
  });

  after(async () => {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.signal, null, lines.slice(-20).join('\n'));
    assert.equal(exit.code, 0, `serve exited with ${exit.code}:\n${lines.slice(-20).join('\n')}`);
  });

  /** Connections a test opened: closed after it, pass or fail, so one failure cannot block the next test. */
  const open: HostileFrontend[] = [];
  afterEach(() => {
    for (const fe of open.splice(0)) fe.close();
  });

  async function connect(): Promise<HostileFrontend> {
    const fe = await HostileFrontend.connect(serve.socket);
    open.push(fe);
    return fe;
  }

  /** A negotiated connection (REPLY_ACK on); the test closes it. */
  async function negotiated(opts: { iommu?: boolean } = {}): Promise<HostileFrontend> {
    const fe = await connect();
    await fe.negotiate({ features: testFeatures(opts) });
    return fe;
  }

  async function done(fe: HostileFrontend, what: string): Promise<void> {
    fe.close();
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    await expectFdsBack(pid, idleFds, what);
    assert.equal(serve.child.exitCode, null, 'serve is still running');
  }

  /**
   * Breaks the TX ring (vring 1) of a started pair with `post` and a kick, then checks what a
   * hostile chain must leave: the ring stopped with `field` named, the RX ring untouched, the
   * connection still answering, every fd back once it closes, and serve passing frames.
   */
  async function expectTxRingBroken(
    rig: { fe: HostileFrontend; txKick: number; dispose(): void }, post: () => void, field: RegExp, what: string,
    negotiated: (features: string[]) => void = () => {},
  ): Promise<void> {
    try {
      post();
      eventfdWrite(rig.txKick, 1);
      const reason = await waitFor('ring 1 broken', async () => (await serve.state()).queues[1]!.broken);
      assert.match(reason, field);
      const s = await serve.state();
      negotiated(s.features.names);
      assert.equal(s.queues[1]!.running, false, 'the broken ring stopped');
      assert.equal(s.queues[0]!.broken, null, 'the other ring is unaffected');
      // The connection itself goes on: GET_VRING_BASE stops the broken ring and clears it.
      const reply = await rig.fe.call(F.GET_VRING_BASE, state(1, 0), { needsReply: false });
      assert.equal(reply?.body.kind, 'vringState');
    } finally {
      rig.dispose();
    }
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    await expectFdsBack(pid, idleFds, what);
    await expectServing(serve.socket);
  }

  describe('requests in the wrong state', () => {
    it('SET_MEM_TABLE before SET_OWNER is refused and its fd closed', async () => {
      const fe = await connect();
      await fe.send(F.SET_FEATURES, u64(testFeatures()));
      await fe.send(F.SET_PROTOCOL_FEATURES, u64(1n << 3n)); // REPLY_ACK
      const mem = new SharedGuestMemory(1 << 16);
      const before = fdCountOf(pid);
      assert.equal(await fe.setMemTable([region(0n, 1n << 16n, 0x7f0000000000n)], [mem.fd]), 1n);
      await expectFdsBack(pid, before, 'refused memory table');
      mem.dispose();
      await done(fe, 'SET_MEM_TABLE before SET_OWNER');
    });

    it('SET_VRING_ADDR before SET_MEM_TABLE is kept, and the ring starts once memory arrives', async () => {
      // Ring addresses are only translated when the ring starts, so the order is harmless —
      // but a ring kicked and enabled before any memory must start when the table comes.
      const fe = await negotiated();
      const mem = new SharedGuestMemory(GUEST.SIZE);
      const eventfds = makeFds(2);
      try {
        const desc = GUEST.UVA;
        const avail = desc + 16 * 8;
        const used = GUEST.UVA + 4096;
        await fe.ok(F.SET_VRING_NUM, state(1, 8));
        await fe.ok(F.SET_VRING_ADDR, { kind: 'vringAddr', index: 1, flags: 0, descUser: BigInt(desc), availUser: BigInt(avail), usedUser: BigInt(used), logGuest: 0n });
        await fe.ok(F.SET_VRING_KICK, u64(1), [eventfds[0]!]);
        await fe.ok(F.SET_VRING_ENABLE, state(1, 1));
        assert.equal((await serve.state()).queues[1]!.running, false, 'no memory yet: the ring cannot run');
        assert.equal(await fe.setMemTable([region(BigInt(GUEST.GPA), BigInt(GUEST.SIZE), BigInt(GUEST.UVA))], [mem.fd]), 0n);
        await waitFor('ring 1 running after SET_MEM_TABLE', async () => (await serve.state()).queues[1]!.running);
      } finally {
        closeFds(eventfds);
        mem.dispose();
      }
      await done(fe, 'early SET_VRING_ADDR');
    });

    it('IOTLB_MSG without ACCESS_PLATFORM is refused (ack 1) and the session goes on', async () => {
      const fe = await negotiated();
      assert.equal(await fe.ack(F.IOTLB_MSG, { kind: 'iotlb', iova: 0n, size: 4096n, userAddr: 0n, perm: 3, iotlbType: IotlbType.UPDATE }), 1n);
      assert.equal(await fe.ack(F.IOTLB_MSG, { kind: 'iotlb', iova: 0n, size: 4096n, userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE }), 1n);
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 256)), 0n, 'session still answers');
      await done(fe, 'IOTLB_MSG without IOMMU');
    });

    it('GET_VRING_BASE on rings that never started answers their base', async () => {
      const fe = await negotiated();
      for (const index of [0, 1]) {
        const reply = await fe.call(F.GET_VRING_BASE, state(index, 0), { needsReply: false });
        assert.deepEqual(reply?.body, { kind: 'vringState', index, num: 0 });
      }
      await fe.ok(F.SET_VRING_BASE, state(0, 77));
      const reply = await fe.call(F.GET_VRING_BASE, state(0, 0), { needsReply: false });
      assert.deepEqual(reply?.body, { kind: 'vringState', index: 0, num: 77 });
      await done(fe, 'GET_VRING_BASE');
    });

    it('requests that are not supported, unknown, or flagged as replies are refused', async () => {
      const fe = await negotiated();
      assert.equal(await fe.ack(F.NET_SET_MTU, u64(1500)), 1n);
      assert.equal(await fe.ack(F.SET_VRING_ENDIAN, state(0, 1)), 1n);
      assert.equal(await fe.ack(F.SET_FEATURES, u64(1n << 63n)), 1n, 'features never offered');
      // Unknown request 99 with NEED_REPLY, and a "request" carrying the REPLY flag.
      await fe.sendRaw(rawMessage(99, 0x1 | 0x8, 0));
      assert.equal(ackOf(await fe.readReply()), 1n);
      await fe.sendRaw(rawMessage(F.SET_OWNER, 0x1 | 0x4, 0));
      await fe.sendRaw(rawMessage(F.SET_VRING_NUM, 0x1 | 0x8, 8, new Uint8Array([0, 0, 0, 0, 8, 0, 0, 0])));
      assert.deepEqual((await fe.readReply())?.body, u64(0), 'the stray reply was ignored, the next request acked');
      // Bad version bits and reserved flags.
      await fe.sendRaw(rawMessage(F.SET_OWNER, 0x2 | 0x8, 0));
      assert.deepEqual((await fe.readReply())?.body, u64(1));
      await fe.sendRaw(rawMessage(F.SET_OWNER, 0x1 | 0x8 | 0x100, 0));
      assert.deepEqual((await fe.readReply())?.body, u64(1));
      await done(fe, 'unsupported requests');
    });

    it('RESET_DEVICE and RESET_OWNER in the middle of traffic leave serve consistent', async () => {
      const rig = await setupLoopback(serve.socket);
      try {
        await rig.fe.ok(F.RESET_DEVICE, { kind: 'none' });
        const s = await serve.state();
        assert.ok(s.queues.every((q) => !q.running), 'rings stopped by RESET_DEVICE');
        await rig.fe.ok(F.RESET_OWNER, { kind: 'none' });
      } finally {
        rig.dispose();
      }
      await waitFor('disconnect', async () => !(await serve.state()).connected);
      await expectFdsBack(pid, idleFds, 'RESET_DEVICE');
      await expectServing(serve.socket);
    });
  });

  describe('sizes', () => {
    it('a header announcing more than MAX_PAYLOAD ends the connection at once', async () => {
      for (const size of [MAX_PAYLOAD + 1, 0x7fffffff, 0xffffffff]) {
        const fe = await negotiated();
        await fe.sendRaw(rawMessage(F.SET_OWNER, 0x1, size));
        assert.ok(await fe.isClosedByPeer(), `size ${size}: connection closed`);
        await done(fe, `size ${size}`);
      }
    });

    it('payload sizes that do not fit the request are refused', async () => {
      const fe = await negotiated();
      await fe.sendRaw(rawMessage(F.SET_VRING_NUM, 0x9, 4, new Uint8Array(4)));
      assert.deepEqual((await fe.readReply())?.body, u64(1), 'vring state of 4 bytes');
      await fe.sendRaw(rawMessage(F.SET_FEATURES, 0x9, 16, new Uint8Array(16)));
      assert.deepEqual((await fe.readReply())?.body, u64(1), 'u64 of 16 bytes');
      // A memory table claiming 9 regions, and one whose size does not match nregions.
      const nine = new Uint8Array(8 + 9 * 32);
      new DataView(nine.buffer).setUint32(0, 9, true);
      await fe.sendRaw(rawMessage(F.SET_MEM_TABLE, 0x9, nine.length, nine));
      assert.deepEqual((await fe.readReply())?.body, u64(1), 'nine regions');
      const short = new Uint8Array(8 + 32);
      new DataView(short.buffer).setUint32(0, 2, true);
      await fe.sendRaw(rawMessage(F.SET_MEM_TABLE, 0x9, short.length, short));
      assert.deepEqual((await fe.readReply())?.body, u64(1), 'two regions in one entry');
      await fe.ok(F.SET_OWNER, { kind: 'none' });
      await done(fe, 'payload sizes');
    });

    it('ring sizes and bases out of range are refused', async () => {
      const fe = await negotiated();
      for (const num of [0, 3, 100, 65536, 0x80000000, 0xffffffff]) {
        assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, num)), 1n, `size ${num}`);
      }
      for (const num of [0x10000, 0xffffffff]) assert.equal(await fe.ack(F.SET_VRING_BASE, state(0, num)), 1n, `base ${num}`);
      assert.equal(await fe.ack(F.SET_VRING_ENABLE, state(0, 2)), 1n);
      assert.equal((await serve.state()).queues[0]!.size, 0, 'nothing was applied');
      await done(fe, 'ring sizes');
    });

    it('GET_CONFIG with a size over 256 is answered with the empty (error) reply', async () => {
      const fe = await negotiated();
      const payload = new Uint8Array(12);
      new DataView(payload.buffer).setUint32(4, 4096, true);
      await fe.sendRaw(rawMessage(F.GET_CONFIG, 0x1, 12, payload));
      const reply = await fe.readReply();
      assert.deepEqual(reply?.body, { kind: 'none' });
      await fe.ok(F.SET_OWNER, { kind: 'none' });
      await done(fe, 'GET_CONFIG');
    });
  });

  describe('memory regions', () => {
    const cases: { name: string; regions: (size: bigint) => MemoryRegion[] }[] = [
      { name: 'zero-sized', regions: () => [region(0n, 0n, 0x7f0000000000n)] },
      { name: 'larger than the memfd', regions: (size) => [region(0n, size * 2n, 0x7f0000000000n)] },
      { name: 'mmap_offset past the memfd', regions: (size) => [region(0n, 4096n, 0x7f0000000000n, size)] },
      { name: 'mmap_offset + size overflowing 64 bits', regions: () => [region(0n, 8192n, 0x7f0000000000n, (1n << 64n) - 4096n)] },
      { name: 'guest address + size overflowing 64 bits', regions: () => [region((1n << 64n) - 4096n, 8192n, 0x7f0000000000n)] },
      { name: 'user address + size overflowing 64 bits', regions: () => [region(0n, 8192n, (1n << 64n) - 4096n)] },
      { name: 'guest address at 2^53', regions: () => [region(1n << 53n, 4096n, 0x7f0000000000n)] },
      { name: 'size 2^64-1', regions: () => [region(0n, (1n << 64n) - 1n, 0x7f0000000000n)] },
      {
        name: 'overlapping guest ranges',
        regions: (size) => [region(0x100000n, size / 2n, 0x7f0000000000n), region(0x100000n + size / 4n, size / 2n, 0x7f1000000000n, size / 2n)],
      },
      {
        name: 'overlapping user ranges',
        regions: (size) => [region(0x100000n, size / 2n, 0x7f0000000000n), region(0x40000000n, size / 2n, 0x7f0000000000n + size / 4n, size / 2n)],
      },
    ];

    for (const c of cases) {
      it(`${c.name}: refused, every fd closed, session goes on`, async () => {
        const fe = await negotiated();
        const size = 1n << 20n;
        const mems = c.regions(size).map(() => new SharedGuestMemory(Number(size)));
        const before = fdCountOf(pid);
        try {
          assert.equal(await fe.setMemTable(c.regions(size), mems.map((m) => m.fd)), 1n);
          await expectFdsBack(pid, before, c.name);
          assert.deepEqual((await serve.state()).memory, [], 'no region was installed');
          assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n, 'session still answers');
        } finally {
          mems.forEach((m) => m.dispose());
        }
        await done(fe, c.name);
      });
    }

    it('fewer fds than regions, and a non-memory fd, are refused and closed', async () => {
      const fe = await negotiated();
      const mem = new SharedGuestMemory(1 << 20);
      const before = fdCountOf(pid);
      const two = [region(0n, 4096n, 0x7f0000000000n), region(0x10000n, 4096n, 0x7f0000010000n, 4096n)];
      assert.equal(await fe.setMemTable(two, [mem.fd]), 1n, 'one fd for two regions');
      const [ev] = makeFds(1);
      assert.equal(await fe.setMemTable([region(0n, 4096n, 0x7f0000000000n)], [ev!]), 1n, 'an eventfd is not memory');
      closeFds([ev!]);
      await expectFdsBack(pid, before, 'refused tables');
      mem.dispose();
      await done(fe, 'fd mismatch');
    });

    it('REM_MEM_REG of a region that is not there, and ADD_MEM_REG past the slots, are refused', async () => {
      const fe = await negotiated();
      const mem = new SharedGuestMemory(1 << 20);
      try {
        assert.equal(await fe.ack(F.REM_MEM_REG, { kind: 'memRegion', region: region(0n, 4096n, 0x7f0000000000n) }), 1n);
        for (let i = 0; i < 8; i++) {
          const r = region(BigInt(i) * 0x10000n, 4096n, 0x7f0000000000n + BigInt(i) * 0x10000n, BigInt(i) * 4096n);
          assert.equal(await fe.ack(F.ADD_MEM_REG, { kind: 'memRegion', region: r }, [mem.fd]), 0n, `slot ${i}`);
        }
        const before = fdCountOf(pid);
        assert.equal(await fe.ack(F.ADD_MEM_REG, { kind: 'memRegion', region: region(0x100000n, 4096n, 0x7f0000100000n) }, [mem.fd]), 1n);
        await expectFdsBack(pid, before, 'ADD_MEM_REG past the slots');
      } finally {
        mem.dispose();
      }
      await done(fe, 'ADD/REM_MEM_REG');
    });
  });

  describe('queue indexes', () => {
    it('indexes past the device, including 0x100+ that would truncate to 0, are refused', async () => {
      const fe = await negotiated();
      await fe.ok(F.SET_VRING_NUM, state(0, 64));
      for (const index of [2, 3, 0xff, 0x100, 0x101, 0x10000, 0xffffffff]) {
        assert.equal(await fe.ack(F.SET_VRING_NUM, state(index, 8)), 1n, `SET_VRING_NUM ${index}`);
        assert.equal(await fe.ack(F.SET_VRING_BASE, state(index, 8)), 1n, `SET_VRING_BASE ${index}`);
        assert.equal(await fe.ack(F.SET_VRING_ENABLE, state(index, 1)), 1n, `SET_VRING_ENABLE ${index}`);
        assert.equal(await fe.ack(F.SET_VRING_ADDR, { kind: 'vringAddr', index, flags: 0, descUser: 0n, availUser: 0n, usedUser: 0n, logGuest: 0n }), 1n);
      }
      const s = await serve.state();
      assert.equal(s.queues.length, 2);
      assert.equal(s.queues[0]!.size, 64, 'ring 0 untouched by index 0x100');
      assert.equal(s.queues[1]!.size, 0, 'ring 1 untouched by index 0x101');
      // Kick/call/err: bits above the index and NOFD are reserved.
      const [ev] = makeFds(1);
      const before = fdCountOf(pid);
      for (const value of [2n, 0xffn, 0x200n, 1n << 32n, (1n << 64n) - 1n]) {
        assert.equal(await fe.ack(F.SET_VRING_KICK, u64(value), [ev!]), 1n, `SET_VRING_KICK 0x${value.toString(16)}`);
        assert.equal(await fe.ack(F.SET_VRING_CALL, u64(value), [ev!]), 1n, `SET_VRING_CALL 0x${value.toString(16)}`);
      }
      closeFds([ev!]);
      await expectFdsBack(pid, before, 'refused kick/call fds');
      await done(fe, 'queue indexes');
    });

    it('GET_VRING_BASE of an index past the device ends that connection only', async () => {
      for (const index of [2, 0x100, 0xffffffff]) {
        const fe = await negotiated();
        const reply = await fe.call(F.GET_VRING_BASE, state(index, 0), { needsReply: false });
        assert.equal(reply, null, `index ${index}: a GET that cannot be answered closes the connection`);
        await done(fe, `GET_VRING_BASE ${index}`);
      }
      await expectServing(serve.socket);
    });
  });

  describe('fds', () => {
    it('fds on requests that carry none are closed, and the session goes on', async () => {
      const fe = await negotiated();
      const fds = makeFds(8);
      const before = fdCountOf(pid);
      for (const [request, body] of [
        [F.SET_OWNER, { kind: 'none' }], [F.SET_VRING_NUM, state(0, 8)], [F.SET_FEATURES, u64(testFeatures())],
        [F.SET_VRING_KICK, u64(0x100)], [F.SET_STATUS, { kind: 'status', value: 1 }], [F.REM_MEM_REG, u64(0)],
      ] as const) {
        for (const n of [1, 8]) assert.equal(await fe.ack(request, body, fds.slice(0, n)), 1n, `${F[request]} with ${n} fds`);
      }
      await fe.sendRaw(rawMessage(99, 0x9, 0), fds);
      assert.equal(ackOf(await fe.readReply()), 1n, 'unknown request with fds');
      await expectFdsBack(pid, before, 'stray fds');
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n);
      closeFds(fds);
      await done(fe, 'stray fds');
    });

    it('a GET with fds is answered or closes the connection, and its fds are closed', async () => {
      const fds = makeFds(4);
      const before = fdCountOf(pid);
      for (const request of [F.GET_FEATURES, F.GET_PROTOCOL_FEATURES, F.GET_QUEUE_NUM, F.GET_STATUS]) {
        const fe = await negotiated();
        await fe.call(request, { kind: 'none' }, { fds, needsReply: false }).catch(() => null);
        await done(fe, `${F[request]} with fds`);
      }
      closeFds(fds);
      await expectFdsBack(pid, before, 'GET with fds');
    });

    it('more fds than a message may carry (16, in two sends) are all closed', async () => {
      const fe = await negotiated();
      const fds = makeFds(8);
      const before = fdCountOf(pid);
      const msg = fe.encode(F.SET_VRING_KICK, u64(0), { needsReply: true });
      await fe.sendRaw(msg.subarray(0, 6), fds);
      await new Promise((r) => setTimeout(r, 20));
      await fe.sendRaw(msg.subarray(6), fds);
      // Both batches belong to the one message: decodeMessage refuses 16 fds, all are closed.
      assert.equal(ackOf(await fe.readReply()), 1n, 'refused');
      await expectFdsBack(pid, before, '16 fds');
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n, 'session goes on');
      closeFds(fds);
      await done(fe, '16 fds');
      await expectFdsBack(pid, before, '16 fds');
    });

    it('a message cut short with fds attached, then EOF: the fds are closed', async () => {
      const fe = await negotiated();
      const fds = makeFds(8);
      const before = fdCountOf(pid);
      await fe.sendRaw(rawMessage(F.SET_OWNER, 0x1, 100, new Uint8Array(10)), fds);
      await new Promise((r) => setTimeout(r, 50));
      closeFds(fds);
      await done(fe, 'incomplete message');
      await expectFdsBack(pid, before, 'incomplete message');
    });

    it('a message dribbled one byte (and 8 fds) at a time cannot make serve hold more than 8 fds', async () => {
      const fe = await negotiated();
      const fds = makeFds(8);
      const before = fdCountOf(pid);
      const msg = rawMessage(F.SET_OWNER, 0x1, 2000, new Uint8Array(2000));
      let peak = 0;
      let closed = false;
      for (let i = 0; i < 200 && !closed; i++) {
        try {
          await fe.sendRaw(msg.subarray(i, i + 1), fds);
        } catch {
          closed = true; // EPIPE: serve ended the connection
        }
        peak = Math.max(peak, fdCountOf(pid) - before);
      }
      assert.ok(peak <= 16, `serve held ${peak} extra fds`);
      closeFds(fds);
      await done(fe, 'dribbled fds');
    });

    it('SET_VRING_KICK without an fd and without NOFD is refused', async () => {
      const fe = await negotiated();
      assert.equal(await fe.ack(F.SET_VRING_KICK, u64(0)), 1n);
      assert.equal(await fe.ack(F.SET_VRING_CALL, u64(1)), 1n);
      assert.equal(await fe.ack(F.SET_VRING_KICK, u64(0x100)), 0n, 'NOFD (polling) is fine');
      await done(fe, 'missing fd');
    });
  });

  describe('IOTLB', () => {
    const update = (iova: bigint, size: bigint, userAddr: bigint, perm = 3) => ({ kind: 'iotlb' as const, iova, size, userAddr, perm, iotlbType: IotlbType.UPDATE });
    const invalidate = (iova: bigint, size: bigint) => ({ kind: 'iotlb' as const, iova, size, userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE });

    it('entries that wrap around or reach past 2^53 are refused, invalidations of everything accepted', async () => {
      const fe = await negotiated({ iommu: true });
      const max = (1n << 64n) - 1n;
      for (const [iova, size, uaddr] of [
        [max - 4095n, 8192n, 0x7f0000000000n], // iova + size wraps 64 bits
        [0n, max, 0x7f0000000000n], // size 2^64-1
        [(1n << 53n) - 4096n, 8192n, 0x7f0000000000n], // crosses 2^53
        [0x1000n, 0x1000n, max - 0xfffn], // uaddr + size wraps
        [0x1000n, 0x1000n, (1n << 53n) - 0x800n], // uaddr + size crosses 2^53
        [0x1000n, 0n, 0x7f0000000000n], // empty
      ] as const) {
        assert.equal(await fe.ack(F.IOTLB_MSG, update(iova, size, uaddr)), 1n, `update iova 0x${iova.toString(16)} size 0x${size.toString(16)} uaddr 0x${uaddr.toString(16)}`);
      }
      assert.equal(await fe.ack(F.IOTLB_MSG, update(0x1000n, 0x1000n, 0x7f0000000000n, 0)), 1n, 'perm NONE');
      assert.equal(await fe.ack(F.IOTLB_MSG, update(0x1000n, 0x1000n, 0x7f0000000000n)), 0n, 'a sane update');
      for (const [iova, size] of [[0n, max], [max, max], [max, 1n], [1n << 53n, 1n << 60n], [0n, 0n]] as const) {
        assert.equal(await fe.ack(F.IOTLB_MSG, invalidate(iova, size)), 0n, `invalidate 0x${iova.toString(16)}+0x${size.toString(16)}`);
      }
      // MISS and ACCESS_FAIL only travel the other way; type and perm values outside the enums.
      assert.equal(await fe.ack(F.IOTLB_MSG, { ...update(0n, 4096n, 0n), iotlbType: IotlbType.MISS }), 1n);
      const bad = new Uint8Array(32);
      bad[24] = 7; // perm 7
      bad[25] = 2;
      await fe.sendRaw(rawMessage(F.IOTLB_MSG, 0x9, 32, bad));
      assert.deepEqual((await fe.readReply())?.body, u64(1));
      await done(fe, 'IOTLB wrap-around');
    });
  });

  describe('descriptor chains over real guest memory', () => {
    const chains: { name: string; field: RegExp; post: (rig: Awaited<ReturnType<typeof setupLoopback>>) => void }[] = [
      {
        name: 'a chain that loops',
        field: /desc.*loop|loop/,
        post: (rig) => {
          rig.tx.writeDesc(0, rig.bufBase, 64, VRING_DESC_F_NEXT, 1);
          rig.tx.writeDesc(1, rig.bufBase + 64, 64, VRING_DESC_F_NEXT, 0);
          rig.tx.pushAvail(0);
          rig.tx.publish();
        },
      },
      {
        name: 'a descriptor outside guest memory',
        field: /desc\[0\]\.addr=0x[0-9a-f]+ .*outside guest memory/,
        post: (rig) => {
          rig.tx.writeDesc(0, GUEST.GPA + GUEST.SIZE + 0x10000, 64, 0, 0);
          rig.tx.pushAvail(0);
          rig.tx.publish();
        },
      },
      {
        name: 'a descriptor running past the end of guest memory',
        field: /desc\[0\]\.len=.*overflows guest memory/,
        post: (rig) => {
          rig.tx.writeDesc(0, GUEST.GPA + GUEST.SIZE - 32, 4096, 0, 0);
          rig.tx.pushAvail(0);
          rig.tx.publish();
        },
      },
      {
        name: 'a next index past the ring',
        field: /desc\[0\]\.next=200/,
        post: (rig) => {
          rig.tx.writeDesc(0, rig.bufBase, 64, VRING_DESC_F_NEXT, 200);
          rig.tx.pushAvail(0);
          rig.tx.publish();
        },
      },
      {
        name: 'a head index past the ring',
        field: /avail\.ring\[0\]=5000/,
        post: (rig) => {
          rig.tx.pushAvail(5000);
          rig.tx.publish();
        },
      },
      {
        name: 'an indirect table that loops',
        field: /INDIRECT table of desc\[0\] has a loop/,
        post: (rig) => {
          const table = rig.bufBase + 0x1000;
          const t = rig.off(table);
          const v = new DataView(rig.mem.buffer);
          for (let j = 0; j < 2; j++) {
            v.setBigUint64(t + 16 * j, BigInt(rig.bufBase), true);
            v.setUint32(t + 16 * j + 8, 64, true);
            v.setUint16(t + 16 * j + 12, VRING_DESC_F_NEXT, true);
            v.setUint16(t + 16 * j + 14, 1 - j, true);
          }
          rig.tx.writeDesc(0, table, 32, VRING_DESC_F_INDIRECT, 0);
          rig.tx.pushAvail(0);
          rig.tx.publish();
        },
      },
      {
        name: 'avail.idx far ahead of the ring',
        field: /avail\.idx=.*more than queue size/,
        post: (rig) => rawAvailIdx(rig, 1000),
      },
    ];

    for (const c of chains) {
      it(`${c.name}: the queue is marked broken (field named), serve keeps serving`, async () => {
        const rig = await setupLoopback(serve.socket);
        await expectTxRingBroken({ fe: rig.fe, txKick: rig.txFds.kick, dispose: () => rig.dispose() }, () => c.post(rig), c.field, c.name);
      });
    }
  });

  describe('packed rings over real guest memory', () => {
    const PACKED_FEATURES = testFeatures() | (1n << BigInt(VirtioFeature.RING_PACKED));

    /** A connection with RING_PACKED, both rings of pair 0 started as packed rings, and a driver for its TX ring. */
    async function packedPair(): Promise<{ fe: HostileFrontend; mem: SharedGuestMemory; tx: PackedDriver; txKick: number; bufBase: number; dispose(): void }> {
      const fe = await connect();
      const mem = new SharedGuestMemory(GUEST.SIZE);
      const fds: number[] = [];
      try {
        await fe.negotiate({ features: PACKED_FEATURES });
        assert.equal(await fe.setMemTable([region(BigInt(GUEST.GPA), BigInt(GUEST.SIZE), BigInt(GUEST.UVA))], [mem.fd]), 0n);
        const size = 64;
        const uva = (gpa: number) => gpa - GUEST.GPA + GUEST.UVA;
        const rxLay = layoutPacked(size, GUEST.GPA);
        const txLay = layoutPacked(size, GUEST.GPA + 0x1000);
        const driver = (lay: PackedLayout) => new PackedDriver({ memory: mem.bytes, base: GUEST.GPA, size, descAddr: lay.descAddr, driverAddr: lay.driverAddr, deviceAddr: lay.deviceAddr });
        const rx = driver(rxLay);
        const tx = driver(txLay);
        for (const [index, lay, d] of [[0, rxLay, rx], [1, txLay, tx]] as const) {
          const ring = await fe.startRing(index, { size, desc: uva(lay.descAddr), avail: uva(lay.driverAddr), used: uva(lay.deviceAddr), base: d.vringBase() });
          fds.push(ring.kick, ring.call);
        }
        return {
          fe, mem, tx, txKick: fds[2]!, bufBase: GUEST.GPA + 0x4000,
          dispose() {
            fe.close();
            closeFds(fds);
            mem.dispose();
          },
        };
      } catch (err) {
        closeFds(fds);
        mem.dispose();
        throw err;
      }
    }

    const chains: { name: string; field: RegExp; post: (tx: PackedDriver, bufBase: number) => void }[] = [
      {
        name: 'a descriptor outside guest memory',
        field: /desc\[0\]\.addr=0x[0-9a-f]+ .*outside guest memory/,
        post: (tx) => tx.writeDesc(0, GUEST.GPA + GUEST.SIZE + 0x10000, 64, 0, tx.availFlags()),
      },
      {
        name: 'a descriptor running past the end of guest memory',
        field: /desc\[0\]\.len=4096 overflows guest memory/,
        post: (tx) => tx.writeDesc(0, GUEST.GPA + GUEST.SIZE - 32, 4096, 0, tx.availFlags()),
      },
      {
        name: 'NEXT on every descriptor (a chain longer than the ring)',
        field: /has NEXT set on \d+ descriptors/,
        post: (tx, buf) => {
          for (let i = 63; i >= 0; i--) tx.writeDesc(i, buf, 64, 0, tx.availFlags() | VRING_DESC_F_NEXT);
        },
      },
      {
        name: 'an INDIRECT descriptor whose length is no table',
        field: /desc\[0\] is INDIRECT with len=20/,
        post: (tx, buf) => tx.writeDesc(0, buf, 20, 0, tx.availFlags() | VRING_DESC_F_INDIRECT),
      },
      {
        name: 'a device-writable buffer on the TX ring',
        field: /TX chain at head \d+ has 64 device-writable bytes/,
        post: (tx, buf) => tx.writeDesc(0, buf, 64, 0, tx.availFlags() | VRING_DESC_F_WRITE),
      },
    ];

    for (const c of chains) {
      it(`${c.name}: the packed queue is marked broken (field named), serve keeps serving`, async () => {
        const rig = await packedPair();
        await expectTxRingBroken(rig, () => c.post(rig.tx, rig.bufBase), c.field, c.name,
          (features) => assert.ok(features.includes('RING_PACKED'), `negotiated ${features.join(' ')}`));
      });
    }
  });
});

/** The ack value of a reply (an unknown request's reply decodes as 8 raw bytes). */
function ackOf(reply: VhostMessage | null): bigint | null {
  if (reply === null) return null;
  if (reply.body.kind === 'u64') return reply.body.value;
  if (reply.body.kind === 'raw' && reply.body.bytes.length === 8) return new DataView(reply.body.bytes.buffer, reply.body.bytes.byteOffset).getBigUint64(0, true);
  throw new Error(`${reply.name} reply is not an ack`);
}

/** Writes avail->idx of the TX ring directly (the driver would never claim more than it has). */
function rawAvailIdx(rig: Awaited<ReturnType<typeof setupLoopback>>, idx: number): void {
  const lay = rig.tx as unknown as { a: number; m16: Uint16Array };
  Atomics.store(lay.m16, lay.a + 1, idx & 0xffff);
}

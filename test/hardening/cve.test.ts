// One regression test per DPDK vhost-user CVE class, against the REAL serve process. Each one
// asserts: a clear error (a REPLY_ACK failure, a broken ring naming the field, a log line),
// no crash, no access outside what the front-end legitimately shared (canary bytes in the
// memfd outside every region — and beside the legitimate buffers — stay intact), and no fd
// left open in serve.
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FrontendRequest as F, IotlbType } from '../../src/protocol/index.js';
import { eventfdWrite } from '../../src/sys/index.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/virtqueue/split.js';
import { layoutRings } from '../support/frontend/split-driver.js';
import { startServe, type ServeProcess } from '../support/serve.js';
import {
  GUEST, HDR_LEN, HostileFrontend, SharedGuestMemory, closeFds, expectFdsBack, expectServing, fdCountOf, loopbackFrames,
  makeFds, rawMessage, setupLoopback, testFeatures, testFrame, waitFor, type LoopbackRig, type RigLayout,
} from '../support/hostile-frontend.js';

const u64 = (value: bigint | number) => ({ kind: 'u64' as const, value: BigInt(value) });
const state = (index: number, num: number) => ({ kind: 'vringState' as const, index, num });
const CANARY = 0xa5;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Region A: GPA 0x100000, 1 MiB, memfd offset 0. Region B: right after A in guest-physical
 * space (GPA 0x200000, 64 KiB) but NOT after it in the memfd (offset 0x110000). The memfd
 * bytes between them [0x100000, 0x110000) and after B [0x120000, 0x130000) belong to no
 * region: canaries. A backend that assumed GPA-contiguous means host-contiguous, or did not
 * bound a buffer by its region, would touch them.
 */
const A = { gpa: GUEST.GPA, uva: GUEST.UVA, size: GUEST.SIZE, offset: 0 };
const B = { gpa: GUEST.GPA + GUEST.SIZE, uva: GUEST.UVA + 0x10000000, size: 0x10000, offset: 0x110000 };
const LAYOUT: RigLayout = { memSize: 0x130000, regions: [A, B] };
const GAPS = [[0x100000, 0x110000], [0x120000, 0x130000]] as const;

function fillCanaries(rig: LoopbackRig): void {
  for (const [s, e] of GAPS) rig.mem.bytes.fill(CANARY, s, e);
}

function assertCanaries(rig: LoopbackRig, extra: readonly (readonly [number, number])[] = []): void {
  for (const [s, e] of [...GAPS, ...extra]) {
    const bad = rig.mem.bytes.subarray(s, e).findIndex((b) => b !== CANARY);
    assert.equal(bad, -1, `canary at memfd offset 0x${(s + bad).toString(16)} was overwritten`);
  }
}

describe('DPDK vhost-user CVE classes against serve', () => {
  let serve: ServeProcess;
  let pid: number;
  let idleFds: number;
  const rigs: LoopbackRig[] = [];
  const fes: HostileFrontend[] = [];

  before(async () => {
    serve = await startServe(['--net', 'loopback']);
    pid = serve.child.pid!;
    await expectServing(serve.socket);
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    idleFds = fdCountOf(pid);
  });

  afterEach(async () => {
    for (const rig of rigs.splice(0)) rig.dispose();
    for (const fe of fes.splice(0)) fe.close();
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    await expectFdsBack(pid, idleFds, 'after the test');
    assert.equal(serve.child.exitCode, null, 'serve still runs');
  });

  after(async () => {
    const { exit, lines } = await serve.stop();
    assert.equal(exit.code, 0, `serve exited with ${exit.code} / ${exit.signal}:\n${lines.slice(-20).join('\n')}`);
  });

  async function rig(opts: Parameters<typeof setupLoopback>[1] = {}): Promise<LoopbackRig> {
    const r = await setupLoopback(serve.socket, { layout: LAYOUT, ...opts });
    rigs.push(r);
    fillCanaries(r);
    return r;
  }

  async function negotiated(opts: { iommu?: boolean } = {}): Promise<HostileFrontend> {
    const fe = await HostileFrontend.connect(serve.socket);
    fes.push(fe);
    await fe.negotiate({ features: testFeatures(opts) });
    return fe;
  }

  async function brokenReason(index: number): Promise<string> {
    return waitFor(`ring ${index} broken`, async () => (await serve.state()).queues[index]!.broken);
  }

  /** serve logs on stderr, which can arrive after the reply: wait for the line (fails after 5 s). */
  async function logged(re: RegExp): Promise<boolean> {
    await serve.log.waitFor(re, 5000, 'serve log');
    return true;
  }

  /** Posts one TX frame as a chain of (gpa, len) pieces; the frame bytes go into those pieces. */
  function postTx(r: LoopbackRig, pieces: [number, number][], bytes?: Uint8Array): void {
    if (bytes) {
      let at = 0;
      for (const [gpa, len] of pieces) {
        const n = Math.min(len, bytes.length - at);
        if (n > 0) r.mem.bytes.set(bytes.subarray(at, at + n), r.off(gpa));
        at += n;
      }
    }
    const head = r.tx.addChain(pieces.map((p) => p[0]), pieces.map((p) => p[1]), pieces.length);
    assert.ok(head >= 0);
    r.tx.publish();
    eventfdWrite(r.txFds.kick, 1);
  }

  function postRx(r: LoopbackRig, pieces: [number, number][]): void {
    const head = r.rx.addChain(pieces.map((p) => p[0]), pieces.map((p) => p[1]), 0);
    assert.ok(head >= 0);
    r.rx.publish();
    eventfdWrite(r.rxFds.kick, 1);
  }

  async function rxUsed(r: LoopbackRig): Promise<number> {
    await waitFor('an RX used entry', () => r.rx.usedCount() > 0);
    r.rx.takeUsed();
    return r.rx.lastLen;
  }

  const withHeader = (frame: Uint8Array): Uint8Array => {
    const out = new Uint8Array(HDR_LEN + frame.length);
    out.set(frame, HDR_LEN);
    return out;
  };

  describe('CVE-2018-1059: unchecked guest address range in translation', () => {
    it('a TX descriptor whose addr+len runs past the last region breaks the ring, touching nothing', async () => {
      const r = await rig();
      postTx(r, [[B.gpa + B.size - 16, 256]]);
      assert.match(await brokenReason(1), /desc\[0\]\.len=256 overflows guest memory/);
      assertCanaries(r);
      assert.ok(await logged(/vring 1 broken/));
    });

    it('an RX buffer crossing from region A into B (adjacent GPAs, apart in the memfd) is split, not overrun', async () => {
      const r = await rig();
      const frame = testFrame(200, 7);
      const start = B.gpa - 32; // 32 bytes in A, the rest at the start of B
      postRx(r, [[start, 1024]]);
      postTx(r, [[r.bufBase, HDR_LEN + frame.length]], withHeader(frame));
      assert.equal(await rxUsed(r), HDR_LEN + frame.length);
      const got = new Uint8Array(HDR_LEN + frame.length);
      got.set(r.mem.bytes.subarray(r.off(start), r.off(start) + 32), 0);
      got.set(r.mem.bytes.subarray(B.offset, B.offset + got.length - 32), 32);
      assert.deepEqual(got.subarray(HDR_LEN + 12), frame.subarray(12), 'payload landed across the two regions');
      assertCanaries(r);
    });

    it('an RX buffer running past the last region breaks RX before writing a byte', async () => {
      const r = await rig();
      const start = B.gpa + B.size - 32;
      r.mem.bytes.fill(CANARY, r.off(start), r.off(start) + 32);
      postRx(r, [[start, 2048]]);
      postTx(r, [[r.bufBase, HDR_LEN + 60]], withHeader(testFrame(60, 1)));
      assert.match(await brokenReason(0), /desc\[0\]\.len=2048 overflows guest memory/);
      assertCanaries(r, [[r.off(start), r.off(start) + 32]]);
    });
  });

  describe('CVE-2020-10722: integer overflow in the dirty-log base/size', () => {
    it('SET_LOG_BASE with huge size and offset, or beyond its fd, is refused and its fd closed; the session goes on', async () => {
      const fe = await negotiated();
      const mem = new SharedGuestMemory(4096);
      const before = fdCountOf(pid);
      for (const [size, offset] of [[(1n << 64n) - 1n, (1n << 64n) - 4096n], [1n << 63n, 1n << 63n], [4096n, 4096n], [8192n, 0n]] as const) {
        const reply = await fe.call(F.SET_LOG_BASE, { kind: 'log', size, offset }, { fds: [mem.fd] });
        assert.deepEqual(reply?.body, u64(1), `size 0x${size.toString(16)} offset 0x${offset.toString(16)}`);
      }
      // Without NEED_REPLY too: SET_LOG_BASE always replies.
      const reply = await fe.call(F.SET_LOG_BASE, { kind: 'log', size: 1n << 40n, offset: 0n }, { fds: [mem.fd], needsReply: false });
      assert.deepEqual(reply?.body, u64(1));
      await expectFdsBack(pid, before, 'SET_LOG_BASE fds');
      mem.dispose();
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n, 'session goes on');
      assert.ok(await logged(/SET_LOG_BASE refused/));
    });
  });

  describe('CVE-2020-10723: queue index truncation', () => {
    it('index 0x100+ never reaches ring 0 while it carries traffic', async () => {
      const r = await rig();
      await loopbackFrames(r, 2);
      for (const index of [0x100, 0x101, 0x10000, 0x80000000]) {
        assert.equal(await r.fe.ack(F.SET_VRING_NUM, state(index, 2)), 1n);
        assert.equal(await r.fe.ack(F.SET_VRING_BASE, state(index, 0x1234)), 1n);
        assert.equal(await r.fe.ack(F.SET_VRING_ADDR, { kind: 'vringAddr', index, flags: 0, descUser: 0n, availUser: 0n, usedUser: 0n, logGuest: 0n }), 1n);
        assert.equal(await r.fe.ack(F.SET_VRING_ENABLE, state(index, 0)), 1n);
      }
      const s = await serve.state();
      assert.equal(s.queues[0]!.size, 64);
      assert.ok(s.queues[0]!.running && s.queues[1]!.running, 'both rings still run');
      await loopbackFrames(r, 2); // and still carry traffic
      assert.ok(await logged(/vring index 256 out of range/));
      assertCanaries(r);
    });

    it('GET_VRING_BASE with index 0x100 closes that connection, not the process', async () => {
      const fe = await negotiated();
      assert.equal(await fe.call(F.GET_VRING_BASE, state(0x100, 0), { needsReply: false }), null);
      fe.close();
      await waitFor('disconnect', async () => !(await serve.state()).connected);
      await expectServing(serve.socket);
    });
  });

  describe('CVE-2020-10725 / CVE-2020-10726 / CVE-2022-2132: descriptor and virtio-net header bounds', () => {
    it('a TX header split over three descriptors is handled, the frame intact', async () => {
      const r = await rig();
      const frame = testFrame(100, 3);
      postRx(r, [[r.bufBase + 0x10000, 2048]]);
      const b = r.bufBase;
      postTx(r, [[b, 5], [b + 0x100, 4], [b + 0x200, 3], [b + 0x300, frame.length]], withHeader(frame));
      assert.equal(await rxUsed(r), HDR_LEN + frame.length);
      const at = r.off(r.bufBase + 0x10000) + HDR_LEN;
      assert.deepEqual(r.mem.bytes.subarray(at + 12, at + frame.length), frame.subarray(12));
      assertCanaries(r);
    });

    it('an RX header split over tiny descriptors is written exactly into them', async () => {
      const r = await rig();
      const frame = testFrame(64, 4);
      const b = r.bufBase + 0x20000;
      // 4 + 4 + 4 bytes of header, each followed by 12 canary bytes, then the frame buffer.
      r.mem.bytes.fill(CANARY, r.off(b), r.off(b) + 0x100);
      postRx(r, [[b, 4], [b + 16, 4], [b + 32, 4], [b + 0x80, 64]]);
      postTx(r, [[r.bufBase, HDR_LEN + frame.length]], withHeader(frame));
      assert.equal(await rxUsed(r), HDR_LEN + frame.length);
      const o = r.off(b);
      assertCanaries(r, [[o + 4, o + 16], [o + 20, o + 32], [o + 36, o + 0x80], [o + 0x80 + 64, o + 0x100]]);
      assert.deepEqual(r.mem.bytes.subarray(o + 0x80 + 12, o + 0x80 + 64), frame.subarray(12));
    });

    it('a TX chain shorter than the header is dropped and counted; the ring goes on', async () => {
      const r = await rig();
      postTx(r, [[r.bufBase, 8]]);
      await waitFor('TX used entry', () => r.tx.usedCount() > 0);
      r.tx.takeUsed();
      assert.equal(r.tx.lastLen, 0);
      const s = await serve.state();
      assert.equal(s.queues[1]!.broken, null);
      assert.equal(s.queues[1]!.counters?.errors, 1);
      await loopbackFrames(r, 2);
    });

    it('an RX buffer shorter than header + frame is not overrun: the frame is dropped', async () => {
      const r = await rig();
      const b = r.bufBase + 0x30000;
      r.mem.bytes.fill(CANARY, r.off(b), r.off(b) + 0x1000);
      postRx(r, [[b, 4]]);
      postTx(r, [[r.bufBase, HDR_LEN + 60]], withHeader(testFrame(60, 5)));
      await waitFor('RX drop counted', async () => ((await serve.state()).queues[0]!.counters?.drops ?? 0) >= 1);
      assertCanaries(r, [[r.off(b), r.off(b) + 0x1000]]);
      assert.equal((await serve.state()).queues[0]!.broken, null);
    });

    for (const len of [0xffffffff, 0x80000000, 0x110000]) {
      it(`a descriptor length of 0x${len.toString(16)} breaks the ring instead of overflowing`, async () => {
        const r = await rig();
        postTx(r, [[r.bufBase, len]]);
        assert.match(await brokenReason(1), new RegExp(`desc\\[0\\]\\.len=${len} overflows guest memory`));
        assertCanaries(r);
      });
    }

    it('a writable RX descriptor of length 2^32-1 breaks RX without writing', async () => {
      const r = await rig();
      const b = r.bufBase + 0x40000;
      r.mem.bytes.fill(CANARY, r.off(b), r.off(b) + 0x1000);
      postRx(r, [[b, 0xffffffff]]);
      postTx(r, [[r.bufBase, HDR_LEN + 60]], withHeader(testFrame(60, 6)));
      assert.match(await brokenReason(0), /overflows guest memory/);
      assertCanaries(r, [[r.off(b), r.off(b) + 0x1000]]);
    });

    it('two descriptors whose lengths sum past 2^32 break the ring', async () => {
      const r = await rig();
      // Both inside guest memory by address; the second length is what overflows.
      r.tx.writeDesc(0, r.bufBase, 0x1000, VRING_DESC_F_NEXT, 1);
      r.tx.writeDesc(1, r.bufBase + 0x1000, 0xfffff000, 0, 0);
      r.tx.pushAvail(0);
      r.tx.publish();
      eventfdWrite(r.txFds.kick, 1);
      assert.match(await brokenReason(1), /desc\[1\]\.len=\d+ (makes the chain longer than 2\^32-1 bytes|overflows guest memory)/);
      assertCanaries(r);
    });

    it('a TX descriptor marked device-writable is refused', async () => {
      const r = await rig();
      r.tx.writeDesc(0, r.bufBase, 64, VRING_DESC_F_WRITE, 0);
      r.tx.pushAvail(0);
      r.tx.publish();
      eventfdWrite(r.txFds.kick, 1);
      assert.match(await brokenReason(1), /device-writable/);
    });

    it('an IOTLB entry smaller than a ring: the ring waits for the rest, nothing past the entry is used', async () => {
      const update = (iova: number, size: number, uaddr: number) => ({ kind: 'iotlb' as const, iova: BigInt(iova), size: BigInt(size), userAddr: BigInt(uaddr), perm: 3, iotlbType: IotlbType.UPDATE });
      const rxLay = layoutRings(64, A.gpa);
      const r = await rig({
        iommu: true,
        // Only the first 64 bytes of RX's descriptor ring (16 * 64 bytes) are mapped.
        beforeRings: async (fe) => assert.equal(await fe.ack(F.IOTLB_MSG, update(rxLay.descAddr, 64, A.uva)), 0n),
      });
      const s = await serve.state();
      assert.equal(s.queues[0]!.waitingForMapping, true, 'RX waits for the rest of its ring');
      assert.equal(s.queues[0]!.broken, null);
      // Map all of region A (IOVA = GPA): both rings come up, traffic flows.
      assert.equal(await r.fe.ack(F.IOTLB_MSG, update(A.gpa, A.size, A.uva)), 0n);
      await waitFor('rings mapped', async () => (await serve.state()).queues.every((q) => !q.waitingForMapping && q.running));
      await loopbackFrames(r, 2);
      assertCanaries(r);
    });
  });

  describe('CVE-2021-3839: inflight region bounds (inflight is not supported)', () => {
    it('SET_INFLIGHT_FD with out-of-bounds sizes is refused, its fd closed, the session goes on', async () => {
      const fe = await negotiated();
      const mem = new SharedGuestMemory(4096);
      const before = fdCountOf(pid);
      for (const [mmapSize, mmapOffset] of [[(1n << 64n) - 1n, 0n], [4096n, (1n << 64n) - 4096n], [1n << 40n, 4096n]] as const) {
        assert.equal(await fe.ack(F.SET_INFLIGHT_FD, { kind: 'inflight', mmapSize, mmapOffset, numQueues: 0xffff, queueSize: 0xffff }, [mem.fd]), 1n);
      }
      await expectFdsBack(pid, before, 'SET_INFLIGHT_FD');
      mem.dispose();
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n);
    });

    it('GET_INFLIGHT_FD is answered "no inflight area" (no fd), stray fds closed, the session goes on', async () => {
      const fe = await negotiated();
      const fds = makeFds(8);
      const before = fdCountOf(pid);
      for (const stray of [[], fds.slice(0, 1), fds]) {
        const reply = await fe.call(F.GET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 256 }, { fds: stray, needsReply: false });
        assert.equal(reply?.body.kind, 'inflight');
        assert.equal(reply?.body.kind === 'inflight' && reply.body.mmapSize, 0n);
        assert.deepEqual(reply?.fds, []);
      }
      await expectFdsBack(pid, before, 'GET_INFLIGHT_FD');
      closeFds(fds);
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n);
    });
  });

  describe('CVE-2022-0669: fd exhaustion by unexpected fds', () => {
    it('1000 messages with 8 fds each on requests that carry none: serve\'s fd count stays bounded', async () => {
      const fe = await negotiated();
      const fds = makeFds(8);
      const before = fdCountOf(pid);
      let peak = 0;
      const requests = [
        fe.encode(F.SET_OWNER, { kind: 'none' }), fe.encode(F.SET_VRING_NUM, state(0, 64)),
        fe.encode(F.SET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 64 }),
        rawMessage(99, 0x1, 0),
      ];
      for (let i = 0; i < 1000; i++) {
        await fe.sendRaw(requests[i % requests.length]!, fds);
        if (i % 10 === 0) peak = Math.max(peak, fdCountOf(pid) - before);
      }
      for (let i = 0; i < 20; i++) {
        peak = Math.max(peak, fdCountOf(pid) - before);
        await sleep(5);
      }
      if (process.env.VIT_DEBUG) console.log(`peak unexpected fds: ${peak}`);
      // At most the messages read ahead of the handler (16) and one incomplete one, 8 fds each.
      assert.ok(peak <= 17 * 8, `serve held up to ${peak} unexpected fds`);
      await expectFdsBack(pid, before, '8000 unexpected fds');
      closeFds(fds);
      assert.equal(await fe.ack(F.SET_VRING_NUM, state(0, 8)), 0n, 'session goes on');
    });
  });
});

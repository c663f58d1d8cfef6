// IOTLB round trips found in a trace's time stamps (`trace decode --stats`): traces built with
// the repo's own TraceWriter at chosen times, one case per matching rule, then the CLI on a
// recorded QEMU + DPDK session.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BackendRequest, FrontendRequest, IotlbType, encodeMessage, type Body } from '../../src/protocol/index.js';
import { bucketLowUs } from '../../src/stats/latency.js';
import { decodeTrace, parseFilters } from '../../src/trace/print.js';
import { parseTrace } from '../../src/trace/reader.js';
import type { RoundTripReport } from '../../src/trace/round-trips.js';
import { TraceWriter } from '../../src/trace/writer.js';

const BIN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));
const DPDK_IOMMU = fileURLToPath(new URL('../../../fixtures/traces/recorded/qemu-dpdk-iommu.vhtrace', import.meta.url));
const F = FrontendRequest;
const RO = 1;
const WO = 2;
const RW = 3;

/** Builds a trace message by message; times in µs. */
class Trace {
  private readonly w = TraceWriter.inMemory({ startTimeNs: 0n });

  private put(us: number, connection: number, channel: 'frontend' | 'backend', direction: 'to-backend' | 'to-frontend', bytes: Uint8Array): this {
    this.w.writeMessage({ timeNs: BigInt(Math.round(us * 1000)), connection, channel, direction, bytes, fds: [] });
    return this;
  }

  miss(us: number, iova: bigint, perm: number, connection = 0): this {
    return this.put(us, connection, 'backend', 'to-frontend', encodeMessage({
      channel: 'backend', request: BackendRequest.IOTLB_MSG,
      body: { kind: 'iotlb', iova, size: 0n, userAddr: 0n, perm, iotlbType: IotlbType.MISS },
    }));
  }

  update(us: number, iova: bigint, size: bigint, perm: number, opts: { connection?: number; needsReply?: boolean } = {}): this {
    return this.put(us, opts.connection ?? 0, 'frontend', 'to-backend', encodeMessage({
      channel: 'frontend', request: F.IOTLB_MSG, needsReply: opts.needsReply ?? true,
      body: { kind: 'iotlb', iova, size, userAddr: 0x7f0000000000n + (iova & 0xffffffffn), perm, iotlbType: IotlbType.UPDATE },
    }));
  }

  invalidate(us: number, iova: bigint, size: bigint, connection = 0): this {
    return this.put(us, connection, 'frontend', 'to-backend', encodeMessage({
      channel: 'frontend', request: F.IOTLB_MSG, needsReply: true,
      body: { kind: 'iotlb', iova, size, userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE },
    }));
  }

  request(us: number, request: number, body: Body, needsReply: boolean, connection = 0): this {
    return this.put(us, connection, 'frontend', 'to-backend', encodeMessage({ channel: 'frontend', request, needsReply, body }));
  }

  reply(us: number, request: number, body: Body = { kind: 'u64', value: 0n }, connection = 0): this {
    return this.put(us, connection, 'frontend', 'to-frontend', encodeMessage({ channel: 'frontend', request, isReply: true, body }));
  }

  bytes(): Uint8Array {
    this.w.close();
    return this.w.bytes();
  }

  async report(): Promise<RoundTripReport> {
    const stats = await decodeTrace(parseTrace(this.bytes()), { stats: true }, () => {});
    return stats.roundTrips.report();
  }
}

/** `got` (a percentile or max from the summary, rounded to 0.1 µs) lies in the histogram bucket of a `sampleUs` sample. */
function inBucketOf(got: number, sampleUs: number, what: string): void {
  const i = sampleUs < 1 ? 0 : Math.floor(Math.log2(sampleUs) * 4);
  const lo = bucketLowUs(i);
  const hi = bucketLowUs(i + 1);
  assert.ok(got >= lo - 0.05 && got <= hi + 0.05, `${what} = ${got} µs, expected in the bucket of ${sampleUs} µs [${lo.toFixed(2)}, ${hi.toFixed(2)})`);
}

test('miss: answered by the first UPDATE whose range covers the iova with the perm asked for', async () => {
  const r = await new Trace()
    .miss(0, 0x102345n, RO)
    .miss(1, 0x104000n, RO) // exactly the end of every range below: never covered
    .update(50, 0x200000n, 0x1000n, RW) // elsewhere
    .reply(51, F.IOTLB_MSG)
    .update(100, 0x100000n, 0x1000n, RW) // ends at 0x101000, before the iova
    .reply(101, F.IOTLB_MSG)
    .update(300, 0x100000n, 0x4000n, WO) // covers, but write-only for a read miss
    .reply(301, F.IOTLB_MSG)
    .update(700, 0x100000n, 0x4000n, RW) // covers with RW: the answer, 700 µs after
    .reply(701, F.IOTLB_MSG)
    // A range that ends at 2^64.
    .miss(1000, 0xfffffffffffff800n, WO)
    .update(1040, 0xfffffffffffff000n, 0x1000n, WO)
    .reply(1041, F.IOTLB_MSG)
    .report();
  assert.equal(r.miss.count, 2);
  assert.equal(r.miss.unanswered, 1);
  inBucketOf(r.miss.maxUs, 700, 'max');
  inBucketOf(r.miss.p50Us, 40, 'p50');
  assert.equal(r.updateAck.count, 5);
});

test('miss: one UPDATE answers two outstanding misses, each a sample', async () => {
  const r = await new Trace()
    .miss(10, 0x5000n, RW)
    .miss(30, 0x5800n, RO)
    .update(110, 0x5000n, 0x1000n, RW) // 100 µs and 80 µs
    .reply(111, F.IOTLB_MSG)
    .update(200, 0x5000n, 0x1000n, RW) // nothing left to answer
    .reply(201, F.IOTLB_MSG)
    .report();
  assert.equal(r.miss.count, 2);
  assert.equal(r.miss.unanswered, 0);
  inBucketOf(r.miss.p50Us, 80, 'p50');
  inBucketOf(r.miss.maxUs, 100, 'max');
  assert.deepEqual(r.miss.histogram.map((b) => b[2]), [1, 1]);
});

test('miss: never answered is counted as unanswered, not as a sample', async () => {
  const r = await new Trace()
    .miss(0, 0x9000n, RW)
    .update(100, 0xa000n, 0x1000n, RW)
    .reply(101, F.IOTLB_MSG)
    .update(200, 0xb000n, 0x1000n, RW)
    .reply(201, F.IOTLB_MSG)
    .miss(250, 0xb800n, RW) // covered by an UPDATE stamped 50 µs *before* it: still unanswered, flagged
    .report();
  assert.equal(r.miss.count, 0);
  assert.equal(r.miss.unanswered, 2);
  assert.equal(r.miss.coveredBefore, 1);
  assert.equal(r.miss.maxUs, 0);
  assert.deepEqual(r.miss.histogram, []);
});

test('miss: a MISS written after its UPDATE (serve drains its workers late) matches by time stamp', async () => {
  const r = await new Trace()
    .update(30, 0x7000n, 0x1000n, RW) // before the miss: not its answer
    .reply(31, F.IOTLB_MSG)
    .update(100, 0x7000n, 0x1000n, RW) // the answer, 60 µs after the miss
    .reply(101, F.IOTLB_MSG)
    .update(500, 0x7000n, 0x1000n, RW)
    .reply(501, F.IOTLB_MSG)
    .miss(40, 0x7abcn, RW) // recorded last, stamped 40 µs
    .report();
  assert.equal(r.miss.count, 1);
  assert.equal(r.miss.unanswered, 0);
  inBucketOf(r.miss.maxUs, 60, 'max');
});

test('front-end turn: last reply → next UPDATE answering a miss that was already waiting, once per UPDATE', async () => {
  const r = await new Trace()
    .miss(0, 0x1000n, RW)
    .miss(1, 0x2000n, RW)
    .miss(2, 0x2800n, RW)
    .update(50, 0x1000n, 0x1000n, RW) // no reply before it: no turn
    .reply(52, F.IOTLB_MSG)
    .update(200, 0x2000n, 0x1000n, RW) // answers two misses waiting since before 52: one turn of 148 µs
    .reply(203, F.IOTLB_MSG)
    .miss(400, 0x3000n, RW) // after the last reply: the front-end was idle, so no turn
    .update(430, 0x3000n, 0x1000n, RW)
    .reply(431, F.IOTLB_MSG)
    .update(600, 0x4000n, 0x1000n, RW) // reply at 431 → 600, but its MISS is written later,
    .reply(601, F.IOTLB_MSG)
    .miss(420, 0x4000n, RW) // stamped before that reply (serve --trace drains late): 169 µs
    .report();
  assert.equal(r.miss.count, 5);
  assert.equal(r.frontendTurn.count, 2);
  assert.equal(r.frontendTurn.unanswered, 0);
  inBucketOf(r.frontendTurn.p50Us, 148, 'turn p50');
  inBucketOf(r.frontendTurn.maxUs, 169, 'turn max');
});

test('acks: a reply answers the oldest request waiting for one, other requests in between', async () => {
  const r = await new Trace()
    .update(0, 0x1000n, 0x1000n, RW) // A, NEED_REPLY
    .update(10, 0x2000n, 0x1000n, RW, { needsReply: false }) // B: nobody replies to it
    .request(20, F.GET_FEATURES, { kind: 'none' }, false) // always answered
    .invalidate(30, 0x1000n, 0x1000n) // C
    .reply(100, F.IOTLB_MSG) // -> A: 100 µs
    .reply(300, F.GET_FEATURES, { kind: 'u64', value: 1n })
    .reply(1000, F.IOTLB_MSG) // -> C: 970 µs
    // A NEED_REPLY the back-end ignores (no REPLY_ACK), then an UPDATE: its reply is the UPDATE's.
    .request(1100, F.SET_VRING_NUM, { kind: 'vringState', index: 0, num: 256 }, true)
    .update(1200, 0x3000n, 0x1000n, RW) // D
    .reply(1500, F.IOTLB_MSG) // -> D: 300 µs
    .update(2000, 0x4000n, 0x1000n, RW) // E: the trace ends before its ack
    .report();
  assert.equal(r.updateAck.count, 2);
  inBucketOf(r.updateAck.p50Us, 100, 'update p50');
  inBucketOf(r.updateAck.maxUs, 300, 'update max');
  assert.equal(r.updateAck.unanswered, 1);
  assert.equal(r.invalidateAck.count, 1);
  inBucketOf(r.invalidateAck.maxUs, 970, 'invalidate max');
  assert.equal(r.invalidateAck.unanswered, 0);
  assert.equal(r.unmatchedReplies, 0);
});

test('two connections: misses and acks are matched within their own connection', async () => {
  const r = await new Trace()
    .miss(0, 0x1000n, RW, 0)
    .update(50, 0x1000n, 0x1000n, RW, { connection: 1 }) // the other front-end's: no answer for #0
    .reply(60, F.IOTLB_MSG, undefined, 1) // #1: 10 µs
    .update(400, 0x1000n, 0x1000n, RW, { connection: 0 }) // #0's answer: 400 µs
    .reply(401, F.IOTLB_MSG, undefined, 0) // #0: 1 µs
    .update(500, 0x8000n, 0x1000n, RW, { connection: 0 })
    .update(510, 0x8000n, 0x1000n, RW, { connection: 1 })
    .reply(530, F.IOTLB_MSG, undefined, 1) // #1: 20 µs
    .reply(900, F.IOTLB_MSG, undefined, 0) // #0: 400 µs
    .report();
  assert.equal(r.miss.count, 1);
  assert.equal(r.miss.unanswered, 0);
  inBucketOf(r.miss.maxUs, 400, 'miss max');
  assert.equal(r.updateAck.count, 4);
  inBucketOf(r.updateAck.p50Us, 10, 'update p50');
  inBucketOf(r.updateAck.p90Us, 400, 'update p90');
  inBucketOf(r.updateAck.maxUs, 400, 'update max');
  assert.deepEqual(r.updateAck.histogram.map((b) => b[2]), [1, 1, 1, 1]);
});

test('--filter does not cut round trips: they are matched over every message', async () => {
  const bytes = new Trace().miss(0, 0x1000n, RW).update(100, 0x1000n, 0x1000n, RW).reply(150, F.IOTLB_MSG).bytes();
  const stats = await decodeTrace(parseTrace(bytes), { stats: true, filter: parseFilters(['backend']) }, () => {});
  assert.equal(stats.messages, 1);
  const r = stats.roundTrips.report();
  assert.equal(r.miss.count, 1);
  assert.equal(r.updateAck.count, 1);
  const text = stats.render();
  assert.match(text, /│ miss → update +│ +1 │/);
  assert.match(text, /miss → update \(1\):\n +[\d.]+ µs – [\d.]+ µs │█+ 1/);
});

test('CLI: `trace decode --stats --json` on the recorded QEMU + DPDK IOMMU session reports round trips', () => {
  const r = spawnSync(process.execPath, [BIN, 'trace', 'decode', DPDK_IOMMU, '--stats', '--json'], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  assert.equal(r.status, 0, r.stderr);
  const stats = JSON.parse(r.stdout) as { iotlb: Record<string, number>; roundTrips: RoundTripReport };
  const rt = stats.roundTrips;
  assert.ok(rt, 'a roundTrips section');
  // Every MISS is a sample or unanswered; every UPDATE / INVALIDATE (all NEED_REPLY here) is acked or unanswered.
  assert.equal(rt.miss.count + rt.miss.unanswered, stats.iotlb.miss);
  assert.equal(rt.updateAck.count + rt.updateAck.unanswered, stats.iotlb.update);
  assert.equal(rt.invalidateAck.count + rt.invalidateAck.unanswered, stats.iotlb.invalidate);
  // Pinned from the fixture (12 misses, 14 updates, 6 invalidates, all answered); the slowest
  // miss is the first: MISS 0xffffe000 at 10458.304 ms, its UPDATE at 10462.307 ms.
  assert.deepEqual([rt.miss.count, rt.miss.unanswered, rt.updateAck.count, rt.invalidateAck.count], [12, 0, 14, 6]);
  inBucketOf(rt.miss.maxUs, 4003, 'miss max');
  for (const kind of ['miss', 'updateAck', 'invalidateAck', 'frontendTurn'] as const) {
    const s = rt[kind];
    assert.ok(s.p50Us <= s.p90Us && s.p90Us <= s.p99Us && s.p99Us <= s.maxUs && s.meanUs <= s.maxUs, `${kind}: ordered percentiles`);
    assert.equal(s.histogram.reduce((n, b) => n + b[2], 0), s.count, `${kind}: histogram holds every sample`);
  }
  const text = spawnSync(process.execPath, [BIN, 'trace', 'decode', DPDK_IOMMU, '--stats', '--no-color'], { encoding: 'utf8' });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /│ miss → update +│ +12 │/);
  assert.match(text.stdout, /update → ack \(14\):\n/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrontendRequest, IotlbType, encodeMessage } from '../../src/protocol/index.js';
import { TraceWriter } from '../../src/trace/writer.js';
import { TranslationResultCode } from '../../src/trace/format.js';
import { strategies } from '../../src/iotlb/registry.js';
import { DpdkStrategy } from '../../src/iotlb/strategies/dpdk.js';
import { IntervalStrategy } from '../../src/iotlb/strategies/interval.js';
import type { AccessBits, LookupOut, StrategyDefinition } from '../../src/iotlb/strategy.js';
import { EmptyTraceError, OP_INVALIDATE, OP_LOOKUP, OP_UPDATE, opsFromBytes } from '../../src/replay/ops.js';
import {
  COUNTER_COUNT, C_HITS, Replayer, ReplayMismatchError, analyse, freshCaches, replayFor,
} from '../../src/replay/replay.js';
import { ReferenceIotlb, type ReferenceAnswer } from '../../src/iotlb/reference.js';
import { oneEntry } from '../../src/replay/trivial.js';
import { parseStrategies } from '../../src/replay/fixtures.js';

const R = 1;
const W = 2;
const RW = 3;
const { hit, miss, denied } = TranslationResultCode;

interface Builder {
  w: TraceWriter;
  update(iova: number, size: number, uaddr: number, perm: number): void;
  invalidate(iova: number, size: number): void;
  lookup(queue: number, iova: number, len: number, access: number, result: number): void;
}

function builder(connection = 0): Builder {
  const w = TraceWriter.inMemory({ startTimeNs: 0n });
  let t = 0;
  const iotlb = (iotlbType: number, iova: number, size: number, uaddr: number, perm: number): void => {
    w.writeMessage({
      timeNs: BigInt((t += 1000)), connection, channel: 'frontend', direction: 'to-backend', fds: [],
      bytes: encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, needsReply: true,
        body: { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: BigInt(uaddr), perm, iotlbType } }),
    });
    w.writeMessage({
      timeNs: BigInt((t += 1000)), connection, channel: 'frontend', direction: 'to-frontend', fds: [],
      bytes: encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n } }),
    });
  };
  return {
    w,
    update: (iova, size, uaddr, perm) => iotlb(IotlbType.UPDATE, iova, size, uaddr, perm),
    invalidate: (iova, size) => iotlb(IotlbType.INVALIDATE, iova, size, 0, 0),
    lookup: (queue, iova, len, access, result) => w.translation((t += 10), connection, queue, iova, len, access, result),
  };
}

/**
 * The hand-built trace. Records: 3 updates + acks (0-5), six lookups (6-11), two
 * invalidates + acks (12-15), ... The results written are what an exact IOTLB answers.
 */
function handTrace(): Uint8Array {
  const b = builder();
  b.update(0x10000, 0x1000, 0x7000_0000, RW); // A
  b.update(0x11000, 0x1000, 0x7000_1000, RW); // B: continues A in IOVA and user space
  b.update(0x20000, 0x2000, 0x9000_0000, R); // C: read-only
  b.lookup(0, 0x10000, 64, R, hit);
  b.lookup(0, 0x10ff0, 0x20, W, hit); // stitched across A and B: 32 bytes
  b.lookup(1, 0x20010, 16, W, denied);
  b.lookup(1, 0x20010, 16, R, hit);
  b.lookup(0, 0x30000, 8, R, miss); // miss sent
  b.lookup(0, 0x30008, 8, R, miss); // same page still pending: not sent again
  b.invalidate(0x11000, 0x1000); // drops B (op 12 and 13: one per queue)
  b.invalidate(0x20800, 0x800); // splits C
  b.lookup(0, 0x11000, 8, R, miss); // op 16, record 16: a cache that ignored the invalidate hits here
  b.lookup(1, 0x10ff0, 0x20, R, hit); // now only 16 bytes
  b.lookup(1, 0x20900, 4, R, miss);
  b.lookup(1, 0x21000, 4, R, hit);
  b.lookup(0, 0x20000, 0x1000, R, hit); // 0x800 bytes left
  b.update(0x30000, 0x1000, 0xa000_0000, W); // answers the pending miss
  b.lookup(0, 0x30000, 8, W, hit);
  b.w.close();
  return b.w.bytes();
}

test('op stream: updates and invalidates fan out to every queue cache, lookups keep their queue', () => {
  const ops = opsFromBytes(handTrace(), 'hand.vhtrace');
  assert.deepEqual(ops.slots, [{ connection: 0, queue: 0 }, { connection: 0, queue: 1 }]);
  assert.equal(ops.lookups, 12);
  assert.equal(ops.updates, 4);
  assert.equal(ops.invalidates, 2);
  assert.equal(ops.count, 12 + 2 * (4 + 2));
  assert.equal(ops.recordedDisagreements, 0, 'the reference agrees with the results written by hand');
  assert.deepEqual([...ops.kind.subarray(0, 6)], Array(6).fill(OP_UPDATE));
  assert.deepEqual([...ops.slot.subarray(0, 6)], [0, 1, 0, 1, 0, 1]);
  assert.equal(ops.kind[6], OP_LOOKUP);
  assert.equal(ops.kind[12], OP_INVALIDATE);
  assert.equal(ops.record[16], 16);
  assert.equal(ops.refResult[7], 0x20, 'stitched');
  assert.equal(ops.refResult[8], -1, 'denied');
  assert.equal(ops.refResult[17], 16, 'B is gone');
  assert.equal(ops.refResult[20], 0x800, 'C was split');
});

test('every strategy: hit / miss / denied counts match the reference, misses sent are deduplicated per page', () => {
  const ops = opsFromBytes(handTrace(), 'hand.vhtrace');
  for (const def of [...strategies, oneEntry]) {
    const m = analyse(ops, def);
    assert.equal(m.hits + m.misses + m.denied, 12, def.name);
    if (def === oneEntry) continue; // evicts: checked, but its counts differ
    assert.deepEqual(
      { hits: m.hits, misses: m.misses, extra: m.extraMisses, denied: m.denied, sent: m.missesSent, evictions: m.evictions },
      { hits: 7, misses: 4, extra: 0, denied: 1, sent: 3, evictions: 0 }, def.name);
    assert.equal(m.peakEntries, 4, def.name); // A, C split in two, the late update (A and B: B gone first)
  }
});

test('a strategy that ignores invalidates is caught, with strategy, trace and op index', () => {
  class Stale extends IntervalStrategy {
    override invalidate(): number {
      return 0;
    }
  }
  const broken: StrategyDefinition = { name: 'stale', summary: 'ignores invalidate', create: (o) => new Stale(o) };
  const ops = opsFromBytes(handTrace(), 'hand.vhtrace');
  assert.throws(() => analyse(ops, broken), (err: unknown) => {
    assert.ok(err instanceof ReplayMismatchError);
    assert.equal(err.strategy, 'stale');
    assert.equal(err.source, 'hand.vhtrace');
    assert.equal(err.op, 16);
    assert.equal(err.record, 16);
    assert.match(err.message, /strategy "stale" .* on hand\.vhtrace at op 16 \(trace record 16\)/);
    assert.match(err.message, /stale entry/);
    return true;
  });
  // The timed replayer keeps the error instead of throwing into the benchmark loop.
  const r = new Replayer(ops, broken);
  r.run();
  assert.ok(r.error instanceof ReplayMismatchError);
  assert.equal(r.replays, 0);
});

test('a wrong user address or an over-long length is caught', () => {
  class OffByOne extends IntervalStrategy {
    override lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
      const r = super.lookup(iova, len, access, out);
      if (r > 0) out.uaddr += 1;
      return r;
    }
  }
  class TooLong extends IntervalStrategy {
    override lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
      const r = super.lookup(iova, len, access, out);
      return r > 0 ? len : r; // ignores where the mapping ends
    }
  }
  const ops = opsFromBytes(handTrace(), 'hand.vhtrace');
  assert.throws(() => analyse(ops, { name: 'off-by-one', summary: '', create: () => new OffByOne() }),
    /strategy "off-by-one" .* at op 6 .*wrong user address/);
  // The first over-long answer: op 17 asks 0x20 bytes at 0x10ff0 after B was invalidated.
  assert.throws(() => analyse(ops, { name: 'too-long', summary: '', create: () => new TooLong() }),
    /at op 17 .*length runs past/);
});

test('an evicting cache may miss where the reference hits: extra misses, refilled, never an error', () => {
  const tiny: StrategyDefinition = { name: 'dpdk-1', summary: '', create: (o) => new DpdkStrategy({ ...o, capacity: 1 }) };
  const ops = opsFromBytes(handTrace(), 'hand.vhtrace');
  const m = analyse(ops, tiny);
  assert.ok(m.evictions > 0);
  assert.ok(m.extraMisses > 0);
  assert.equal(m.hits + m.misses + m.denied, 12);
  assert.equal(m.misses - m.extraMisses, 4, 'the reference misses stay misses');
  // A cache that loses a mapping without evicting is a bug, not an extra miss.
  class Forgetful extends IntervalStrategy {
    override lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number {
      return iova === 0x21000 ? 0 : super.lookup(iova, len, access, out);
    }
  }
  assert.throws(() => analyse(ops, { name: 'forgetful', summary: '', create: () => new Forgetful() }),
    /at op 19 .*never evicted/);
});

test('the timed replay gives the same answers as the checked one, every time, for every strategy', () => {
  const ops = opsFromBytes(handTrace(), 'hand.vhtrace');
  for (const def of strategies) {
    const r = new Replayer(ops, def);
    for (let i = 0; i < 5; i++) r.run();
    assert.equal(r.error, null, def.name);
    assert.equal(r.counters[C_HITS], 5 * 7, def.name);
  }
});

test('messages are checked like the device does: bad updates rejected, huge invalidates clamped', () => {
  const b = builder(3);
  b.update(0x1000, 0, 0x5000, RW); // size 0
  b.update(0x1000, 0x1000, 0x5000, 0); // perm none
  b.update(2 ** 53 - 0x1000, 0x2000, 0x5000, RW); // past 2^53
  b.update(0x1000, 0x1000, 0x5000, RW);
  b.lookup(5, 0x1000, 4, R, hit);
  b.w.writeMessage({ timeNs: 1n, connection: 3, channel: 'frontend', direction: 'to-backend', fds: [],
    bytes: encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG,
      body: { kind: 'iotlb', iova: 0n, size: 2n ** 64n - 1n, userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE } }) });
  b.lookup(5, 0x1000, 4, R, miss);
  b.w.close();
  const ops = opsFromBytes(b.w.bytes(), 'x');
  assert.equal(ops.rejected, 3);
  assert.equal(ops.updates, 1);
  assert.equal(ops.invalidates, 1);
  assert.deepEqual(ops.slots, [{ connection: 3, queue: 5 }]);
  assert.equal(ops.size[2], 2 ** 53);
  assert.equal(ops.recordedDisagreements, 0);
  for (const def of strategies) assert.equal(analyse(ops, def).hits, 1, def.name);
});

test('an empty trace (or one with only other messages) is an error naming the file', () => {
  const w = TraceWriter.inMemory({ startTimeNs: 0n });
  w.writeMessage({ timeNs: 0n, connection: 0, channel: 'frontend', direction: 'to-backend', fds: [],
    bytes: encodeMessage({ channel: 'frontend', request: FrontendRequest.GET_FEATURES, body: { kind: 'none' } }) });
  w.close();
  assert.throws(() => opsFromBytes(w.bytes(), 'empty.vhtrace'),
    (err: unknown) => err instanceof EmptyTraceError && err.message === 'no IOTLB operations or translations in empty.vhtrace');
});

test('a truncated trace fails with the byte offset', () => {
  const bytes = handTrace();
  assert.throws(() => opsFromBytes(bytes.subarray(0, bytes.length - 5), 'cut.vhtrace'),
    /^TraceFormatError: cut\.vhtrace: truncated record at byte \d+/);
});

test('reference IOTLB: newest wins, exact trims, stitching stops at a user-address gap', () => {
  const ref = new ReferenceIotlb();
  const a: ReferenceAnswer = { result: 0, uaddr: 0, entryIova: 0, entrySize: 0, entryUaddr: 0, entryPerm: 0 };
  ref.insert(0x0, 0x3000, 0x10000, RW);
  ref.insert(0x1000, 0x1000, 0x50000, R); // replaces the middle
  assert.equal(ref.size, 3);
  assert.equal(ref.lookup(0x1800, 4, R, a).uaddr, 0x50800);
  assert.equal(ref.lookup(0x0, 0x3000, R, a).result, 0x1000, 'user-address gap stops the stitch');
  assert.equal(ref.lookup(0x1000, 4, W, a).result, -1);
  ref.invalidate(0x800, 0x2000);
  assert.equal(ref.lookup(0x800, 4, R, a).result, 0);
  assert.equal(ref.lookup(0x2800, 4, R, a).uaddr, 0x12800);
  assert.equal(ref.lookup(0x7ff, 4, R, a).result, 1);
});

test('unknown strategy: the error lists the valid ones', () => {
  assert.throws(() => parseStrategies(['dpdk,nope']), /unknown IOTLB strategy "nope"; valid strategies: dpdk, lru, interval, coalescing/);
  assert.deepEqual(parseStrategies(undefined).map((d) => d.name), strategies.map((d) => d.name));
  assert.deepEqual(parseStrategies(['coalescing,dpdk', 'dpdk']).map((d) => d.name), ['coalescing', 'dpdk']);
});

// The rate itself (>= 10M lookups/s) is measured and reported by bench/run-all.ts, not asserted here.
test('the replay engine replays a long trace with a trivial strategy, every lookup a hit', () => {
  // A long static trace: one 1 GiB mapping, 200k lookups on two queues.
  const b = builder();
  b.update(0x1_0000_0000, 2 ** 30, 0x7f00_0000_0000, RW);
  let x = 12345;
  for (let i = 0; i < 200_000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b.lookup(i & 1, 0x1_0000_0000 + (x % (2 ** 30 - 2048)), 64 + (x % 1400), (x & 1) + 1, hit);
  }
  b.w.close();
  const ops = opsFromBytes(b.w.bytes(), 'long');
  const caches = freshCaches(oneEntry, ops);
  const run = replayFor(oneEntry);
  const counters = new Float64Array(COUNTER_COUNT);
  for (let round = 0; round < 3; round++) run(ops, caches, oneEntry.name, counters);
  assert.equal(ops.lookups, 200_000);
  assert.equal(counters[C_HITS], 3 * 200_000);
});

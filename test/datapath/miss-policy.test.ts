/**
 * The worker's miss policy (src/datapath/miss-policy.ts) on one ring whose virtqueue is a
 * stand-in that stops where a test says: which misses reach the backend channel (a real
 * socket pair, decoded on the other end), when a parked ring resumes, and what batching and
 * prefetching add.
 */
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MissPolicy, MISS_RETRY_MS, type MissPolicyOptions } from '../../src/datapath/miss-policy.js';
import { encodeIotlbRequest, MissReporter } from '../../src/datapath/miss-reporter.js';
import { Ring } from '../../src/datapath/ring.js';
import { createStatsBuffer, RingCounter } from '../../src/datapath/stats.js';
import type { WorkerSetup } from '../../src/datapath/contract.js';
import { PendingMisses } from '../../src/iotlb/pending-misses.js';
import { getStrategy } from '../../src/iotlb/registry.js';
import { Access } from '../../src/iotlb/strategy.js';
import { decodeMessage, IotlbType, MessageFramer } from '../../src/protocol/index.js';
import { closeFd, receiveMessage, socketPair } from '../../src/sys/index.js';
import { WALK_MISS, WALK_OK } from '../../src/virtqueue/chain.js';

/** The part of a virtqueue the miss policy reads: where the burst stopped, and what lies ahead. */
class StoppedQueue {
  missPending = false;
  missAddr = 0;
  missAccess = 0;
  broken = false;
  /** IOVA each chain ahead of the head misses at (undefined: it maps), or the readable pages it misses. */
  ahead: Array<number | number[] | undefined> = [];
  walks = 0;
  /** As ChainWalker.missSink: set while the policy probes. */
  missSink: ((addr: number, access: number) => boolean) | null = null;

  stopAt(iova: number, access = Access.Read): void {
    this.missPending = true;
    this.missAddr = iova;
    this.missAccess = access;
  }
  clearMiss(): void {
    this.missPending = false;
  }
  knownAvailable(): number {
    return this.ahead.length;
  }
  walkChain(ahead: number): number {
    this.walks++;
    const at = this.ahead[ahead];
    if (at === undefined) return WALK_OK;
    for (const page of typeof at === 'number' ? [at] : at) {
      if (typeof at !== 'number' && this.missSink?.(page, Access.Read)) continue;
      this.stopAt(page);
      return WALK_MISS;
    }
    return WALK_OK;
  }
}

const open: number[] = [];
afterEach(() => {
  for (const fd of open.splice(0)) closeFd(fd);
});

function rig(options: Partial<MissPolicyOptions> = {}) {
  const [frontend, backend] = socketPair();
  open.push(frontend, backend);
  const setup = { packed: false, headerLength: 12, mergeableRx: false } as WorkerSetup;
  const ring = new Ring(1, setup, createStatsBuffer());
  const queue = new StoppedQueue();
  (ring as unknown as { queue: StoppedQueue }).queue = queue;
  ring.cache = getStrategy('coalescing').create();
  ring.pending = new PendingMisses();
  const reporter = new MissReporter(backend);
  const policy = new MissPolicy(reporter, { prefetch: 0, batchMisses: false, ...options });
  /** The IOVAs of the misses the front-end received since the last call. */
  const sent = (): string[] => {
    const framer = new MessageFramer();
    const buf = new Uint8Array(8192);
    for (let r = receiveMessage(frontend, buf); r !== null; r = receiveMessage(frontend, buf)) framer.push(buf.subarray(0, r.bytes), r.fds);
    const out: string[] = [];
    for (let f = framer.next(); f !== null; f = framer.next()) {
      const m = decodeMessage('backend', f.bytes, f.fds);
      assert.equal(m.body.kind, 'iotlb');
      const b = m.body as { iotlbType: number; iova: bigint };
      assert.equal(b.iotlbType, IotlbType.MISS);
      out.push(b.iova.toString(16));
    }
    return out;
  };
  return { ring, queue, policy, sent, reporter, frontend };
}

describe('miss policy', () => {
  it('sends a miss once, parks the ring, and resumes it when an UPDATE covers the address', () => {
    const { ring, queue, policy, sent } = rig();
    queue.stopAt(0x5123);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['5123']);
    assert.equal(queue.missPending, false, 'the miss is taken off the queue');
    assert.equal(policy.answered(ring), false, 'parked until answered');
    // Stopping at the same page again while it is pending sends nothing.
    queue.stopAt(0x5800);
    policy.stopped(ring);
    assert.deepEqual(sent(), []);
    // An UPDATE elsewhere leaves it parked; one covering the address resumes it.
    policy.mapped(ring, 0x9000, 0x1000, Access.ReadWrite);
    assert.equal(policy.answered(ring), false);
    policy.mapped(ring, 0x5000, 0x1000, Access.ReadWrite);
    assert.equal(policy.answered(ring), true);
    assert.equal(ring.missLatency.count, 1, 'the round trip is recorded once');
    assert.equal(ring.counters[RingCounter.missesSent], 1);
  });

  it('holds the misses of a burst until the worker is quiescent, then sends them in order', () => {
    const { ring, queue, policy, sent, reporter } = rig({ batchMisses: true });
    reporter.hold();
    queue.ahead = [undefined, 0x9000, undefined, 0xa000];
    queue.stopAt(0x8000);
    policy.stopped(ring);
    assert.deepEqual(sent(), [], 'nothing reaches the front-end inside the burst');
    assert.equal(policy.answered(ring), false, 'the ring is parked all the same');
    assert.equal(ring.counters[RingCounter.missesSent], 3);
    reporter.release();
    assert.deepEqual(sent(), ['8000', '9000', 'a000']);
    reporter.release();
    assert.deepEqual(sent(), [], 'each is sent once');
    // Outside a burst a miss goes at once.
    queue.ahead = [];
    queue.stopAt(0xb000);
    ring.missStalled = false;
    policy.stopped(ring);
    assert.deepEqual(sent(), ['b000']);
  });

  it('sends each request byte for byte as the codec encodes it, from one reused buffer', () => {
    const { reporter, frontend } = rig();
    const cases: Array<[number, number, number]> = [
      [IotlbType.MISS, 0x1234_5678_9abc, Access.ReadWrite], [IotlbType.ACCESS_FAIL, 2 ** 52 + 4096, Access.Write], [IotlbType.MISS, 0, Access.Read],
    ];
    for (const [type, iova, perm] of cases) {
      if (type === IotlbType.MISS) reporter.miss(0, iova, perm);
      else reporter.accessFail(0, iova, perm);
    }
    const buf = new Uint8Array(4096);
    let got = new Uint8Array(0);
    for (let r = receiveMessage(frontend, buf); r !== null; r = receiveMessage(frontend, buf)) got = new Uint8Array([...got, ...buf.subarray(0, r.bytes)]);
    const want = cases.flatMap(([type, iova, perm]) => [...encodeIotlbRequest(type, iova, perm)]);
    assert.deepEqual([...got], want);
  });

  it('drops the held misses of a ring that stops, and only those', () => {
    const { sent, reporter } = rig();
    reporter.hold();
    reporter.miss(0, 0x1000, Access.Write);
    reporter.miss(1, 0x2000, Access.Read);
    reporter.miss(0, 0x3000, Access.Write);
    reporter.discard(1);
    reporter.release();
    assert.deepEqual(sent(), ['1000', '3000']);
  });

  it('sends at once what does not fit in the held list, so a long batch loses nothing', () => {
    const { ring, queue, policy, sent, reporter } = rig({ batchMisses: true, prefetch: 0x40000 });
    reporter.hold();
    // A fresh miss with prefetch asks for 63 more pages; batched chains add 64 misses, each with its prefetch.
    queue.ahead = [undefined, ...Array.from({ length: 64 }, (_, i) => 0x1000000 * (i + 1))];
    queue.stopAt(0x100000);
    policy.stopped(ring);
    const early = sent().length;
    assert.ok(early > 0, 'past the held list the rest goes out during the burst');
    reporter.release();
    const total = early + sent().length;
    assert.equal(total, ring.counters[RingCounter.missesSent], 'every counted miss reached the front-end');
  });

  it('asks again, for the address it stopped at only, once MISS_RETRY_MS pass unanswered', () => {
    const { ring, queue, policy, sent } = rig();
    queue.stopAt(0x7000);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['7000']);
    ring.stalledAt -= MISS_RETRY_MS + 1;
    assert.equal(policy.answered(ring), true, 'the ring is retried');
    queue.stopAt(0x7000);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['7000'], 'the pending entry was cleared, so the miss goes out again');
  });

  it('sends a miss afresh after an INVALIDATE of its range', () => {
    const { ring, queue, policy, sent } = rig();
    queue.stopAt(0x3000);
    policy.stopped(ring);
    policy.unmapped(ring, 0x3000, 0x1000);
    queue.stopAt(0x3000);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['3000', '3000']);
  });

  it('with batching, sends every distinct miss of the chains behind the head, once', () => {
    const { ring, queue, policy, sent } = rig({ batchMisses: true });
    queue.ahead = [undefined, 0x11000, undefined, 0x12000, 0x11800];
    queue.stopAt(0x10000);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['10000', '11000', '12000'], '0x11800 shares a pending page with 0x11000');
    // The head is pending now: stopping there again walks nothing more.
    const walks = queue.walks;
    queue.stopAt(0x10000);
    policy.stopped(ring);
    assert.equal(queue.walks, walks);
    assert.deepEqual(sent(), []);
  });

  it('with batching, sends every missing page of the chain it stopped at and of those behind, and leaves the sink unset', () => {
    const { ring, queue, policy, sent } = rig({ batchMisses: true });
    queue.ahead = [[0x10000, 0x11000, 0x12000], [0x20000, 0x21000], 0x30000];
    queue.stopAt(0x10000);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['10000', '11000', '12000', '20000', '21000', '30000']);
    assert.equal(queue.missSink, null);
    assert.equal(ring.counters[RingCounter.missesSent], 6);
  });

  it('caps a batch at 64 extra misses however many chains miss', () => {
    const { ring, queue, policy, sent } = rig({ batchMisses: true });
    queue.ahead = [undefined, ...Array.from({ length: 500 }, (_, i) => 0x100000 + i * 0x1000)];
    queue.stopAt(0x10000);
    policy.stopped(ring);
    assert.equal(sent().length, 1 + 64);
    // The same cap within one chain's pages.
    const one = rig({ batchMisses: true });
    one.queue.ahead = [Array.from({ length: 500 }, (_, i) => 0x100000 + i * 0x1000)];
    one.queue.stopAt(0x100000);
    one.policy.stopped(one.ring);
    assert.equal(one.sent().length, 1 + 64);
  });

  it('with prefetch, asks for the unmapped pages of the aligned block around a fresh miss', () => {
    const { ring, queue, policy, sent } = rig({ prefetch: 0x4000 });
    ring.cache!.insert({ iova: 0x21000, size: 0x1000, uaddr: 0x7f0000000000, perm: Access.ReadWrite });
    queue.stopAt(0x22010);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['22010', '20000', '23000'], 'the cached page 0x21000 is not asked for');
    // The prefetched pages are not pending: a real miss on one is still sent.
    queue.stopAt(0x23000);
    policy.stopped(ring);
    assert.deepEqual(sent(), ['23000', '20000'], 'the block again, less the cached page and the pending 0x22000');
  });
});

// Replaying a trace that has no translation records — the proxy recording of QEMU <-> DPDK's
// vhost (fixtures/traces/recorded/qemu-dpdk-iommu.vhtrace) — from the misses the back-end
// revealed, and the workload profile `bench` prints. The expected misses are worked out here
// from the trace's own messages, independently of src/replay/ops.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FrontendRequest, IotlbType, decodeMessage, encodeMessage } from '../../src/protocol/index.js';
import { parseTrace } from '../../src/trace/reader.js';
import { TraceWriter } from '../../src/trace/writer.js';
import { strategies } from '../../src/iotlb/registry.js';
import type { AccessBits, IotlbStrategy, LookupOut, StrategyDefinition } from '../../src/iotlb/strategy.js';
import { OP_LOOKUP, opsFromBytes, type OpStream } from '../../src/replay/ops.js';
import { analyse } from '../../src/replay/replay.js';
import { workloadProfile } from '../../src/replay/profile.js';
import { packageRoot } from '../../src/replay/fixtures.js';
import { runCli } from '../support/cli.js';

const FIXTURE = join(packageRoot(), 'fixtures', 'traces', 'recorded', 'qemu-dpdk-iommu.vhtrace');
const PAGE = 0x1000;

interface Miss { record: number; iova: number; perm: number }

/**
 * The trace's own MISS messages, and which of them asked for a page the front-end had
 * mapped at that moment (every UPDATE and INVALIDATE in this recording is one 4 KiB page,
 * checked below, so a set of pages is an exact model).
 */
function traceMisses(bytes: Uint8Array): { misses: Miss[]; mappedAtMiss: Miss[] } {
  const misses: Miss[] = [];
  const mappedAtMiss: Miss[] = [];
  const mapped = new Set<number>();
  let index = 0;
  for (const r of parseTrace(bytes)) {
    const record = index++;
    if (r.type !== 'message') continue;
    const msg = decodeMessage(r.channel, r.bytes, r.fds.map(() => -1));
    if (msg.isReply || msg.body.kind !== 'iotlb') continue;
    const { iova, size, iotlbType, perm } = msg.body;
    const page = Number(iova) - (Number(iova) % PAGE);
    if (r.channel === 'backend' && iotlbType === IotlbType.MISS) {
      const miss = { record, iova: Number(iova), perm };
      misses.push(miss);
      if (mapped.has(page)) mappedAtMiss.push(miss);
    } else if (r.channel === 'frontend') {
      assert.equal(size, BigInt(PAGE), 'single-page IOTLB messages');
      if (iotlbType === IotlbType.UPDATE) mapped.add(page);
      else if (iotlbType === IotlbType.INVALIDATE) mapped.delete(page);
    }
  }
  return { misses, mappedAtMiss };
}

/** Wraps a strategy to note the IOVA of every lookup it missed. */
function recording(def: StrategyDefinition, missed: number[]): StrategyDefinition {
  return {
    ...def,
    create: (options) => {
      const inner = def.create(options);
      return new Proxy(inner, {
        get(target, key) {
          if (key !== 'lookup') {
            const v = Reflect.get(target, key, target) as unknown;
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
          }
          return (iova: number, len: number, access: AccessBits, out: LookupOut): number => {
            const r = target.lookup(iova, len, access, out);
            if (r === 0) missed.push(iova);
            return r;
          };
        },
      }) as IotlbStrategy;
    },
  };
}

const lookupRows = (ops: OpStream): Miss[] => {
  const rows: Miss[] = [];
  for (let i = 0; i < ops.count; i++) if (ops.kind[i] === OP_LOOKUP) rows.push({ record: ops.record[i], iova: ops.iova[i], perm: ops.perm[i] });
  return rows;
};

test('proxy-recorded QEMU <-> DPDK trace: every back-end MISS is a lookup, and the replay misses what the trace says', () => {
  const bytes = readFileSync(FIXTURE);
  const { misses, mappedAtMiss } = traceMisses(bytes);
  assert.equal(misses.length, 12, 'the recording holds 12 MISS messages');
  // DPDK asked once for a page QEMU had mapped (and re-mapped elsewhere without an INVALIDATE).
  assert.deepEqual(mappedAtMiss.map((m) => m.iova), [0xffffac06]);

  const ops = opsFromBytes(bytes, 'qemu-dpdk-iommu');
  assert.equal(ops.replay, 'revealed-misses');
  assert.equal(ops.lookups, 12);
  assert.equal(ops.recordedMisses, 12);
  assert.equal(ops.recordedDisagreements, mappedAtMiss.length);
  // Same messages, same IOVAs and perms, in the trace's order among the UPDATEs / INVALIDATEs.
  assert.deepEqual(lookupRows(ops), misses);

  const expected = misses.filter((m) => !mappedAtMiss.includes(m)).map((m) => m.iova);
  for (const def of strategies) {
    const missed: number[] = [];
    const m = analyse(ops, recording(def, missed));
    assert.deepEqual(missed, expected, `${def.name}: the lookups it missed`);
    assert.equal(m.misses, 11, def.name);
    assert.equal(m.hits, 1, `${def.name}: hits where DPDK missed`);
    assert.equal(m.missesSent, 11, `${def.name}: each on a page not already pending`);
    assert.equal(m.extraMisses, 0, def.name);
  }
});

test('workload profile of the proxy-recorded trace, and `bench --json` reports it with the kind of replay', () => {
  const ops = opsFromBytes(readFileSync(FIXTURE), 'qemu-dpdk-iommu');
  const profile = workloadProfile('qemu-dpdk-iommu', ops);
  assert.deepEqual(profile, {
    trace: 'qemu-dpdk-iommu',
    replay: 'revealed-misses',
    replayLabel: 'misses revealed by the back-end',
    lookups: 12,
    caches: 1,
    updates: 14,
    setupUpdates: 0,
    invalidates: 6,
    updatesPer1kLookups: 14_000 / 12,
    invalidatesPer1kLookups: 500,
    entriesMapped: 9,
    iovaLow: 0xffea4000,
    iovaHigh: 0x1_0000_0000,
    iovaSpan: 0x1_0000_0000 - 0xffea4000,
    pagesLookedUp: 9,
    pageSizes: [{ bytes: 4096, count: 14 }],
    recordedMisses: 12,
    revealedAlreadyMapped: 1,
  });

  const r = runCli(['bench', FIXTURE, '--json', '--time', '0.01', '--strategy', 'dpdk,coalescing'], { env: { NO_COLOR: '1' } });
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as { traces: unknown[]; rows: Array<{ replay: string; lookups: number }> };
  assert.deepEqual(doc.traces, [profile]);
  assert.deepEqual(doc.rows.map((row) => [row.replay, row.lookups]), [['revealed-misses', 12], ['revealed-misses', 12]]);

  const text = runCli(['bench', FIXTURE, '--time', '0.01', '--strategy', 'dpdk'], { env: { NO_COLOR: '1' } });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^qemu-dpdk-iommu\nreplay: misses revealed by the back-end \(12 lookups, 1 cache\)\n/);
  assert.match(text.stdout, /workload: ≤ 9 mappings live; per 1000 lookups 1167 UPDATE, 500 INVALIDATE; IOVAs 0xffea4000–0x100000000 \(1\.4 MiB span, 9 pages looked up\); UPDATE sizes 4 KiB ×14\n/);
  assert.match(text.stdout, /1 of 12 MISSes asked for a mapping still granted/);
});

/** A tiny trace: one UPDATE, a translation maybe, and a back-end MISS written late. */
function mixedTrace(withTranslation: boolean): Uint8Array {
  const w = TraceWriter.inMemory({ startTimeNs: 0n });
  const iotlb = (timeNs: bigint, channel: 'frontend' | 'backend', iotlbType: number, iova: number, perm: number): void => {
    const request = channel === 'frontend' ? FrontendRequest.IOTLB_MSG : 1;
    w.writeMessage({ timeNs, connection: 0, channel, direction: channel === 'frontend' ? 'to-backend' : 'to-frontend', fds: [],
      bytes: encodeMessage({ channel, request, body: { kind: 'iotlb', iova: BigInt(iova), size: channel === 'frontend' ? 0x1000n : 0n,
        userAddr: channel === 'frontend' ? 0x7000_0000n : 0n, perm, iotlbType } } as Parameters<typeof encodeMessage>[0]) });
  };
  if (withTranslation) w.translation(900, 0, 1, 0x5000, 8, 1, 1);
  iotlb(1000n, 'frontend', IotlbType.UPDATE, 0x5000, 3);
  if (withTranslation) w.translation(1100, 0, 1, 0x5000, 8, 1, 0);
  // Stamped before the UPDATE that answered it, written after (as serve drains its workers' MISSes).
  iotlb(950n, 'backend', IotlbType.MISS, 0x5008, 1);
  w.close();
  return w.bytes();
}

test('translation records win over MISS messages; revealed misses are ordered by time stamp', () => {
  const both = opsFromBytes(mixedTrace(true), 'both');
  assert.equal(both.replay, 'translations');
  assert.equal(both.lookups, 2, 'the MISS is not counted a second time');
  assert.equal(both.recordedMisses, 1);
  assert.deepEqual(both.slots, [{ connection: 0, queue: 1 }]);

  const misses = opsFromBytes(mixedTrace(false), 'misses');
  assert.equal(misses.replay, 'revealed-misses');
  assert.deepEqual([...misses.kind], [OP_LOOKUP, 1], 'the MISS replays before the UPDATE stamped after it');
  assert.equal(misses.recordedDisagreements, 0);
  for (const def of strategies) assert.equal(analyse(misses, def).misses, 1, def.name);
});

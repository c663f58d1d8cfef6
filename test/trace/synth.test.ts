import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { IotlbType, decodeMessage, type VhostMessage } from '../../src/protocol/index.js';
import { parseTraceAll } from '../../src/trace/reader.js';
import { SCENARIO_NAMES, synthTrace, type ScenarioName, type SynthOptions } from '../../src/trace/synth.js';
import { IovaAllocator } from '../../src/trace/synth/iova-allocator.js';
import { TraceFlags } from '../../src/trace/format.js';
import type { MessageRecord, TraceRecord, TranslationRecord } from '../../src/trace/records.js';

function decoded(records: TraceRecord[]): Array<{ rec: MessageRecord; msg: VhostMessage } | TranslationRecord> {
  return records.map((r) => (r.type === 'message' ? { rec: r, msg: decodeMessage(r.channel, r.bytes, []) } : r));
}

test('same seed gives the same bytes; another seed differs', () => {
  for (const scenario of SCENARIO_NAMES) {
    const opts: SynthOptions = { scenario, packets: 200, guestMib: scenario === 'static-4k' ? 4 : undefined };
    const a = synthTrace(opts).bytes;
    const b = synthTrace(opts).bytes;
    assert.deepEqual(a, b, scenario);
    const c = synthTrace({ ...opts, seed: 2 }).bytes;
    assert.notDeepEqual(a, c, scenario);
  }
});

test('fixtures match the generator', () => {
  const fixtures: Array<[ScenarioName, SynthOptions]> = [
    ['static-1g', { scenario: 'static-1g', packets: 600 }],
    ['static-2m', { scenario: 'static-2m', packets: 600 }],
    ['static-4k', { scenario: 'static-4k', packets: 600, guestMib: 4 }],
    ['dynamic', { scenario: 'dynamic', packets: 600 }],
    ['multiqueue', { scenario: 'multiqueue', packets: 600 }],
  ];
  for (const [name, opts] of fixtures) {
    const file = new Uint8Array(readFileSync(new URL(`../../../fixtures/traces/${name}.vhtrace`, import.meta.url)));
    assert.ok(file.length < 400 * 1024, `${name} fixture is small`);
    assert.deepEqual(file, synthTrace(opts).bytes, `fixtures/traces/${name}.vhtrace is stale: regenerate (fixtures/traces/README.md)`);
  }
});

test('every synthetic trace decodes: valid header, messages the codec accepts, monotonic time', () => {
  for (const scenario of SCENARIO_NAMES) {
    const { bytes, summary } = synthTrace({ scenario, packets: 300, guestMib: scenario === 'static-4k' ? 4 : undefined });
    const { header, records } = parseTraceAll(bytes);
    assert.equal(header.flags & TraceFlags.Synthetic, TraceFlags.Synthetic);
    assert.equal(header.startTimeNs, 0n);
    let last = 0n;
    for (const r of records) {
      assert.ok(r.timeNs >= last, `${scenario}: time goes backwards`);
      last = r.timeNs;
    }
    const items = decoded(records);
    assert.equal(items.filter((i) => 'msg' in i).length, summary.messages);
    assert.equal(items.filter((i) => !('msg' in i)).length, summary.translations);
    // Every UPDATE/INVALIDATE asks for a reply and gets an ack right after.
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      if ('msg' in it && it.msg.body.kind === 'iotlb' && it.msg.channel === 'frontend') {
        assert.ok(it.msg.needsReply);
        const next = items[i + 1]!;
        assert.ok('msg' in next && next.msg.isReply && next.msg.body.kind === 'u64' && next.msg.body.value === 0n);
      }
    }
  }
});

test('static scenarios: whole area mapped RW at start with the right page size, then only hits', () => {
  const cases: Array<[ScenarioName, number, number]> = [['static-1g', 1024, 2 ** 30], ['static-2m', 64, 2 ** 21], ['static-4k', 4, 4096]];
  for (const [scenario, guestMib, unit] of cases) {
    const { bytes, summary } = synthTrace({ scenario, packets: 400, guestMib });
    const items = decoded(parseTraceAll(bytes).records);
    const firstTranslation = items.findIndex((i) => !('msg' in i));
    const updates = items.filter((i) => 'msg' in i && i.msg.body.kind === 'iotlb');
    assert.equal(updates.length, (guestMib * 2 ** 20) / unit);
    assert.equal(summary.invalidates, 0);
    updates.forEach((u, k) => {
      assert.ok('msg' in u && u.msg.body.kind === 'iotlb');
      const b = u.msg.body;
      assert.equal(b.iotlbType, IotlbType.UPDATE);
      assert.equal(b.size, BigInt(unit));
      assert.equal(b.iova, 0x1_0000_0000n + BigInt(k * unit));
      assert.equal(b.userAddr % BigInt(unit), 0n);
      assert.equal(b.perm, 3);
    });
    assert.ok(items.slice(firstTranslation).every((i) => !('msg' in i)), 'no messages after the traffic starts');
    const translations = items.filter((i): i is TranslationRecord => !('msg' in i));
    assert.ok(translations.every((t) => t.result === 'hit'));
    assert.equal(summary.hits, translations.length);
    // Lookups never cross a mapping unit; sizes are sane; queues 0 and 1 only.
    for (const t of translations) {
      assert.ok(t.length >= 1 && t.length <= 1518 + 12);
      assert.equal((t.iova / BigInt(unit)), (t.iova + BigInt(t.length) - 1n) / BigInt(unit));
      assert.ok(t.queue === 0 || t.queue === 1);
    }
    // RX buffers (queue 0, written, > 16 bytes) are packet sized: 64..1518 + header.
    if (unit > 4096) {
      const rx = translations.filter((t) => t.queue === 0 && t.access === 2 && t.length > 16);
      assert.ok(rx.length > 0);
      assert.ok(rx.every((t) => t.length >= 76 && t.length <= 1530));
    }
  }
});

test('multiqueue: several queues interleave', () => {
  const { bytes } = synthTrace({ scenario: 'multiqueue', packets: 2000, queues: 4 });
  const translations = parseTraceAll(bytes).records.filter((r): r is TranslationRecord => r.type === 'translation');
  const queues = new Set(translations.map((t) => t.queue));
  assert.deepEqual([...queues].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7]);
  let switches = 0;
  for (let i = 1; i < translations.length; i++) if (translations[i]!.queue >> 1 !== translations[i - 1]!.queue >> 1) switches++;
  assert.ok(switches > 20, `queue pairs interleave (${switches} switches)`);
});

test('dynamic: every miss is answered by MISS then an UPDATE covering it, then a hit; buffers invalidated after use', () => {
  const { bytes, summary } = synthTrace({ scenario: 'dynamic', packets: 1500, queues: 2 });
  const items = decoded(parseTraceAll(bytes).records);
  const mapped: Array<{ iova: bigint; size: bigint; perm: number; lastUse: number; invalidated: boolean }> = [];
  const covering = (iova: bigint) => mapped.find((m) => !m.invalidated && iova >= m.iova && iova < m.iova + m.size);
  let misses = 0;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    if (!('msg' in it)) {
      if (it.result === 'miss') {
        misses++;
        assert.equal(covering(it.iova), undefined, 'a miss only where nothing is mapped');
        const miss = items[i + 1]!;
        assert.ok('msg' in miss && miss.msg.channel === 'backend' && miss.rec.direction === 'to-frontend');
        assert.ok(miss.msg.body.kind === 'iotlb' && miss.msg.body.iotlbType === IotlbType.MISS && miss.msg.body.iova === it.iova);
        assert.equal(miss.msg.body.perm, it.access);
        const update = items[i + 2]!;
        assert.ok('msg' in update && update.msg.body.kind === 'iotlb' && update.msg.body.iotlbType === IotlbType.UPDATE);
        const u = update.msg.body;
        assert.ok(it.iova >= u.iova && it.iova + BigInt(it.length) <= u.iova + u.size, 'the update covers the missed range');
        assert.equal(u.perm & it.access, it.access, 'with the access asked for');
        const retry = items[i + 4]!; // after the ack
        assert.ok(!('msg' in retry) && retry.result === 'hit' && retry.iova === it.iova);
      } else {
        assert.equal(it.result, 'hit');
        const m = covering(it.iova);
        assert.ok(m, `hit at 0x${it.iova.toString(16)} is mapped`);
        assert.equal(m.perm & it.access, it.access);
        m.lastUse = i;
      }
      continue;
    }
    const b = it.msg.body;
    if (b.kind !== 'iotlb' || it.msg.isReply) continue;
    if (b.iotlbType === IotlbType.UPDATE) mapped.push({ iova: b.iova, size: b.size, perm: b.perm, lastUse: i, invalidated: false });
    if (b.iotlbType === IotlbType.INVALIDATE) {
      const hit = mapped.filter((m) => !m.invalidated && m.iova >= b.iova && m.iova + m.size <= b.iova + b.size);
      assert.ok(hit.length > 0, 'an invalidate removes something the device had');
      for (const m of hit) {
        assert.ok(m.lastUse < i);
        m.invalidated = true;
      }
    }
  }
  assert.equal(misses, summary.misses);
  assert.ok(summary.invalidates >= 1500 * 0.9, 'about one invalidate per packet');
  // Only ring pages (RW) stay mapped at the end; every WO/RO buffer page was invalidated.
  const left = mapped.filter((m) => !m.invalidated);
  assert.ok(left.every((m) => m.perm === 3), 'only ring mappings remain');
  // IOVAs are 32-bit, allocated top-down and reused.
  const iovas = mapped.map((m) => m.iova);
  assert.ok(iovas.every((v) => v < 2n ** 32n && v > 2n ** 32n - 2n ** 26n));
  assert.ok(new Set(iovas).size < iovas.length / 2, 'freed IOVAs are reused');
});

test('IovaAllocator: power-of-two aligned, top-down, LIFO reuse', () => {
  const a = new IovaAllocator();
  const x = a.alloc(1);
  assert.equal(x, 2 ** 32 - 4096);
  const y = a.alloc(3); // rounds to 4 pages, aligned to 16 KiB
  assert.equal(y % (4 * 4096), 0);
  assert.ok(y < x);
  a.free(x, 1);
  assert.equal(a.alloc(1), x);
  a.free(y, 3);
  assert.equal(a.alloc(4), y);
});

test('bad options are refused', () => {
  assert.throws(() => synthTrace({ scenario: 'nope' as ScenarioName }), /unknown scenario/);
  assert.throws(() => synthTrace({ scenario: 'static-2m', queues: 0 }), /queues/);
  assert.throws(() => synthTrace({ scenario: 'static-4k', guestMib: 1, queues: 4 }), /too small/);
  assert.throws(() => synthTrace({ scenario: 'dynamic', ringSize: 100 }), /ring size/);
});

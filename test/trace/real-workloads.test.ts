// The real-workload fixtures recorded by scripts/record-fixtures.mjs (`npm run fixtures`; see
// fixtures/traces/README.md): a QEMU 7.2 guest behind intel-iommu (iommu.strict=1) through
// `serve --trace` (top level: messages and translations) or through `trace record` to DPDK's
// vhost (recorded/: messages only). Each decodes, shows the negotiation its job implies, and
// replays against every strategy with every lookup checked against the exact reference.
// Needs no QEMU or DPDK. The large generated set (fixtures/traces/large/, git-ignored) gets the
// same checks when present.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { strategies } from '../../src/iotlb/registry.js';
import { loadOps } from '../../src/replay/ops.js';
import { analyse } from '../../src/replay/replay.js';
import { packageRoot } from '../../src/replay/fixtures.js';
import { decodeJson, decodeStats, type DecodedMessage } from './real-trace.js';

const TRACES = join(packageRoot(), 'fixtures', 'traces');

interface Fixture {
  file: string;
  /** serve --trace (translations) or trace record to DPDK (revealed misses). */
  via: 'serve' | 'proxy';
  packed?: boolean;
  queuePairs?: number;
  /** Pinned (a recording; re-recording with `npm run fixtures -- --committed` changes them). */
  messages?: number;
  lookups?: number;
}

const COMMITTED: Fixture[] = [
  { file: 'qemu-serve-tcp-send.vhtrace', via: 'serve', messages: 3720, lookups: 3295 },
  { file: 'qemu-serve-tcp-recv.vhtrace', via: 'serve', messages: 5510, lookups: 2775 },
  { file: 'qemu-serve-pktgen.vhtrace', via: 'serve', messages: 5152, lookups: 2029 },
  { file: 'qemu-serve-packed-tcp-send.vhtrace', via: 'serve', packed: true, messages: 2690, lookups: 2072 },
  { file: 'qemu-serve-mq2-tcp-recv.vhtrace', via: 'serve', queuePairs: 2, messages: 9371, lookups: 3552 },
  { file: 'recorded/qemu-dpdk-pktgen-iommu.vhtrace', via: 'proxy', messages: 5158, lookups: 1006 },
];

/** fixtures/traces/large/ (generated, git-ignored): whatever is there, shape from the name. */
function largeFixtures(): Fixture[] {
  const out: Fixture[] = [];
  for (const sub of ['large', join('large', 'recorded')]) {
    const dir = join(TRACES, sub);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).filter((n) => n.endsWith('.vhtrace')).sort()) {
      out.push({
        file: join(sub, f), via: sub.endsWith('recorded') ? 'proxy' : 'serve',
        packed: f.includes('-packed-'), queuePairs: f.includes('-mq2-') ? 2 : 1,
      });
    }
  }
  return out;
}

const requests = (msgs: DecodedMessage[], name: string, channel = 'frontend'): DecodedMessage[] =>
  msgs.filter((m) => m.name === name && !m.isReply && m.channel === channel);

function check(fx: Fixture): void {
  const path = join(TRACES, fx.file);
  const msgs = decodeJson(path);
  if (fx.messages !== undefined) assert.equal(msgs.length, fx.messages, 'messages');
  assert.deepEqual(msgs.filter((m) => m.error !== undefined).slice(0, 3), [], 'every message decodes');

  // intel-iommu: the front-end acks ACCESS_PLATFORM (and RING_PACKED with packed=on).
  const features = requests(msgs, 'SET_FEATURES').at(-1)?.features ?? [];
  assert.ok(features.includes('ACCESS_PLATFORM'), `ACCESS_PLATFORM acked: ${features}`);
  assert.equal(features.includes('RING_PACKED'), !!fx.packed, `RING_PACKED acked: ${features}`);
  // Every virtqueue of the queue pairs gets its ring (QEMU sets them up for each vhost device).
  const rings = new Set(requests(msgs, 'SET_VRING_ADDR').map((m) => m.body!.index as number));
  for (let q = 0; q < 2 * (fx.queuePairs ?? 1); q++) assert.ok(rings.has(q), `SET_VRING_ADDR for virtqueue ${q}: ${[...rings]}`);

  // A strict guest maps and unmaps every buffer: UPDATEs answer misses, INVALIDATEs follow unmaps.
  const stats = decodeStats(path);
  assert.equal(stats.undecodable, 0);
  assert.equal(stats.connections, 1);
  assert.ok(stats.iotlb.update > 100 && stats.iotlb.invalidate > 100 && stats.iotlb.miss > 100, JSON.stringify(stats.iotlb));
}

async function replays(fx: Fixture): Promise<void> {
  const path = join(TRACES, fx.file);
  const ops = await loadOps(path);
  assert.equal(ops.replay, fx.via === 'serve' ? 'translations' : 'revealed-misses');
  if (fx.lookups !== undefined) assert.equal(ops.lookups, fx.lookups, 'lookups');
  assert.ok(ops.lookups > 1000, `lookups: ${ops.lookups}`);
  assert.equal(ops.rejected, 0, 'IOTLB messages rejected');
  // serve: one cache per virtqueue that translated (RX and TX of every pair); proxy: one per connection.
  if (fx.via === 'serve') assert.equal(ops.slots.length, 2 * (fx.queuePairs ?? 1), 'caches');
  else assert.equal(ops.slots.length, 1, 'caches');
  const exact = analyse(ops, strategies.find((s) => s.name === 'dpdk')!);
  for (const def of strategies) {
    // analyse() checks every lookup against the reference and throws ReplayMismatchError.
    const m = analyse(ops, def);
    assert.equal(m.hits + m.misses + m.denied, ops.lookups, `${def.name}: every lookup counted`);
    assert.equal(m.extraMisses, 0, `${def.name}: no evictions needed at this size`);
    assert.equal(m.hits, exact.hits, `${def.name}: hits equal (all strategies exact on these traces)`);
  }
}

for (const fx of COMMITTED) {
  test(`real-workload fixture ${fx.file}: decodes (${fx.via}${fx.packed ? ', packed' : ''}${fx.queuePairs ? `, ${fx.queuePairs} queue pairs` : ''}) and replays`, async () => {
    check(fx);
    await replays(fx);
  });
}

test('real-workload fixtures: what is committed stays small', () => {
  const total = COMMITTED.reduce((sum, fx) => sum + statSync(join(TRACES, fx.file)).size, 0);
  assert.ok(total < 3 * 1024 * 1024, `committed real-workload fixtures: ${total} bytes`);
});

const large = largeFixtures();
test(`generated fixtures in fixtures/traces/large/ (${large.length} present) decode and replay`, { skip: large.length === 0 ? 'none generated (npm run fixtures)' : false }, async () => {
  for (const fx of large) {
    check(fx);
    await replays(fx);
  }
});

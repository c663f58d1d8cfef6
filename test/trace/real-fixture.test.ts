// The committed recordings of real sessions (fixtures/traces/recorded/qemu-dpdk*.vhtrace, made by
// test/trace/real.test.ts: QEMU 7.2 guest -> `trace record` -> dpdk-testpmd 22.11 vhost) decode
// to the real negotiation. Needs no QEMU or DPDK: runs everywhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { repoRoot } from '../peers/util.js';
import { GUEST_MEM_BYTES, assertRealNegotiation, assertStats, decodeJson, runDecode, type DecodedMessage } from './real-trace.js';

const fixture = (name: string): string => join(repoRoot(), 'fixtures', 'traces', 'recorded', name);
const PLAIN = fixture('qemu-dpdk.vhtrace');
const IOMMU = fixture('qemu-dpdk-iommu.vhtrace');

/** What QEMU 7.2's virtio-net acks from DPDK 22.11's offer (the guest is Linux 6.1). */
const ACKED = ['CSUM', 'GUEST_CSUM', 'GUEST_TSO4', 'GUEST_TSO6', 'GUEST_ECN', 'GUEST_UFO', 'HOST_ECN', 'HOST_UFO', 'MRG_RXBUF',
  'GUEST_ANNOUNCE', 'INDIRECT_DESC', 'EVENT_IDX', 'PROTOCOL_FEATURES', 'VERSION_1'];

const requests = (msgs: DecodedMessage[], name: string, channel = 'frontend'): DecodedMessage[] =>
  msgs.filter((m) => m.name === name && !m.isReply && m.channel === channel);
const big = (v: unknown): bigint => BigInt(v as string);

function ringAddresses(msgs: DecodedMessage[]): Array<{ index: number; desc: bigint; avail: bigint; used: bigint }> {
  return requests(msgs, 'SET_VRING_ADDR').map((m) => ({
    index: m.body!.index as number, desc: big(m.body!.descUser), avail: big(m.body!.availUser), used: big(m.body!.usedUser),
  }));
}

test('committed fixture qemu-dpdk.vhtrace: QEMU guest <-> DPDK vhost, split rings, no IOMMU', () => {
  const msgs = decodeJson(PLAIN);
  assertRealNegotiation(msgs, { iommu: false });
  assertStats(PLAIN, msgs, { iommu: false });

  const set = requests(msgs, 'SET_FEATURES');
  assert.deepEqual([...set.at(-1)!.features!].sort(), [...ACKED].sort());
  assert.ok(!set.at(-1)!.features!.includes('ACCESS_PLATFORM'));

  const table = requests(msgs, 'SET_MEM_TABLE');
  assert.equal(table.length, 1);
  const regions = table[0]!.body!.regions as Array<Record<string, string>>;
  assert.equal(regions.length, 1);
  assert.equal(big(regions[0]!.guestAddr), 0n);
  assert.equal(big(regions[0]!.size), BigInt(GUEST_MEM_BYTES));
  assert.equal(big(regions[0]!.mmapOffset), 0n);
  assert.deepEqual(table[0]!.fds, [{ kind: 'memfd', size: GUEST_MEM_BYTES }]);

  // Without an IOMMU the ring addresses are QEMU's virtual addresses inside the region.
  const lo = big(regions[0]!.userAddr);
  const hi = lo + big(regions[0]!.size);
  const rings = ringAddresses(msgs);
  assert.deepEqual(rings.map((r) => r.index), [0, 1]);
  for (const r of rings) for (const a of [r.desc, r.avail, r.used]) assert.ok(a >= lo && a < hi, `ring ${r.index} address 0x${a.toString(16)} in the region`);
  assert.deepEqual(requests(msgs, 'SET_VRING_NUM').map((m) => [m.body!.index, m.body!.num]), [[0, 256], [1, 256]]);

  const text = runDecode([PLAIN, '--no-color']);
  assert.match(text, /SET_MEM_TABLE {2}1 region {2}\[need-reply\] {2}fds: memfd\(512 MiB\)/);
  assert.match(text, /SET_BACKEND_REQ_FD {2}\[need-reply\] {2}fds: socket/);
  assert.match(text, /GET_FEATURES reply {2}0x[0-9a-f]+ .*\bVERSION_1\b/);
});

test('committed fixture qemu-dpdk-iommu.vhtrace: intel-iommu + iommu-support=1, IOTLB misses on the back-end channel', () => {
  const msgs = decodeJson(IOMMU);
  assertRealNegotiation(msgs, { iommu: true });
  const stats = assertStats(IOMMU, msgs, { iommu: true });
  // Pinned: this is a recording; the numbers do not change.
  assert.equal(stats.messages, 104);
  assert.deepEqual(stats.iotlb, { miss: 12, update: 14, invalidate: 6, accessFail: 0 });

  const set = requests(msgs, 'SET_FEATURES');
  assert.deepEqual([...set.at(-1)!.features!].sort(), [...ACKED, 'ACCESS_PLATFORM'].sort());

  const table = requests(msgs, 'SET_MEM_TABLE');
  assert.equal(table.length, 1);
  assert.deepEqual(table[0]!.fds, [{ kind: 'memfd', size: GUEST_MEM_BYTES }]);
  assert.equal(big((table[0]!.body!.regions as Array<Record<string, string>>)[0]!.size), BigInt(GUEST_MEM_BYTES));

  // With the IOMMU the ring addresses are IOVAs (the guest's DMA addresses, below 4 GiB here),
  // and QEMU maps each one with an UPDATE (in answer to DPDK's miss or ahead of it).
  const updates = requests(msgs, 'IOTLB_MSG').filter((m) => m.iotlbType === 'UPDATE');
  const covered = (iova: bigint): boolean => updates.some((u) => big(u.body!.iova) <= iova && iova < big(u.body!.iova) + big(u.body!.size));
  for (const r of ringAddresses(msgs)) {
    assert.ok(r.desc < 1n << 32n, `ring ${r.index} desc 0x${r.desc.toString(16)} is an IOVA`);
    for (const a of [r.desc, r.avail, r.used]) assert.ok(covered(a), `ring ${r.index} address 0x${a.toString(16)} mapped by an UPDATE`);
  }
  // Every UPDATE's user address lies in the guest memory region QEMU announced.
  const region = (table[0]!.body!.regions as Array<Record<string, string>>)[0]!;
  for (const u of updates) {
    const ua = big(u.body!.userAddr);
    assert.ok(ua >= big(region.userAddr) && ua + big(u.body!.size) <= big(region.userAddr) + big(region.size), `UPDATE uaddr 0x${ua.toString(16)} in guest RAM`);
    assert.equal(u.needsReply, true, 'QEMU asks for an ack of each IOTLB message (REPLY_ACK)');
  }
  // DPDK's misses: back-end channel, back-end -> front-end, no fds, no reply requested.
  const misses = requests(msgs, 'IOTLB_MSG', 'backend');
  assert.equal(misses.length, 12);
  for (const m of misses) {
    assert.equal(m.direction, 'to-frontend');
    assert.equal(m.iotlbType, 'MISS');
    assert.deepEqual(m.fds, []);
    assert.ok(['RO', 'WO', 'RW'].includes(m.perm!), m.perm);
  }

  // --filter backend: only the back-end channel, all of it misses.
  const filtered = runDecode([IOMMU, '--json', '--filter', 'backend']).trim().split('\n').map((l) => JSON.parse(l) as DecodedMessage);
  assert.equal(filtered.length, 12);
  assert.ok(filtered.every((m) => m.channel === 'backend' && m.iotlbType === 'MISS'));

  const text = runDecode([IOMMU, '--no-color']);
  assert.match(text, /← backend {3}IOTLB_MSG {2}MISS iova 0x[0-9a-f]+ perm R[OW]/);
  assert.match(text, /→ frontend {2}IOTLB_MSG {2}UPDATE iova 0x[0-9a-f]+ size 0x1000 \(4 KiB\) uaddr 0x[0-9a-f]+ perm RW {2}\[need-reply\]/);
  const statsText = runDecode([IOMMU, '--stats', '--no-color']);
  assert.match(statsText, /miss \(back-end → front-end\)\s*│\s*12 │/);
  assert.match(statsText, /update\s*│\s*14 │/);
});

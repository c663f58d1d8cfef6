// Shared by test/trace/real.test.ts (traces recorded live between QEMU and dpdk-testpmd) and
// test/trace/real-fixture.test.ts (the committed recordings): runs `trace decode` as a child
// process and checks that the trace shows a real vhost-user negotiation.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../peers/util.js';

export const GUEST_MEM_BYTES = 512 * 1024 * 1024;

export interface DecodedMessage {
  type: 'message';
  timeMs: number;
  connection: number;
  channel: 'frontend' | 'backend';
  direction: 'to-backend' | 'to-frontend';
  fds: Array<{ kind: string; size: number }>;
  name: string | null;
  isReply?: boolean;
  needsReply?: boolean;
  features?: string[];
  iotlbType?: string;
  perm?: string;
  body?: Record<string, unknown> & { kind: string };
  error?: unknown;
}

export interface DecodeStats {
  type: 'stats';
  messages: number;
  undecodable: number;
  connections: number;
  requests: Array<{ channel: string; name: string; requests: number; replies: number }>;
  iotlb: { miss: number; update: number; invalidate: number; accessFail: number };
}

/** `node bin/run.js trace decode ARGS...`; fails the test loudly on a non-zero exit. */
export function runDecode(args: string[]): string {
  const r = spawnSync(process.execPath, [join(repoRoot(), 'bin', 'run.js'), 'trace', 'decode', ...args], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, NO_COLOR: '1' },
  });
  assert.equal(r.status, 0, `trace decode ${args.join(' ')} exited ${r.status} ${r.signal ?? ''}\n${r.stderr}`);
  return r.stdout;
}

export function decodeJson(file: string): DecodedMessage[] {
  return runDecode([file, '--json'])
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { type: string })
    .filter((o): o is DecodedMessage => o.type === 'message');
}

export function decodeStats(file: string): DecodeStats {
  const out = runDecode([file, '--stats', '--json']).trim();
  return JSON.parse(out) as DecodeStats;
}

function brief(msgs: DecodedMessage[]): string {
  return msgs
    .slice(0, 80)
    .map((m) => `${m.channel} ${m.direction} ${m.name}${m.isReply ? ' reply' : ''}${m.fds.length ? ` fds=${m.fds.map((f) => `${f.kind}:${f.size}`).join(',')}` : ''}`)
    .join('\n  ');
}

function vringIndex(m: DecodedMessage): number | undefined {
  const b = m.body;
  if (!b) return undefined;
  if (typeof b.index === 'number') return b.index;
  if (b.kind === 'u64' && typeof b.value === 'string') return Number(BigInt(b.value) & 0xffn);
  return undefined;
}

export interface NegotiationExpectations {
  /** The device was created with iommu_platform=on: IOTLB traffic must be there. */
  iommu: boolean;
}

/**
 * Asserts the decoded messages show QEMU negotiating with DPDK's vhost: features with
 * VERSION_1, a memfd-backed memory table of the guest's size, every vring set up for queues 0
 * and 1, the back-end channel when offered, and (IOMMU) IOTLB updates and misses.
 */
export function assertRealNegotiation(msgs: DecodedMessage[], exp: NegotiationExpectations): void {
  const ctx = `\ntrace (first 80 messages):\n  ${brief(msgs)}`;
  assert.ok(msgs.length > 20, `a real session has many messages, got ${msgs.length}${ctx}`);
  const undecodable = msgs.filter((m) => m.error !== undefined);
  assert.equal(undecodable.length, 0, `every message decodes: ${JSON.stringify(undecodable.slice(0, 3))}${ctx}`);
  assert.ok(msgs.every((m) => m.connection === msgs[0]!.connection), `one connection${ctx}`);

  const main = msgs.filter((m) => m.channel === 'frontend');
  const req = (name: string): DecodedMessage[] => main.filter((m) => m.name === name && !m.isReply && m.direction === 'to-backend');
  const replies = (name: string): DecodedMessage[] => main.filter((m) => m.name === name && m.isReply && m.direction === 'to-frontend');

  // Features: the back-end offers, the front-end acks.
  const offered = replies('GET_FEATURES');
  assert.ok(offered.length >= 1, `GET_FEATURES reply recorded${ctx}`);
  assert.ok(offered[0]!.features?.includes('VERSION_1'), `DPDK offers VERSION_1: ${offered[0]!.features}${ctx}`);
  const acked = req('SET_FEATURES');
  assert.ok(acked.length >= 1, `SET_FEATURES recorded${ctx}`);
  const last = acked[acked.length - 1]!;
  assert.ok(last.features?.includes('VERSION_1'), `QEMU acks VERSION_1: ${last.features}${ctx}`);
  if (exp.iommu) {
    assert.ok(offered[0]!.features?.includes('ACCESS_PLATFORM'), `iommu-support=1 offers bit 33: ${offered[0]!.features}${ctx}`);
    assert.ok(last.features?.includes('ACCESS_PLATFORM'), `QEMU acks bit 33 with iommu_platform=on: ${last.features}${ctx}`);
  }

  // Memory table: memfd-backed regions of the 512 MiB guest.
  const tables = req('SET_MEM_TABLE');
  assert.ok(tables.length >= 1, `SET_MEM_TABLE recorded${ctx}`);
  for (const t of tables) {
    const regions = (t.body?.regions ?? []) as Array<{ guestAddr: string; size: string; userAddr: string; mmapOffset: string }>;
    assert.ok(regions.length >= 1, `SET_MEM_TABLE has regions: ${JSON.stringify(t.body)}`);
    assert.equal(t.fds.length, regions.length, `one fd per region: ${JSON.stringify(t.fds)}`);
    for (const fd of t.fds) {
      assert.equal(fd.kind, 'memfd', `region fds are memfds: ${JSON.stringify(t.fds)}`);
      assert.equal(fd.size, GUEST_MEM_BYTES, `memfd is the guest's 512 MiB: ${JSON.stringify(t.fds)}`);
    }
    const total = regions.reduce((s, r) => s + BigInt(r.size), 0n);
    assert.ok(total > 0n && total <= BigInt(GUEST_MEM_BYTES), `regions cover at most the guest RAM: ${JSON.stringify(regions)}`);
    for (const r of regions) assert.ok(BigInt(r.mmapOffset) + BigInt(r.size) <= BigInt(GUEST_MEM_BYTES), `region inside its memfd: ${JSON.stringify(r)}`);
  }

  // fds sit exactly on the messages that carry them (the proxy attributes each recvmsg's fds to
  // the message holding its last byte; a wrong rule shifts them onto a neighbour).
  const fdRequests = new Set(['SET_MEM_TABLE', 'ADD_MEM_REG', 'SET_LOG_BASE', 'SET_LOG_FD', 'SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR',
    'SET_BACKEND_REQ_FD', 'SET_INFLIGHT_FD', 'GET_INFLIGHT_FD', 'VRING_HOST_NOTIFIER_MSG', 'SHARED_OBJECT_ADD', 'SHARED_OBJECT_LOOKUP']);
  for (const m of msgs) {
    if (m.fds.length > 0) assert.ok(fdRequests.has(m.name ?? ''), `${m.channel} ${m.name}${m.isReply ? ' reply' : ''} carries no fds, got ${JSON.stringify(m.fds)}${ctx}`);
    if (!m.isReply && m.channel === 'frontend' && ['SET_VRING_KICK', 'SET_VRING_CALL', 'SET_VRING_ERR'].includes(m.name ?? '')) {
      const nofd = m.body?.kind === 'u64' && (BigInt(m.body.value as string) & 0x100n) !== 0n;
      assert.equal(m.fds.length, nofd ? 0 : 1, `${m.name} ${JSON.stringify(m.body)} has ${nofd ? 'no fd' : 'one fd'}: ${JSON.stringify(m.fds)}`);
    }
  }

  // Rings: both queues of the pair are configured, kick and call come with eventfds.
  for (const name of ['SET_VRING_NUM', 'SET_VRING_ADDR', 'SET_VRING_BASE', 'SET_VRING_KICK', 'SET_VRING_CALL']) {
    for (const q of [0, 1]) {
      const hits = req(name).filter((m) => vringIndex(m) === q);
      assert.ok(hits.length >= 1, `${name} for vring ${q} recorded${ctx}`);
      if (name === 'SET_VRING_KICK' || name === 'SET_VRING_CALL') {
        assert.ok(hits.some((m) => m.fds.length === 1 && m.fds[0]!.kind === 'eventfd'), `${name} vring ${q} passes an eventfd: ${JSON.stringify(hits.map((h) => h.fds))}`);
      }
      if (name === 'SET_VRING_NUM') assert.ok(hits.some((m) => Number(m.body?.num) > 0), `vring ${q} has a size`);
    }
  }

  // The back-end channel, when DPDK offers it.
  const proto = replies('GET_PROTOCOL_FEATURES');
  assert.ok(proto.length >= 1, `GET_PROTOCOL_FEATURES reply recorded${ctx}`);
  const protoNames = proto[0]!.features ?? [];
  const channel = req('SET_BACKEND_REQ_FD');
  if (protoNames.includes('BACKEND_REQ') && (req('SET_PROTOCOL_FEATURES').at(-1)?.features ?? []).includes('BACKEND_REQ')) {
    assert.ok(channel.length >= 1, `BACKEND_REQ negotiated, SET_BACKEND_REQ_FD recorded${ctx}`);
    assert.equal(channel[0]!.fds.length, 1);
    assert.equal(channel[0]!.fds[0]!.kind, 'socket', `the back-end channel is a socket: ${JSON.stringify(channel[0]!.fds)}`);
  }

  if (exp.iommu) {
    assert.ok(channel.length >= 1, `IOMMU needs the back-end channel: SET_BACKEND_REQ_FD recorded${ctx}`);
    const iotlb = msgs.filter((m) => m.name === 'IOTLB_MSG' && !m.isReply);
    const updates = iotlb.filter((m) => m.channel === 'frontend' && m.direction === 'to-backend' && m.iotlbType === 'UPDATE');
    const misses = iotlb.filter((m) => m.channel === 'backend' && m.direction === 'to-frontend' && m.iotlbType === 'MISS');
    assert.ok(updates.length > 0, `QEMU sent IOTLB UPDATEs on the frontend channel${ctx}`);
    assert.ok(misses.length > 0, `DPDK sent IOTLB MISSes on the back-end channel${ctx}`);
    for (const u of updates) {
      assert.ok(BigInt(u.body!.size as string) > 0n, `UPDATE has a size: ${JSON.stringify(u.body)}`);
      assert.notEqual(u.perm, 'none');
    }
    // Each miss is answered by an UPDATE covering the missed IOVA (the IOMMU maps it).
    const firstMiss = misses[0]!;
    const iova = BigInt(firstMiss.body!.iova as string);
    const answered = updates.some((u) => u.timeMs >= firstMiss.timeMs && BigInt(u.body!.iova as string) <= iova &&
      iova < BigInt(u.body!.iova as string) + BigInt(u.body!.size as string));
    assert.ok(answered, `an UPDATE after the first MISS covers iova 0x${iova.toString(16)}${ctx}`);
  } else {
    assert.equal(msgs.filter((m) => m.name === 'IOTLB_MSG').length, 0, `no IOTLB traffic without an IOMMU${ctx}`);
  }
}

/** `trace decode --stats --json` agrees with the messages: IOTLB counts > 0 with an IOMMU. */
export function assertStats(file: string, msgs: DecodedMessage[], exp: NegotiationExpectations): DecodeStats {
  const stats = decodeStats(file);
  assert.equal(stats.messages, msgs.length);
  assert.equal(stats.undecodable, 0);
  assert.equal(stats.connections, 1);
  if (exp.iommu) {
    assert.ok(stats.iotlb.miss > 0, `stats count IOTLB misses: ${JSON.stringify(stats.iotlb)}`);
    assert.ok(stats.iotlb.update > 0, `stats count IOTLB updates: ${JSON.stringify(stats.iotlb)}`);
    const backendRows = stats.requests.filter((r) => r.channel === 'backend');
    assert.ok(backendRows.some((r) => r.name === 'IOTLB_MSG' && r.requests === stats.iotlb.miss), `back-end channel IOTLB_MSG row: ${JSON.stringify(backendRows)}`);
  } else {
    assert.equal(stats.iotlb.miss + stats.iotlb.update, 0);
  }
  return stats;
}

// Property-based fuzzing (fast-check) of everything that parses what a front-end or a trace
// file says: the vhost-user decoder and framer, memory table validation, descriptor-chain
// walking over guest memory, split and packed rings through TX and RX (RX runs included),
// IOTLB caches at the edges of the address space, the trace reader.
//
// FUZZ_RUNS sets the runs per property (default 150, which keeps this file well under 60 s;
// `npm run fuzz` uses 200000). A failure prints fast-check's seed and shrunk counterexample:
// rerun it with FUZZ_SEED=<seed> (and FUZZ_PATH=<path>).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  decodeMessage, encodeMessage, fdRange, HEADER_SIZE, knownRequests, MAX_FDS, MAX_PAYLOAD, MessageFramer, ProtocolError,
  requestInfo, type Channel, type MemoryRegion,
} from '../../src/protocol/index.js';
import { MemoryTable, type ControlRegion } from '../../src/device/memory-table.js';
import { DeviceError } from '../../src/device/errors.js';
import { ADDRESS_LIMIT } from '../../src/iotlb/address.js';
import { closeFd, memfdCreate, openFdCount } from '../../src/sys/index.js';
import { GuestMemory, type GuestRegion } from '../../src/memory/guest-memory.js';
import { GuestPhysicalSpace, IotlbAddressSpace, UserAddressSpace, type AddressSpace } from '../../src/memory/address-space.js';
import { SplitQueue, RING_OK, RING_MISS, WALK_OK, WALK_MISS, WALK_BROKEN } from '../../src/virtqueue/split.js';
import { PackedQueue, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED } from '../../src/virtqueue/packed.js';
import { wideOf } from '../../src/memory/wide-view.js';
import { NetQueue, transmitBurst, receiveBurst } from '../../src/net/virtio-net.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { LoopbackEndpoint } from '../../src/net/loopback.js';
import { strategies } from '../../src/iotlb/registry.js';
import { LOOKUP_DENIED, LOOKUP_MISS, type IotlbStrategy, type LookupOut } from '../../src/iotlb/strategy.js';
import { TraceWriter } from '../../src/trace/writer.js';
import { parseTrace, readTrace } from '../../src/trace/reader.js';
import { TraceFormatError } from '../../src/trace/format.js';
import type { TraceRecord } from '../../src/trace/records.js';
import { StubIotlb } from '../virtqueue/helpers.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
const params = (runs = RUNS): fc.Parameters<unknown> => ({
  numRuns: runs,
  ...(process.env.FUZZ_SEED ? { seed: Number(process.env.FUZZ_SEED), path: process.env.FUZZ_PATH } : {}),
});
const TWO64 = 1n << 64n;

/** u64 values that matter: small, page sizes, around 2^32, 2^53 and 2^64. */
const u64Arb = fc.oneof(
  fc.bigInt({ min: 0n, max: 0x10000n }),
  fc.constantFrom(0n, 1n, 0xfffn, 0x1000n, 0xffffffffn, 0x100000000n, (1n << 53n) - 1n, 1n << 53n, (1n << 53n) + 1n,
    (1n << 63n), TWO64 - 1n, TWO64 - 0x1000n),
  fc.bigInt({ min: 0n, max: TWO64 - 1n }),
);

function le64(v: bigint): number[] {
  const out: number[] = [];
  for (let i = 0n; i < 8n; i++) out.push(Number((v >> (8n * i)) & 0xffn));
  return out;
}

// ---------------------------------------------------------------------------------------
// 1. vhost-user decoder and framer
// ---------------------------------------------------------------------------------------

/** Raw messages shaped like real ones: a known or random request, plausible flags and sizes. */
const messageArb = fc.record({
  channel: fc.constantFrom<Channel>('frontend', 'backend'),
  request: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...knownRequests('frontend'), ...knownRequests('backend')) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
  flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0x1, 0x5, 0x9, 0xd, 0x0, 0x2, 0x3, 0x11) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
  payload: fc.oneof(
    fc.constantFrom(0, 8, 16, 24, 32, 40, 12, 12 + 256, 8 + 32, 8 + 8 * 32, 2056, 268).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    // memory tables with a small nregions and any region contents
    fc.tuple(fc.nat({ max: 10 }), fc.array(fc.tuple(u64Arb, u64Arb, u64Arb, u64Arb), { maxLength: 9 })).map(([n, regions]) => {
      const bytes = [n & 0xff, 0, 0, 0, 0, 0, 0, 0];
      for (const r of regions) for (const v of r) bytes.push(...le64(v));
      return Uint8Array.from(bytes);
    }),
    fc.uint8Array({ maxLength: 300 }),
  ),
  sizeDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -16, max: 16 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
  fdCount: fc.oneof({ weight: 4, arbitrary: fc.nat({ max: 2 }) }, { weight: 1, arbitrary: fc.nat({ max: 12 }) }),
}).map(({ channel, request, flags, payload, sizeDelta, fdCount }) => {
  const bytes = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, request >>> 0, true);
  v.setUint32(4, flags >>> 0, true);
  v.setUint32(8, sizeDelta > 16 ? sizeDelta >>> 0 : (payload.length + sizeDelta) >>> 0, true);
  bytes.set(payload, HEADER_SIZE);
  return { channel, bytes, fds: Array.from({ length: fdCount }, (_, i) => 100 + i) };
});

/** Flip, overwrite, cut or extend bytes of a message. */
const mutate = (bytes: Uint8Array) => fc.array(fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.nat({ max: 255 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('grow' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 40 }) }),
), { maxLength: 4 }).map((ops) => {
  let out = bytes.slice();
  for (const op of ops) {
    if (op.kind === 'set' && out.length > 0) out[op.at % out.length] = op.value;
    else if (op.kind === 'cut') out = out.slice(0, op.at % (out.length + 1));
    else if (op.kind === 'grow') out = Uint8Array.from([...out, ...op.extra]);
  }
  return out;
});

function decodeOrProtocolError(channel: Channel, bytes: Uint8Array, fds: number[]): void {
  let msg;
  try {
    msg = decodeMessage(channel, bytes, fds);
  } catch (err) {
    if (err instanceof ProtocolError) {
      assert.ok(err.field.length > 0, 'a ProtocolError names its field');
      return;
    }
    throw err;
  }
  // Accepted: the body has a kind the request allows, and the fd count fits its rule.
  const info = requestInfo(channel, msg.request);
  if (info) {
    const shapes = msg.isReply ? info.reply : info.request;
    assert.ok(shapes.some((s) => s.kind === msg.body.kind), `${msg.name}: body kind ${msg.body.kind}`);
  }
  const [min, max] = fdRange(channel, msg.request, msg.isReply, msg.body, MAX_FDS);
  assert.ok(msg.fds.length >= min && msg.fds.length <= max && msg.fds.length <= MAX_FDS);
  if (msg.body.kind === 'memTable') assert.ok(msg.body.regions.length <= 8);
  if (msg.body.kind === 'config') assert.ok(msg.body.payload.length <= 256);
}

describe('fuzz: vhost-user decoder', () => {
  it('random bytes: decodeMessage returns or throws ProtocolError, nothing else', () => {
    fc.assert(fc.property(fc.constantFrom<Channel>('frontend', 'backend'), fc.uint8Array({ maxLength: 400 }), fc.nat({ max: 10 }),
      (channel, bytes, n) => decodeOrProtocolError(channel, bytes, Array.from({ length: n }, (_, i) => i + 3))), params());
  });

  it('message-shaped input: decodeMessage returns or throws ProtocolError', () => {
    fc.assert(fc.property(messageArb, ({ channel, bytes, fds }) => decodeOrProtocolError(channel, bytes, fds)), params(RUNS * 4));
  });

  it('mutated valid messages: decodeMessage returns or throws ProtocolError', () => {
    const valid = [
      encodeMessage({ channel: 'frontend', request: 5, body: { kind: 'memTable', regions: [{ guestAddr: 0n, size: 4096n, userAddr: 0x7f00n, mmapOffset: 0n }] } }),
      encodeMessage({ channel: 'frontend', request: 9, body: { kind: 'vringAddr', index: 1, flags: 0, descUser: 1n, usedUser: 2n, availUser: 3n, logGuest: 0n } }),
      encodeMessage({ channel: 'frontend', request: 22, needsReply: true, body: { kind: 'iotlb', iova: 0x1000n, size: 0x1000n, userAddr: 0x7f00n, perm: 3, iotlbType: 2 } }),
      encodeMessage({ channel: 'frontend', request: 24, body: { kind: 'config', offset: 0, size: 6, flags: 0, payload: new Uint8Array(6) } }),
      encodeMessage({ channel: 'frontend', request: 31, body: { kind: 'inflight', mmapSize: 4096n, mmapOffset: 0n, numQueues: 2, queueSize: 256 } }),
      encodeMessage({ channel: 'frontend', request: 12, body: { kind: 'u64', value: 0x100n } }),
      encodeMessage({ channel: 'frontend', request: 11, isReply: true, body: { kind: 'vringState', index: 0, num: 5 } }),
      encodeMessage({ channel: 'backend', request: 3, body: { kind: 'vringArea', u64: 0n, size: 4096n, offset: 0n } }),
    ];
    fc.assert(fc.property(fc.constantFrom(...valid).chain((m) => mutate(m)), fc.constantFrom<Channel>('frontend', 'backend'), fc.nat({ max: 9 }),
      (bytes, channel, n) => decodeOrProtocolError(channel, bytes, Array.from({ length: n }, (_, i) => i + 3))), params(RUNS * 4));
  });
});

describe('fuzz: MessageFramer', () => {
  const chunksArb = fc.array(fc.record({
    bytes: fc.oneof(messageArb.map((m) => m.bytes), fc.uint8Array({ minLength: 1, maxLength: 64 })),
    fds: fc.nat({ max: 8 }),
    cuts: fc.array(fc.nat(), { maxLength: 3 }),
  }), { minLength: 1, maxLength: 12 });

  it('never throws anything but ProtocolError, hands every fd out exactly once, bounds what it buffers', () => {
    fc.assert(fc.property(chunksArb, (chunks) => {
      const framer = new MessageFramer();
      let nextFd = 1000;
      const pushed: number[] = [];
      const out: number[] = [];
      let outBytes = 0;
      let inBytes = 0;
      let failed: ProtocolError | null = null;
      for (const chunk of chunks) {
        // Each message-ish piece is cut into several recvmsg-sized chunks; fds ride on the first.
        const cuts = [...new Set(chunk.cuts.map((c) => c % chunk.bytes.length))].sort((a, b) => a - b);
        let from = 0;
        for (const to of [...cuts, chunk.bytes.length]) {
          if (to <= from) continue;
          const fds = from === 0 ? Array.from({ length: chunk.fds }, () => nextFd++) : [];
          try {
            framer.push(chunk.bytes.subarray(from, to), fds);
            pushed.push(...fds);
            inBytes += to - from;
          } catch (err) {
            if (!(err instanceof ProtocolError)) throw err;
            if (failed) {
              // A framer that already failed refuses the chunk outright: its fds stay the caller's.
              assert.equal(err, failed, 'after a failure, push keeps throwing the same error');
            } else {
              pushed.push(...fds); // the failing push itself keeps its fds for takeFds()
            }
            failed = err;
          }
          for (let f = framer.next(); f; f = framer.next()) {
            out.push(...f.fds);
            outBytes += f.bytes.length;
            assert.ok(f.bytes.length >= HEADER_SIZE && f.bytes.length <= HEADER_SIZE + MAX_PAYLOAD);
          }
          if (!failed) {
            // What is buffered is at most one incomplete message; its fds at most MAX_FDS.
            assert.ok(framer.bufferedBytes < HEADER_SIZE + MAX_PAYLOAD);
            assert.equal(outBytes + framer.bufferedBytes, inBytes);
          }
          from = to;
        }
      }
      const rest = framer.takeFds();
      if (!failed) assert.ok(rest.length <= MAX_FDS, `${rest.length} fds held for one incomplete message`);
      const all = [...out, ...rest].sort((a, b) => a - b);
      assert.deepEqual(all, [...pushed].sort((a, b) => a - b), 'every fd handed out exactly once');
    }), params(RUNS * 2));
  });
});

// ---------------------------------------------------------------------------------------
// 2. memory table validation
// ---------------------------------------------------------------------------------------

describe('fuzz: memory table validation', () => {
  const FD_SIZE = 0x10000;
  const regionArb: fc.Arbitrary<MemoryRegion> = fc.record({
    guestAddr: fc.oneof(u64Arb, fc.nat({ max: 16 }).map((i) => BigInt(i) * 0x4000n)),
    size: fc.oneof(u64Arb, fc.constantFrom(0x1000n, 0x4000n, 0x10000n, 0x10001n, 0xffffn)),
    userAddr: fc.oneof(u64Arb, fc.nat({ max: 16 }).map((i) => 0x7f0000000000n + BigInt(i) * 0x4000n)),
    mmapOffset: fc.oneof(fc.constantFrom(0n, 0x1000n, 0x8000n, 0xf000n, 0x10000n), u64Arb),
  });

  function checkAccepted(r: ControlRegion, wire: MemoryRegion, others: readonly ControlRegion[]): void {
    assert.equal(BigInt(r.guestAddr), wire.guestAddr);
    assert.equal(BigInt(r.userAddr), wire.userAddr);
    assert.equal(BigInt(r.size), wire.size);
    assert.equal(BigInt(r.mmapOffset), wire.mmapOffset);
    assert.ok(r.size > 0);
    assert.ok(r.guestAddr + r.size <= ADDRESS_LIMIT && r.userAddr + r.size <= ADDRESS_LIMIT);
    assert.ok(r.mmapOffset + r.size <= FD_SIZE, 'inside the fd');
    for (const o of others) {
      assert.ok(r.guestAddr + r.size <= o.guestAddr || o.guestAddr + o.size <= r.guestAddr, 'guest ranges disjoint');
      assert.ok(r.userAddr + r.size <= o.userAddr || o.userAddr + o.size <= r.userAddr, 'user ranges disjoint');
    }
  }

  it('validate: refuses with DeviceError or accepts a region inside the fd, disjoint from the others', () => {
    const fd = memfdCreate('fuzz-table', FD_SIZE);
    try {
      fc.assert(fc.property(fc.array(regionArb, { minLength: 1, maxLength: 9 }), (wire) => {
        const accepted: ControlRegion[] = [];
        wire.forEach((w, i) => {
          try {
            const r = MemoryTable.validate(w, fd, accepted, `region[${i}]`);
            checkAccepted(r, w, accepted);
            accepted.push(r);
          } catch (err) {
            if (!(err instanceof DeviceError)) throw err;
            assert.match(err.message, /region\[\d+\]/, 'the message names the region');
          }
        });
        // What the control path accepts, the data path must accept too (else the worker throws).
        const memory = new GuestMemory();
        for (const r of accepted) memory.addRegion({ ...r, bytes: new Uint8Array(r.size) });
      }), params(RUNS * 2));
    } finally {
      closeFd(fd);
    }
  });

  it('replace: a refused table changes nothing and leaks no fd; an accepted one owns its fds', () => {
    const fdsBefore = openFdCount();
    const table = new MemoryTable(8);
    fc.assert(fc.property(fc.array(regionArb, { maxLength: 9 }), (wire) => {
      const fds = wire.map(() => memfdCreate('fuzz-replace', FD_SIZE));
      const before = table.regions;
      try {
        table.replace(wire, fds);
        assert.equal(table.regions.length, wire.length);
        table.regions.forEach((r, i) => checkAccepted(r, wire[i]!, table.regions.slice(0, i)));
      } catch (err) {
        if (!(err instanceof DeviceError)) throw err;
        assert.equal(table.regions, before, 'the current table is untouched');
        for (const fd of fds) closeFd(fd); // as the SET_MEM_TABLE handler does
      }
    }), params());
    table.closeAll();
    assert.equal(openFdCount(), fdsBefore, 'every fd closed');
  });
});

// ---------------------------------------------------------------------------------------
// 3. descriptor-chain walking over a fake guest memory
// ---------------------------------------------------------------------------------------

/**
 * One ArrayBuffer: guard | region 1 (32 KiB) | guard | region 2 (16 KiB) | guard. The regions
 * are adjacent in guest-physical space but not in host memory; the guards are canaries.
 */
const GUARD = 4096;
const R1 = { gpa: 0x10000, uva: 0x7f0000000000, size: 0x8000 };
const R2 = { gpa: 0x18000, uva: 0x7f0000100000, size: 0x4000 };
const HOST = GUARD + R1.size + GUARD + R2.size + GUARD;
const GUARD_RANGES = [[0, GUARD], [GUARD + R1.size, 2 * GUARD + R1.size], [2 * GUARD + R1.size + R2.size, HOST]] as const;
const CANARY = 0x5a;

interface Fake {
  host: Uint8Array;
  memory: GuestMemory;
  r1: GuestRegion;
  r2: GuestRegion;
}

function fakeMemory(fill: Uint8Array): Fake {
  const host = new Uint8Array(HOST).fill(CANARY);
  const r1Bytes = host.subarray(GUARD, GUARD + R1.size);
  const r2Bytes = host.subarray(2 * GUARD + R1.size, 2 * GUARD + R1.size + R2.size);
  for (let i = 0; i < r1Bytes.length; i++) r1Bytes[i] = fill[i % fill.length]!;
  for (let i = 0; i < r2Bytes.length; i++) r2Bytes[i] = fill[(i * 7) % fill.length]!;
  const memory = new GuestMemory();
  const r1 = memory.addRegion({ guestAddr: R1.gpa, userAddr: R1.uva, size: R1.size, mmapOffset: 0, bytes: r1Bytes });
  const r2 = memory.addRegion({ guestAddr: R2.gpa, userAddr: R2.uva, size: R2.size, mmapOffset: 0, bytes: r2Bytes });
  return { host, memory, r1, r2 };
}

function assertGuards(fake: Fake): void {
  for (const [s, e] of GUARD_RANGES) {
    const bad = fake.host.subarray(s, e).findIndex((b) => b !== CANARY);
    assert.equal(bad, -1, `guard byte at host offset ${s + bad} changed`);
  }
}

/** Guest addresses a hostile descriptor would pick: region edges, inside, outside, huge. */
const addrArb = fc.oneof(
  fc.constantFrom(R1.gpa, R2.gpa, R1.gpa + R1.size, R2.gpa + R2.size, R1.gpa - 1, R2.gpa - 16, 0, 2 ** 53 - 16)
    .chain((base) => fc.integer({ min: -64, max: 64 }).map((d) => Math.max(0, base + d))),
  fc.integer({ min: R1.gpa, max: R2.gpa + R2.size - 1 }),
  fc.nat({ max: 0xffffffff }),
  fc.tuple(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff })).map(([hi, lo]) => hi * 2 ** 32 + lo),
);
const lenArb = fc.oneof(
  fc.constantFrom(0, 1, 10, 12, 14, 16, 64, R1.size, R2.size, 0x7fffffff, 0x80000000, 0xffffffff),
  fc.nat({ max: 2048 }),
  fc.nat({ max: 0xffffffff }),
);
/** Mostly plausible descriptors (so chains get walked to the end), some hostile ones. */
const saneDescArb = fc.record({
  addr: fc.integer({ min: R1.gpa + 0x6000, max: R2.gpa + R2.size - 1 }),
  len: fc.integer({ min: 1, max: 1600 }),
  flags: fc.constantFrom(0, 0, 1, 2, 3, 3),
  next: fc.nat({ max: 15 }),
});
const hostileDescArb = fc.record({
  addr: addrArb,
  len: lenArb,
  flags: fc.oneof({ weight: 5, arbitrary: fc.nat({ max: 7 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
  next: fc.nat({ max: 300 }),
});
const descArb = fc.oneof({ weight: 12, arbitrary: saneDescArb }, { weight: 1, arbitrary: hostileDescArb });
interface DescSpec { addr: number; len: number; flags: number; next: number }
/**
 * What an RX ring mostly holds: one writable descriptor big enough for a frame, at an address
 * whose frame (after the 12-byte header) is 8-byte aligned as in DPDK's mbufs, or not.
 */
const rxBufferArb: fc.Arbitrary<DescSpec> = fc.record({
  // Mostly in region 2, so that runs (which stay in one region) get long.
  addr: fc.tuple(fc.constantFrom(R2.gpa, R2.gpa, R2.gpa, R1.gpa + 0x6000), fc.nat({ max: (0x2000 - 2048) >> 3 }), fc.constantFrom(4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 1))
    .map(([base, slot, skew]) => base + slot * 8 + skew),
  len: fc.constantFrom(2048, 1600, 512, 200, 76),
  flags: fc.constant(2),
  next: fc.constant(0),
});
const rxDescArb = fc.oneof({ weight: 8, arbitrary: rxBufferArb }, { weight: 1, arbitrary: descArb });

/** A random split ring whose descriptors come from `descs`. */
const splitRingOf = (descs: fc.Arbitrary<DescSpec>) => fc.record({
  size: fc.constantFrom(1, 2, 4, 8, 16, 16, 64, 256),
  descs: fc.array(descs, { minLength: 1, maxLength: 64 }),
  heads: fc.array(fc.oneof({ weight: 8, arbitrary: fc.nat({ max: 15 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }), { minLength: 1, maxLength: 32 }),
  /** avail->idx - last_avail_idx: mostly a few chains, sometimes anything. */
  pending: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: 8 }) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
  lastAvail: fc.oneof(fc.constant(0), fc.nat({ max: 0xffff })),
  indirect: fc.array(descArb, { maxLength: 8 }),
});
const ringArb = splitRingOf(descArb);

type RingSpec = typeof ringArb extends fc.Arbitrary<infer T> ? T : never;

/** Writes a random ring at `base` (a GPA in region 1) and returns its addresses. */
function writeRing(fake: Fake, spec: RingSpec, base: number): { desc: number; avail: number; used: number } {
  const bytes = fake.r1.bytes;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const o = (gpa: number) => gpa - R1.gpa;
  const desc = base;
  const avail = desc + 16 * spec.size;
  const used = Math.ceil((avail + 6 + 2 * spec.size) / 4) * 4;
  for (let i = 0; i < spec.size; i++) {
    const d = spec.descs[i % spec.descs.length]!;
    v.setUint32(o(desc) + 16 * i, d.addr % 2 ** 32, true);
    v.setUint32(o(desc) + 16 * i + 4, Math.floor(d.addr / 2 ** 32), true);
    v.setUint32(o(desc) + 16 * i + 8, d.len, true);
    v.setUint16(o(desc) + 16 * i + 12, d.flags, true);
    v.setUint16(o(desc) + 16 * i + 14, d.next < 16 ? d.next % spec.size : d.next, true);
  }
  v.setUint16(o(avail), 0, true);
  v.setUint16(o(avail) + 2, (spec.lastAvail + spec.pending) & 0xffff, true);
  for (let i = 0; i < spec.size; i++) {
    const h = spec.heads[i % spec.heads.length]!;
    v.setUint16(o(avail) + 4 + 2 * i, h < 16 ? h % spec.size : h, true);
  }
  // used->idx as the ring's last back-end left it: at the base, else the queue resumes from it.
  v.setUint16(o(used) + 2, spec.lastAvail & 0xffff, true);
  // An indirect table some descriptors may point at (GPA 0x16000, in region 1).
  spec.indirect.forEach((d, j) => {
    const t = o(0x16000) + 16 * j;
    v.setUint32(t, d.addr % 2 ** 32, true);
    v.setUint32(t + 4, Math.floor(d.addr / 2 ** 32), true);
    v.setUint32(t + 8, d.len, true);
    v.setUint16(t + 12, d.flags, true);
    v.setUint16(t + 14, d.next % 16, true);
  });
  return { desc, avail, used };
}

function configure(queue: SplitQueue, spec: RingSpec, at: { desc: number; avail: number; used: number }, ringSpace: AddressSpace, dataSpace: AddressSpace, byUser: boolean): number {
  const map = (gpa: number) => (byUser ? gpa - R1.gpa + R1.uva : gpa);
  return queue.configure({
    size: spec.size, descAddr: map(at.desc), availAddr: map(at.avail), usedAddr: map(at.used),
    ringSpace, dataSpace, eventIdx: spec.lastAvail % 2 === 1, lastAvailIdx: spec.lastAvail,
  });
}

function checkPieces(fake: Fake, sg: ScatterList, from: number): void {
  for (let k = from; k < sg.count; k++) {
    const b = sg.bytes[k]!;
    assert.ok(b === fake.r1.bytes || b === fake.r2.bytes, `piece ${k} is not a region's bytes`);
    assert.ok(sg.len[k]! > 0, 'pieces are never empty');
    assert.ok(sg.offset[k]! + sg.len[k]! <= b.length, `piece ${k} runs past its region`);
  }
}

/** Random IOTLB entries: some covering the regions' user addresses, some pointing nowhere. */
const iotlbArb = fc.array(fc.record({
  iova: fc.oneof(fc.constantFrom(R1.gpa + 0x6000, R2.gpa, 0), fc.nat({ max: 0x20000 }), fc.constantFrom(2 ** 53 - 0x1000)),
  size: fc.oneof(fc.constantFrom(0x2000, 0x4000, 16, 1), fc.integer({ min: 1, max: 0x10000 })),
  delta: fc.constantFrom(R1.uva - R1.gpa, R1.uva - R1.gpa, R2.uva - R2.gpa, 0, R1.uva - R1.gpa + 8),
  perm: fc.constantFrom(0, 1, 2, 3, 3, 3),
}), { maxLength: 6 }).map((list) => list.filter((e) => e.iova + e.size <= 2 ** 53 && e.iova + e.delta >= 0));

describe('fuzz: descriptor chains over guest memory', () => {
  it('walkChain: never throws, every piece inside one region, ends OK or broken (or MISS with an IOTLB)', () => {
    const seen = { ringFault: 0, ok: 0, broken: 0, miss: 0 };
    fc.assert(fc.property(ringArb, fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.option(iotlbArb, { freq: 3 }), (spec, fill, iotlb) => {
      const fake = fakeMemory(fill);
      const at = writeRing(fake, spec, R1.gpa);
      let ringSpace: AddressSpace;
      let dataSpace: AddressSpace;
      if (iotlb) {
        const cache = new StubIotlb();
        for (const e of iotlb) cache.insert({ iova: e.iova, size: e.size, uaddr: e.iova + e.delta, perm: e.perm });
        cache.insert({ iova: R1.gpa, size: 0x6000, uaddr: R1.uva, perm: 3 }); // the rings themselves
        ringSpace = new IotlbAddressSpace(cache, fake.memory);
        dataSpace = new IotlbAddressSpace(cache, fake.memory);
      } else {
        ringSpace = new UserAddressSpace(fake.memory);
        dataSpace = new GuestPhysicalSpace(fake.memory);
      }
      const queue = new SplitQueue();
      const st = configure(queue, spec, at, ringSpace, dataSpace, !iotlb);
      if (st !== RING_OK) {
        assert.ok(st === RING_MISS || queue.error.length > 0);
        seen.ringFault++;
        return;
      }
      const sg = new ScatterList(64);
      const n = queue.availableCount();
      assert.ok(n <= spec.size);
      for (let ahead = 0; ahead < Math.min(n, 8) && !queue.broken; ahead++) {
        const before = sg.count;
        const r = queue.walkChain(ahead, sg);
        assert.ok(r === WALK_OK || r === WALK_BROKEN || (iotlb && r === WALK_MISS), `walk result ${r}`);
        seen[r === WALK_OK ? 'ok' : r === WALK_MISS ? 'miss' : 'broken']++;
        if (r === WALK_OK) {
          checkPieces(fake, sg, before);
          let total = 0;
          for (let k = before; k < sg.count; k++) total += sg.len[k]!;
          assert.equal(total, queue.chainReadLen + queue.chainWriteLen);
        } else {
          assert.equal(sg.count, before, 'a failed walk adds no piece');
          if (r === WALK_BROKEN) assert.ok(queue.broken && queue.brokenReason.length > 0);
          queue.clearMiss();
        }
        if (sg.count > 48) sg.reset();
      }
      assertGuards(fake);
    }), params(RUNS * 3));
    if (process.env.VIT_DEBUG) console.log('walkChain outcomes', seen);
    // A fuzzer that never reaches an outcome tests nothing there.
    assert.ok(seen.ok > 0 && seen.broken > 0 && seen.miss > 0, `outcomes ${JSON.stringify(seen)}`);
  });

  it('TX -> loopback -> RX over two hostile rings: no throw, guards intact', () => {
    let moved = 0;
    let broken = 0;
    fc.assert(fc.property(ringArb, ringArb, fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.boolean(), (txSpec, rxSpec, fill, mergeable) => {
      const fake = fakeMemory(fill);
      const txAt = writeRing(fake, txSpec, R1.gpa);
      const rxAt = writeRing(fake, rxSpec, R1.gpa + 0x4000);
      const tx = new SplitQueue();
      const rx = new SplitQueue();
      const txOk = configure(tx, txSpec, txAt, new UserAddressSpace(fake.memory), new GuestPhysicalSpace(fake.memory), true) === RING_OK;
      const rxOk = configure(rx, rxSpec, rxAt, new UserAddressSpace(fake.memory), new GuestPhysicalSpace(fake.memory), true) === RING_OK;
      const txq = new NetQueue(tx, { headerLength: 12, mergeable: false, sgCapacity: 64 });
      const rxq = new NetQueue(rx, { headerLength: 12, mergeable, sgCapacity: 64 });
      const endpoint = new LoopbackEndpoint(rxq);
      for (let round = 0; round < 4; round++) {
        if (txOk && tx.ready) moved += transmitBurst(txq, endpoint, 32);
        if (rxOk && rx.ready) {
          const frames = new ScatterList(4);
          frames.push(new Uint8Array(1600).fill(0x42), 0, 60 + round * 500);
          moved += receiveBurst(rxq, frames);
        }
      }
      if (tx.broken) assert.ok(tx.brokenReason.length > 0);
      if (rx.broken) assert.ok(rx.brokenReason.length > 0);
      if (tx.broken || rx.broken) broken++;
      assertGuards(fake);
    }), params(RUNS * 2));
    if (process.env.VIT_DEBUG) console.log('net outcomes', { moved, broken });
    assert.ok(moved > 0 && broken > 0, `moved ${moved}, broken ${broken}`);
  });
});

// ---------------------------------------------------------------------------------------
// 3b. packed rings, and RX runs (many frames into a run of buffers at once)
// ---------------------------------------------------------------------------------------

const AVAIL = VRING_PACKED_DESC_F_AVAIL;
const USED = VRING_PACKED_DESC_F_USED;

/** A packed descriptor: mostly one the driver made available in wrap 1, sometimes any flag word. */
const packedDescOf = (descs: fc.Arbitrary<DescSpec>) => fc.record({
  desc: descs,
  id: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
  raw: fc.oneof({ weight: 12, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
});
const packedRingOf = (descs: fc.Arbitrary<DescSpec>) => fc.record({
  size: fc.constantFrom(1, 2, 3, 8, 16, 16, 64, 256),
  descs: fc.array(packedDescOf(descs), { minLength: 1, maxLength: 64 }),
  /** How many descriptors from the ring's start the driver made available. */
  pending: fc.oneof({ weight: 4, arbitrary: fc.nat({ max: 16 }) }, { weight: 3, arbitrary: fc.constant(256) }, { weight: 1, arbitrary: fc.nat({ max: 300 }) }),
  /** SET_VRING_BASE for a packed ring: wrap counter in bit 15; sometimes anything. */
  base: fc.oneof({ weight: 8, arbitrary: fc.constant(0x8000) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
  eventIdx: fc.boolean(),
});
const packedRingArb = packedRingOf(descArb);
type PackedRingSpec = typeof packedRingArb extends fc.Arbitrary<infer T> ? T : never;

/** Writes a random packed ring at `base` (a GPA in region 1): descriptors, then the two event areas. */
function writePackedRing(fake: Fake, spec: PackedRingSpec, base: number): { desc: number; avail: number; used: number } {
  const v = new DataView(fake.r1.bytes.buffer, fake.r1.bytes.byteOffset, fake.r1.bytes.byteLength);
  const o = (gpa: number) => gpa - R1.gpa;
  const desc = base;
  const driverEvent = desc + 16 * spec.size;
  const deviceEvent = driverEvent + 4;
  for (let i = 0; i < spec.size; i++) {
    const { desc: d, id, raw } = spec.descs[i % spec.descs.length]!;
    // Not available in wrap 1: AVAIL clear, USED either way (a used slot of the last lap, or never made available).
    const flags = raw ?? (i < spec.pending ? (d.flags & 7) | AVAIL : (d.flags & 7) | (i % 2 === 0 ? USED : 0));
    v.setUint32(o(desc) + 16 * i, d.addr % 2 ** 32, true);
    v.setUint32(o(desc) + 16 * i + 4, Math.floor(d.addr / 2 ** 32), true);
    v.setUint32(o(desc) + 16 * i + 8, d.len, true);
    v.setUint16(o(desc) + 16 * i + 12, id < 0 ? i : id, true);
    v.setUint16(o(desc) + 16 * i + 14, flags, true);
  }
  v.setUint32(o(driverEvent), 0, true);
  v.setUint32(o(deviceEvent), 0, true);
  return { desc, avail: driverEvent, used: deviceEvent };
}

/** A split or packed queue over a random ring at `base`, configured by user addresses as serve does without an IOMMU. */
function hostileQueue(fake: Fake, layout: 'split' | 'packed', split: RingSpec, packed: PackedRingSpec, base: number): { queue: SplitQueue | PackedQueue; ok: boolean } {
  const ringSpace = new UserAddressSpace(fake.memory);
  const dataSpace = new GuestPhysicalSpace(fake.memory);
  if (layout === 'split') {
    const queue = new SplitQueue();
    return { queue, ok: configure(queue, split, writeRing(fake, split, base), ringSpace, dataSpace, true) === RING_OK };
  }
  const at = writePackedRing(fake, packed, base);
  const user = (gpa: number) => gpa - R1.gpa + R1.uva;
  const queue = new PackedQueue();
  const st = queue.configure({
    size: packed.size, descAddr: user(at.desc), availAddr: user(at.avail), usedAddr: user(at.used),
    ringSpace, dataSpace, eventIdx: packed.eventIdx, lastAvailIdx: packed.base,
  });
  if (st !== RING_OK) assert.ok(queue.error.length > 0, 'a ring that cannot start says why');
  return { queue, ok: st === RING_OK };
}

/**
 * A source's burst: `count` frames of `len` bytes, each at its own 8-byte-aligned slot of one
 * array (what RX runs copy 64 bytes at a time), or at odd offsets (the per-frame fallback).
 */
function frameBurst(count: number, len: number, aligned: boolean): ScatterList {
  const stride = ((len + 7) & ~7) + (aligned ? 0 : 3);
  const bytes = new Uint8Array(count * stride + 8);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff;
  const wide = wideOf(bytes);
  const frames = new ScatterList(count);
  for (let i = 0; i < count; i++) frames.push(bytes, i * stride + (aligned ? 0 : 1), len, wide);
  return frames;
}

describe('fuzz: packed rings and RX runs over guest memory', () => {
  for (const layout of ['split', 'packed'] as const) {
    it(`${layout}: TX -> loopback -> RX, and bursts of many frames into RX runs, over hostile rings: no throw, guards intact`, () => {
      const seen = { moved: 0, broken: 0, runs: 0 };
      const burstArb = fc.record({
        count: fc.integer({ min: 1, max: 130 }),
        // Mostly what the run's fastest copy takes (64-159 bytes), also shorter, longer and any.
        len: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(64, 100, 128, 152, 159) }, { weight: 1, arbitrary: fc.constantFrom(46, 60, 160, 1514) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2000 }) }),
        aligned: fc.boolean(),
      });
      fc.assert(fc.property(ringArb, splitRingOf(rxDescArb), packedRingArb, packedRingOf(rxDescArb), fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.boolean(), fc.array(burstArb, { minLength: 1, maxLength: 4 }),
        (txSplit, rxSplit, txPacked, rxPacked, fill, mergeable, bursts) => {
          const fake = fakeMemory(fill);
          const tx = hostileQueue(fake, layout, txSplit, txPacked, R1.gpa);
          const rx = hostileQueue(fake, layout, rxSplit, rxPacked, R1.gpa + 0x4000);
          const txq = new NetQueue(tx.queue, { headerLength: 12, mergeable: false, sgCapacity: 64 });
          const rxq = new NetQueue(rx.queue, { headerLength: 12, mergeable, sgCapacity: 64 });
          const endpoint = new LoopbackEndpoint(rxq);
          for (const burst of bursts) {
            if (tx.ok && tx.queue.ready) seen.moved += transmitBurst(txq, endpoint, 32);
            if (rx.ok && rx.queue.ready) {
              const frames = frameBurst(burst.count, burst.len, burst.aligned);
              const n = receiveBurst(rxq, frames);
              assert.ok(n >= 0 && n <= burst.count, `receiveBurst reported ${n} of ${burst.count} frames`);
              seen.moved += n;
              if (n > 1) seen.runs++;
            }
          }
          for (const q of [tx.queue, rx.queue]) if (q.broken) assert.ok(q.brokenReason.length > 0);
          if (tx.queue.broken || rx.queue.broken) seen.broken++;
          assertGuards(fake);
        }), params(RUNS * 2));
      if (process.env.VIT_DEBUG) console.log(`${layout} RX-run outcomes`, seen);
      assert.ok(seen.moved > 0 && seen.broken > 0 && seen.runs > 0, `outcomes ${JSON.stringify(seen)}`);
    });
  }
});

// ---------------------------------------------------------------------------------------
// 4. IOTLB strategies at the edges of the address space
// ---------------------------------------------------------------------------------------

describe('fuzz: IOTLB strategies with huge and wrapping values', () => {
  const TOP = 2 ** 53;
  const addrArb = fc.oneof(
    fc.constantFrom(0, TOP - 1, TOP - 0x1000, TOP - 0x200000, 2 ** 52, 2 ** 48, 2 ** 32 - 0x1000),
    fc.nat({ max: TOP - 1 }),
  );
  type Op = { kind: 'insert'; iova: number; size: number; uaddr: number; perm: number } | { kind: 'invalidate'; iova: number; size: number } | { kind: 'lookup'; iova: number; len: number; access: number };
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ iova: addrArb, size: fc.oneof(fc.constantFrom(1, 0x1000, 0x200000, 2 ** 40, 2 ** 52), fc.nat({ max: TOP })), uaddr: addrArb, perm: fc.constantFrom(1, 2, 3) })
      .filter((e) => e.size > 0 && e.iova + e.size <= TOP && e.uaddr + e.size <= TOP).map((e) => ({ kind: 'insert' as const, ...e })),
    fc.record({ iova: addrArb, size: fc.oneof(fc.constantFrom(1, 2 ** 53, 2 ** 64, Number.MAX_SAFE_INTEGER, Number.MAX_VALUE), fc.nat({ max: TOP })) })
      .filter((e) => e.size > 0).map((e) => ({ kind: 'invalidate' as const, ...e })),
    fc.record({ iova: addrArb, len: fc.oneof(fc.constantFrom(1, 0xffffffff, 2 ** 53), fc.integer({ min: 1, max: 0x10000 })), access: fc.constantFrom(1, 2, 3) })
      .map((e) => ({ kind: 'lookup' as const, ...e })),
  );

  /**
   * Exact model: entries as disjoint intervals; insert replaces what it overlaps, invalidate
   * removes exactly [iova, iova+size). A strategy may forget more only by evicting (then a
   * MISS is always safe); it must never translate what the model does not, nor differently.
   */
  class Model {
    list: { iova: number; size: number; uaddr: number; perm: number }[] = [];
    private cut(iova: number, size: number): void {
      const end = iova + size;
      const kept: typeof this.list = [];
      for (const o of this.list) {
        const oEnd = o.iova + o.size;
        if (oEnd <= iova || end <= o.iova) {
          kept.push(o);
          continue;
        }
        if (o.iova < iova) kept.push({ ...o, size: iova - o.iova });
        if (oEnd > end) kept.push({ ...o, iova: end, size: oEnd - end, uaddr: o.uaddr + (end - o.iova) });
      }
      this.list = kept;
    }
    insert(e: { iova: number; size: number; uaddr: number; perm: number }): void {
      this.cut(e.iova, e.size);
      this.list.push({ ...e });
    }
    invalidate(iova: number, size: number): void {
      this.cut(iova, Math.min(size, 2 ** 64));
    }
    /** Longest run from iova contiguous in both spaces with the access allowed (or MISS / DENIED). */
    run(iova: number, len: number, access: number, out: LookupOut): number {
      let run = 0;
      let uaddr = 0;
      while (run < len) {
        const at = iova + run;
        const e = this.list.find((x) => at >= x.iova && at < x.iova + x.size);
        if (!e) {
          if (run === 0) return LOOKUP_MISS;
          break;
        }
        if ((e.perm & access) !== access) {
          if (run === 0) return LOOKUP_DENIED;
          break;
        }
        const u = e.uaddr + (at - e.iova);
        if (run === 0) uaddr = u;
        else if (u !== uaddr + run) break;
        run += Math.min(len - run, e.iova + e.size - at);
      }
      out.uaddr = uaddr;
      return run;
    }
  }

  for (const def of strategies) {
    it(`${def.name}: translations agree with a model at the top of the address space; nothing hangs`, () => {
      fc.assert(fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
        const cache: IotlbStrategy = def.create({ capacity: 1 << 16, seed: 1 });
        const model = new Model();
        const out: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };
        const want: LookupOut = { uaddr: 0, spanStart: 0, spanEnd: 0 };
        const t0 = Date.now();
        for (const op of ops) {
          if (op.kind === 'insert') {
            cache.insert({ iova: op.iova, size: op.size, uaddr: op.uaddr, perm: op.perm });
            model.insert({ iova: op.iova, size: op.size, uaddr: op.uaddr, perm: op.perm });
          } else if (op.kind === 'invalidate') {
            cache.invalidate(op.iova, op.size);
            model.invalidate(op.iova, op.size);
          } else {
            const got = cache.lookup(op.iova, op.len, op.access, out);
            const ref = model.run(op.iova, op.len, op.access, want);
            // Forgetting is allowed only through eviction: while the cache has evicted nothing,
            // it holds exactly what the model holds, so a MISS where the model maps is a lost entry.
            const evicted = cache.stats.evictions > 0;
            const where = `lookup 0x${op.iova.toString(16)} len ${op.len} access ${op.access}`;
            if (ref === LOOKUP_MISS) assert.equal(got, LOOKUP_MISS, `${where}: model misses, got ${got} (stale translation)`);
            else if (ref === LOOKUP_DENIED) {
              if (evicted) assert.ok(got === LOOKUP_DENIED || got === LOOKUP_MISS, `${where}: model denies, got ${got}`);
              else assert.equal(got, LOOKUP_DENIED, `${where}: model denies and nothing was evicted, got ${got}`);
            } else {
              if (evicted) assert.ok(got === LOOKUP_MISS || (got >= 1 && got <= ref), `${where}: ${got}, model ${ref}`);
              else assert.ok(got >= 1 && got <= ref, `${where}: ${got}, model ${ref} and nothing was evicted`);
              if (got > 0) assert.equal(out.uaddr, want.uaddr, 'same translation');
            }
          }
        }
        for (const e of cache.entries()) {
          assert.ok(e.size > 0 && e.iova + e.size <= TOP && e.uaddr + e.size <= TOP, `entry ${JSON.stringify(e)} within 2^53`);
        }
        assert.ok(Date.now() - t0 < 2000, 'operations on huge ranges stay cheap');
      }), params());
    });
  }
});

// ---------------------------------------------------------------------------------------
// 5. trace reader
// ---------------------------------------------------------------------------------------

describe('fuzz: trace reader', () => {
  function sampleTrace(): Uint8Array {
    const w = TraceWriter.inMemory({ startTimeNs: 1n });
    for (let i = 0; i < 6; i++) {
      w.write({ type: 'message', timeNs: BigInt(i), connection: 1, channel: i % 2 ? 'backend' : 'frontend', direction: 'to-backend', bytes: new Uint8Array(12 + i * 8).fill(i), fds: i === 2 ? [{ kind: 'memfd', size: 4096 }] : [] });
      w.write({ type: 'translation', timeNs: BigInt(i), connection: 1, queue: i, iova: BigInt(i) * 4096n, length: 64, access: 1, result: 'hit' });
    }
    w.close();
    return w.bytes();
  }
  const TRACE = sampleTrace();

  const traceMutation = fc.array(fc.oneof(
    fc.record({ kind: fc.constant('set' as const), at: fc.nat({ max: TRACE.length - 1 }), value: fc.nat({ max: 255 }) }),
    fc.record({ kind: fc.constant('u32' as const), at: fc.nat({ max: TRACE.length - 4 }), value: fc.oneof(fc.nat({ max: 0xffffffff }), fc.constantFrom(0, 0xffffffff, 0x20001, 0x8000)) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat({ max: TRACE.length }) }),
    fc.record({ kind: fc.constant('splice' as const), at: fc.nat({ max: TRACE.length }), bytes: fc.uint8Array({ maxLength: 32 }) }),
  ), { minLength: 1, maxLength: 5 });

  function apply(ops: readonly { kind: string; at?: number; value?: number; bytes?: Uint8Array }[]): Uint8Array {
    let t = TRACE.slice();
    for (const op of ops) {
      const at = Math.min(op.at ?? 0, t.length);
      if (op.kind === 'set' && at < t.length) t[at] = op.value!;
      else if (op.kind === 'u32' && at + 4 <= t.length) new DataView(t.buffer).setUint32(at, op.value!, true);
      else if (op.kind === 'cut') t = t.slice(0, at);
      else if (op.kind === 'splice') t = Uint8Array.from([...t.subarray(0, at), ...op.bytes!, ...t.subarray(at)]);
    }
    return t;
  }

  function parseAll(bytes: Uint8Array): { records: TraceRecord[]; error: TraceFormatError | null } {
    const records: TraceRecord[] = [];
    try {
      for (const r of parseTrace(bytes)) records.push(r);
      return { records, error: null };
    } catch (err) {
      if (!(err instanceof TraceFormatError)) throw err;
      assert.ok(err.offset >= 0 && err.offset <= bytes.length, 'the error points into the file');
      return { records, error: err };
    }
  }

  it('mutated traces: parseTrace yields records or throws TraceFormatError, nothing else', () => {
    fc.assert(fc.property(traceMutation, (ops) => {
      parseAll(apply(ops));
    }), params(RUNS * 4));
  });

  it('random bytes after a valid header: only TraceFormatError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 600 }), (tail) => {
      parseAll(Uint8Array.from([...TRACE.subarray(0, 24), ...tail]));
    }), params(RUNS * 2));
  });

  it('readTrace (streaming, any chunk size) agrees with parseTrace on mutated files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vit-fuzz-trace-'));
    try {
      let n = 0;
      await fc.assert(fc.asyncProperty(traceMutation, fc.integer({ min: 1, max: 300 }), async (ops, chunkSize) => {
        const bytes = apply(ops);
        const path = join(dir, `t${n++}.bin`);
        writeFileSync(path, bytes);
        const want = parseAll(bytes);
        const got: TraceRecord[] = [];
        let error: unknown = null;
        try {
          for await (const r of readTrace(path, { chunkSize, source: '<buffer>' })) got.push(r);
        } catch (err) {
          error = err;
        }
        if (error !== null && !(error instanceof TraceFormatError)) throw error;
        assert.deepEqual(got, want.records, 'same records before any error');
        assert.equal(error === null, want.error === null, `streaming error ${String(error)} vs ${String(want.error)}`);
        if (error instanceof TraceFormatError && want.error) assert.equal(error.problem, want.error.problem);
        rmSync(path);
      }), params(Math.max(10, Math.floor(RUNS / 2))));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

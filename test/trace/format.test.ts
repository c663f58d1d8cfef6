import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TraceWriter } from '../../src/trace/writer.js';
import { parseTrace, parseTraceAll, readTrace } from '../../src/trace/reader.js';
import {
  FILE_HEADER_SIZE, MAX_MESSAGE_BYTES, MAX_RECORD_LENGTH, RECORD_HEADER_SIZE, RecordType, TraceFlags,
  TraceFormatError, TRANSLATION_RECORD_SIZE, messageBodyLength,
} from '../../src/trace/format.js';
import type { MessageRecord, TraceRecord, TranslationRecord } from '../../src/trace/records.js';

function sampleRecords(): TraceRecord[] {
  const msg = (i: number, extra: Partial<MessageRecord> = {}): MessageRecord => ({
    type: 'message', timeNs: BigInt(i) * 1000n, connection: i % 3, channel: i % 2 ? 'backend' : 'frontend',
    direction: i % 4 < 2 ? 'to-backend' : 'to-frontend',
    bytes: Uint8Array.from({ length: 12 + (i % 40) }, (_, k) => (k * 7 + i) & 0xff),
    fds: [], ...extra,
  });
  const tr = (i: number, extra: Partial<TranslationRecord> = {}): TranslationRecord => ({
    type: 'translation', timeNs: BigInt(i) * 1000n + 7n, connection: 1, queue: i % 4,
    iova: 0xffff_f000n - BigInt(i) * 4096n, length: 64 + i, access: (i % 3) + 1,
    result: (['hit', 'miss', 'denied', 'fault'] as const)[i % 4]!, ...extra,
  });
  const out: TraceRecord[] = [];
  for (let i = 0; i < 50; i++) {
    out.push(msg(i));
    out.push(tr(i));
  }
  out.push(msg(99, { fds: [{ kind: 'memfd', size: 2 ** 33 }, { kind: 'eventfd', size: 0 }, { kind: 'socket', size: 0 }, { kind: 'other', size: 5 }] }));
  out.push(tr(100, { iova: 0xffff_ffff_ffff_f000n, timeNs: 2n ** 63n }));
  out.push(msg(101, { bytes: new Uint8Array(MAX_MESSAGE_BYTES) }));
  return out;
}

function encode(records: TraceRecord[], bufferSize?: number): Uint8Array {
  const w = TraceWriter.inMemory({ startTimeNs: 123456789n, flags: TraceFlags.Synthetic, bufferSize });
  for (const r of records) w.write(r);
  w.close();
  return w.bytes();
}

test('round trip in memory: identical records and header', () => {
  const records = sampleRecords();
  const bytes = encode(records);
  const { header, records: back } = parseTraceAll(bytes);
  assert.equal(header.version, 1);
  assert.equal(header.flags, TraceFlags.Synthetic);
  assert.equal(header.startTimeNs, 123456789n);
  assert.deepEqual(back, records);
});

test('round trip through a file with tiny read chunks and small write buffer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhtrace-'));
  try {
    const path = join(dir, 't.vhtrace');
    const records = sampleRecords();
    const w = TraceWriter.open(path, { startTimeNs: 5n, bufferSize: 1 });
    for (const r of records) w.write(r);
    w.close();
    w.close(); // idempotent
    for (const chunkSize of [64, 1000, 1 << 20]) {
      const back: TraceRecord[] = [];
      let start = -1n;
      for await (const r of readTrace(path, { chunkSize, onHeader: (h) => { start = h.startTimeNs; } })) back.push(r);
      assert.equal(start, 5n);
      assert.deepEqual(back, records);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('translation fast path encodes the same bytes as writeTranslation', () => {
  const a = TraceWriter.inMemory({ startTimeNs: 0n });
  const b = TraceWriter.inMemory({ startTimeNs: 0n });
  const cases: Array<[number, number, number, number, number, number, number]> = [
    [0, 0, 0, 0, 0, 0, 0], [123456789012, 3, 7, 0xffff_f000, 1518, 2, 1], [2 ** 53 - 1, 2 ** 32 - 1, 65535, 2 ** 52 + 12345, 2 ** 32 - 1, 3, 3],
  ];
  for (const [t, c, q, iova, len, acc, res] of cases) {
    a.translation(t, c, q, iova, len, acc, res);
    b.writeTranslation({ timeNs: BigInt(t), connection: c, queue: q, iova: BigInt(iova), length: len, access: acc,
      result: (['hit', 'miss', 'denied', 'fault'] as const)[res]! });
  }
  a.close(); b.close();
  assert.deepEqual(a.bytes(), b.bytes());
  assert.equal(a.records, 3);
});

test('writer refuses oversized messages and writes after close', () => {
  const w = TraceWriter.inMemory();
  assert.throws(() => w.writeMessage({ timeNs: 0n, connection: 0, channel: 'frontend', direction: 'to-backend',
    bytes: new Uint8Array(MAX_MESSAGE_BYTES + 1), fds: [] }), RangeError);
  w.close();
  assert.throws(() => w.translation(0, 0, 0, 0, 0, 0, 0), /closed/);
});

test('writer flushes many translations when the buffer fills', () => {
  const w = TraceWriter.inMemory({ bufferSize: 256 * 1024 });
  const n = 100_000;
  for (let i = 0; i < n; i++) w.translation(i, 0, i & 3, i * 4096, 64, 1, 0);
  w.close();
  const bytes = w.bytes();
  assert.equal(bytes.length, FILE_HEADER_SIZE + n * TRANSLATION_RECORD_SIZE);
  let count = 0;
  for (const r of parseTrace(bytes)) {
    assert.equal(r.type, 'translation');
    if (r.type === 'translation') assert.equal(r.iova, BigInt(count * 4096));
    count++;
  }
  assert.equal(count, n);
});

// --- malformed input -----------------------------------------------------------------

function oneMessageTrace(): Uint8Array {
  return encode([{ type: 'message', timeNs: 1n, connection: 0, channel: 'frontend', direction: 'to-backend',
    bytes: new Uint8Array(12), fds: [{ kind: 'memfd', size: 4096 }] }]);
}

function expectError(bytes: Uint8Array, problem: string, offset: number, detail?: RegExp): void {
  assert.throws(() => [...parseTrace(bytes, { source: 'trace.bin' })], (err: unknown) => {
    assert.ok(err instanceof TraceFormatError, String(err));
    assert.equal(err.problem, problem, err.message);
    assert.equal(err.offset, offset, err.message);
    assert.ok(err.message.startsWith(`trace.bin: ${problem} at byte ${offset}`), err.message);
    if (detail) assert.match(err.message, detail);
    return true;
  });
}

async function expectFileError(bytes: Uint8Array, problem: string, offset: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vhtrace-'));
  try {
    const path = join(dir, 'bad.vhtrace');
    writeFileSync(path, bytes);
    await assert.rejects(async () => { for await (const _ of readTrace(path, { chunkSize: 64 })) { /* drain */ } }, (err: unknown) => {
      assert.ok(err instanceof TraceFormatError);
      assert.equal(err.problem, problem, err.message);
      assert.equal(err.offset, offset, err.message);
      assert.ok(err.message.startsWith(`${path}: ${problem} at byte ${offset}`));
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const cases: Array<{ name: string; make: () => Uint8Array; problem: string; offset: number; detail?: RegExp }> = [
  { name: 'bad magic', make: () => { const b = oneMessageTrace(); b[0] = 0x7f; return b; }, problem: 'bad magic', offset: 0, detail: /found 7f/ },
  { name: 'bad magic (short file)', make: () => Uint8Array.from([0x45, 0x4c]), problem: 'bad magic', offset: 0 },
  { name: 'empty file', make: () => new Uint8Array(0), problem: 'truncated header', offset: 0, detail: /need 24 bytes, have 0/ },
  { name: 'truncated header', make: () => oneMessageTrace().slice(0, 20), problem: 'truncated header', offset: 0, detail: /need 24 bytes, have 20/ },
  { name: 'unsupported version', make: () => { const b = oneMessageTrace(); b[8] = 2; return b; }, problem: 'unsupported version', offset: 8, detail: /: 2 /},
  { name: 'bad header size', make: () => { const b = oneMessageTrace(); b[12] = 3; return b; }, problem: 'bad header size', offset: 12 },
  { name: 'truncated record header', make: () => oneMessageTrace().slice(0, FILE_HEADER_SIZE + 5), problem: 'truncated record header', offset: 24, detail: /need 8 bytes, have 5/ },
  { name: 'truncated record', make: () => oneMessageTrace().slice(0, FILE_HEADER_SIZE + 20), problem: 'truncated record', offset: 24,
    detail: new RegExp(`need ${RECORD_HEADER_SIZE + messageBodyLength(1, 12)} bytes, have 20`) },
  { name: 'oversized record length', make: () => { const b = oneMessageTrace(); new DataView(b.buffer, b.byteOffset).setUint32(28, MAX_RECORD_LENGTH + 1, true); return b; },
    problem: 'oversized record', offset: 28 },
  { name: 'oversized message length', make: () => { const b = oneMessageTrace(); new DataView(b.buffer, b.byteOffset).setUint32(24 + 8 + 15 + 9, MAX_MESSAGE_BYTES + 1, true); return b; },
    problem: 'oversized message', offset: 24 + 8 + 15 + 9 },
  { name: 'message length mismatch', make: () => { const b = oneMessageTrace(); new DataView(b.buffer, b.byteOffset).setUint32(24 + 8 + 15 + 9, 11, true); return b; },
    problem: 'record length mismatch', offset: 28 },
  { name: 'unknown record type', make: () => { const b = oneMessageTrace(); b[24] = 7; return b; }, problem: 'unknown record type', offset: 24, detail: /0x0007/ },
  { name: 'nonzero reserved', make: () => { const b = oneMessageTrace(); b[26] = 1; return b; }, problem: 'bad record header', offset: 26 },
  { name: 'unknown channel', make: () => { const b = oneMessageTrace(); b[24 + 8 + 12] = 9; return b; }, problem: 'unknown channel', offset: 44 },
  { name: 'unknown direction', make: () => { const b = oneMessageTrace(); b[24 + 8 + 13] = 2; return b; }, problem: 'unknown direction', offset: 45 },
  { name: 'unknown fd kind', make: () => { const b = oneMessageTrace(); b[24 + 8 + 15] = 4; return b; }, problem: 'unknown fd kind', offset: 47 },
  { name: 'oversized fd count', make: () => { const b = oneMessageTrace(); b[24 + 8 + 14] = 200; return b; }, problem: 'oversized fd count', offset: 46 },
];

for (const c of cases) {
  test(`malformed: ${c.name} (buffer)`, () => expectError(c.make(), c.problem, c.offset, c.detail));
  test(`malformed: ${c.name} (file)`, () => expectFileError(c.make(), c.problem, c.offset));
}

test('malformed translation record: unknown result and access, wrong length', () => {
  const base = encode([{ type: 'translation', timeNs: 1n, connection: 0, queue: 0, iova: 0n, length: 1, access: 1, result: 'hit' }]);
  const body = FILE_HEADER_SIZE + RECORD_HEADER_SIZE;
  let b = base.slice(); b[body + 27] = 4;
  expectError(b, 'unknown translation result', body + 27);
  b = base.slice(); b[body + 26] = 8;
  expectError(b, 'unknown access bits', body + 26);
  b = base.slice(); b[FILE_HEADER_SIZE + 4] = 27;
  expectError(b, 'record length mismatch', FILE_HEADER_SIZE + 4);
});

test('error offsets point past earlier good records', () => {
  const good = encode([{ type: 'translation', timeNs: 1n, connection: 0, queue: 0, iova: 0n, length: 1, access: 1, result: 'hit' },
    { type: 'translation', timeNs: 2n, connection: 0, queue: 0, iova: 0n, length: 1, access: 1, result: 'hit' }]);
  const cut = good.slice(0, good.length - 3);
  const seen: TraceRecord[] = [];
  assert.throws(() => { for (const r of parseTrace(cut, { source: 'trace.bin' })) seen.push(r); },
    { message: `trace.bin: truncated record at byte ${FILE_HEADER_SIZE + TRANSLATION_RECORD_SIZE}: need ${TRANSLATION_RECORD_SIZE} bytes, have ${TRANSLATION_RECORD_SIZE - 3}` });
  assert.equal(seen.length, 1, 'records before the damage are still yielded');
});

test('ancillary unknown record types are skipped', () => {
  const base = encode([{ type: 'translation', timeNs: 1n, connection: 0, queue: 0, iova: 0n, length: 1, access: 1, result: 'hit' }]);
  const extra = new Uint8Array(RECORD_HEADER_SIZE + 5);
  const v = new DataView(extra.buffer);
  v.setUint16(0, 0x8123, true);
  v.setUint32(4, 5, true);
  const bytes = Buffer.concat([base.subarray(0, FILE_HEADER_SIZE), extra, base.subarray(FILE_HEADER_SIZE)]);
  const skipped: number[] = [];
  const records = [...parseTrace(bytes, { onSkipped: (type) => skipped.push(type) })];
  assert.equal(records.length, 1);
  assert.deepEqual(skipped, [0x8123]);
  assert.equal(RecordType.Message, 1);
});

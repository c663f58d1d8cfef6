import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Chalk } from 'chalk';
import {
  BackendRequest, FrontendRequest, IotlbType, NetFeature, ProtocolFeature, VirtioFeature, encodeMessage, featureMask,
} from '../../src/protocol/index.js';
import { TraceWriter } from '../../src/trace/writer.js';
import { decodeTrace, parseFilters } from '../../src/trace/print.js';
import { describeMessage, formatSize, formatTime } from '../../src/trace/describe.js';
import { colorLevel } from '../../src/cli/color.js';
import { parseTrace } from '../../src/trace/reader.js';
import { runCli as cli, type CliRun } from '../support/cli.js';
import type { MessageRecord, TraceRecord } from '../../src/trace/records.js';

const ANSI = /\x1b\[/;

const FEATURES = featureMask(VirtioFeature.VERSION_1, VirtioFeature.ACCESS_PLATFORM, NetFeature.MRG_RXBUF, VirtioFeature.PROTOCOL_FEATURES);

/** A small trace: handshake, memory table, ring setup, IOTLB traffic, garbage, translations. */
function sampleTrace(): Uint8Array {
  const w = TraceWriter.inMemory({ startTimeNs: 1_700_000_000_000_000_000n });
  let t = 0n;
  const msg = (channel: 'frontend' | 'backend', direction: 'to-backend' | 'to-frontend', bytes: Uint8Array, fds: MessageRecord['fds'] = []): void => {
    t += 1500n;
    w.writeMessage({ timeNs: t, connection: 0, channel, direction, bytes, fds });
  };
  const F = FrontendRequest;
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.GET_FEATURES, body: { kind: 'none' } }));
  msg('frontend', 'to-frontend', encodeMessage({ channel: 'frontend', request: F.GET_FEATURES, isReply: true, body: { kind: 'u64', value: FEATURES } }));
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.SET_PROTOCOL_FEATURES,
    body: { kind: 'u64', value: featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.BACKEND_REQ) } }));
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.SET_MEM_TABLE, needsReply: true, body: { kind: 'memTable', regions: [
    { guestAddr: 0n, size: 0xc0000000n, userAddr: 0x7f0000000000n, mmapOffset: 0n },
    { guestAddr: 0x100000000n, size: 0x40000000n, userAddr: 0x7f00c0000000n, mmapOffset: 0xc0000000n },
  ] } }), [{ kind: 'memfd', size: 4 * 2 ** 30 }, { kind: 'memfd', size: 4 * 2 ** 30 }]);
  msg('frontend', 'to-frontend', encodeMessage({ channel: 'frontend', request: F.SET_MEM_TABLE, isReply: true, body: { kind: 'u64', value: 0n } }));
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.SET_VRING_NUM, body: { kind: 'vringState', index: 0, num: 256 } }));
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.SET_VRING_ADDR, body: { kind: 'vringAddr', index: 0, flags: 0,
    descUser: 0xfffff000n, usedUser: 0xfffff800n, availUser: 0xfffff400n, logGuest: 0n } }));
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.SET_VRING_KICK, body: { kind: 'u64', value: 1n } }), [{ kind: 'eventfd', size: 0 }]);
  w.translation(12_500, 0, 0, 0xfffff000, 16, 1, 1);
  msg('backend', 'to-frontend', encodeMessage({ channel: 'backend', request: BackendRequest.IOTLB_MSG,
    body: { kind: 'iotlb', iova: 0xfffff000n, size: 0n, userAddr: 0n, perm: 1, iotlbType: IotlbType.MISS } }));
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.IOTLB_MSG, needsReply: true,
    body: { kind: 'iotlb', iova: 0xfffff000n, size: 0x1000n, userAddr: 0x7f00fffff000n, perm: 3, iotlbType: IotlbType.UPDATE } }));
  msg('frontend', 'to-frontend', encodeMessage({ channel: 'frontend', request: F.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n } }));
  t = 40_000n;
  w.translation(40_000, 0, 0, 0xfffff000, 16, 1, 0);
  w.translation(40_100, 0, 1, 0xfffff400, 2, 1, 0);
  w.translation(40_200, 0, 1, 0xfffff800, 8, 2, 0);
  msg('frontend', 'to-backend', encodeMessage({ channel: 'frontend', request: F.IOTLB_MSG, needsReply: true,
    body: { kind: 'iotlb', iova: 0xfffff000n, size: 0x1000n, userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE } }));
  // Garbage: reserved flag bits set.
  const bad = encodeMessage({ channel: 'frontend', request: F.SET_OWNER, body: { kind: 'none' } });
  bad[5] = 0x80;
  msg('frontend', 'to-backend', bad);
  // Even less: not even a header.
  msg('frontend', 'to-backend', Uint8Array.of(1, 2, 3));
  w.close();
  return w.bytes();
}

async function decodeLines(bytes: Uint8Array, options: Parameters<typeof decodeTrace>[1] = {}): Promise<{ lines: string[]; stats: Awaited<ReturnType<typeof decodeTrace>> }> {
  const lines: string[] = [];
  const stats = await decodeTrace(parseTrace(bytes), options, (l) => lines.push(...l.split('\n')));
  return { lines, stats };
}

test('helpers: sizes and times', () => {
  assert.equal(formatSize(4096), '4 KiB');
  assert.equal(formatSize(2n ** 21n), '2 MiB');
  assert.equal(formatSize(1536), '1.5 KiB');
  assert.equal(formatSize(1500), '1500 B');
  assert.equal(formatTime(12_345_678n).trim(), '12.345 ms');
  assert.equal(formatTime(999n).trim(), '0.000 ms');
});

test('text output: one line per message with decoded fields, region table, translation summaries', async () => {
  const { lines } = await decodeLines(sampleTrace());
  const text = lines.join('\n');
  assert.doesNotMatch(text, ANSI);
  const find = (re: RegExp): string => {
    const line = lines.find((l) => re.test(l));
    assert.ok(line, `no line matches ${re}\n${text}`);
    return line;
  };
  assert.match(find(/GET_FEATURES$/), /^\s+0\.001 ms {2}#0 {2}→ frontend {2}GET_FEATURES$/);
  assert.match(find(/GET_FEATURES reply/), /← frontend .*GET_FEATURES reply {2}0x340008000 MRG_RXBUF\|PROTOCOL_FEATURES\|VERSION_1\|ACCESS_PLATFORM/);
  find(/SET_PROTOCOL_FEATURES {2}0x28 REPLY_ACK\|BACKEND_REQ/);
  find(/SET_MEM_TABLE {2}2 regions {2}\[need-reply\] {2}fds: memfd\(4 GiB\), memfd\(4 GiB\)/);
  find(/SET_MEM_TABLE reply {2}ack 0 \(ok\)/);
  find(/│ +1 │ +0x100000000 │ +1 GiB │ +0x7f00c0000000 │ +0xc0000000 │ memfd\(4 GiB\) │/);
  find(/guest addr/);
  find(/SET_VRING_NUM {2}vring 0 num 256/);
  find(/SET_VRING_ADDR {2}vring 0 desc 0xfffff000 avail 0xfffff400 used 0xfffff800$/);
  find(/SET_VRING_KICK {2}vring 1 {2}fds: eventfd/);
  find(/… 1 translation on q0: 1 miss/);
  find(/← backend .*IOTLB_MSG {2}MISS iova 0xfffff000 perm RO$/);
  find(/→ frontend .*IOTLB_MSG {2}UPDATE iova 0xfffff000 size 0x1000 \(4 KiB\) uaddr 0x7f00fffff000 perm RW {2}\[need-reply\]/);
  find(/… 3 translations on q0,q1: 3 hit/);
  find(/IOTLB_MSG {2}INVALIDATE iova 0xfffff000 size 0x1000 \(4 KiB\)/);
  find(/SET_OWNER {2}undecodable: reserved bits set in flags 0x8001 \[BAD_FLAGS flags\]/);
  find(/\(no header\) {2}undecodable: .*\[TRUNCATED header\] {2}\(3 bytes\)/);
});

test('--translations prints each translation', async () => {
  const { lines } = await decodeLines(sampleTrace(), { translations: true });
  assert.equal(lines.filter((l) => / translate iova /.test(l)).length, 4);
  assert.ok(lines.some((l) => /⇢ q1 .*translate iova 0xfffff800 len 8 w {2}hit/.test(l)));
  assert.ok(!lines.some((l) => /…/.test(l)));
});

test('--json: one parseable object per line, bigints as hex strings', async () => {
  const { lines } = await decodeLines(sampleTrace(), { json: true });
  const objects = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const messages = objects.filter((o) => o.type === 'message');
  assert.equal(messages.length, 14);
  assert.equal(objects.filter((o) => o.type === 'translations').length, 2);
  const reply = messages[1]!;
  assert.equal(reply.name, 'GET_FEATURES');
  assert.equal(reply.isReply, true);
  assert.deepEqual(reply.body, { kind: 'u64', value: '0x340008000' });
  assert.deepEqual(reply.features, ['MRG_RXBUF', 'PROTOCOL_FEATURES', 'VERSION_1', 'ACCESS_PLATFORM']);
  assert.equal(reply.timeNs, '0xbb8');
  const table = messages[3]!;
  assert.deepEqual((table.body as { regions: unknown[] }).regions[1], { guestAddr: '0x100000000', size: '0x40000000', userAddr: '0x7f00c0000000', mmapOffset: '0xc0000000' });
  assert.deepEqual(table.fds, [{ kind: 'memfd', size: 4 * 2 ** 30 }, { kind: 'memfd', size: 4 * 2 ** 30 }]);
  const miss = messages.find((m) => m.iotlbType === 'MISS')!;
  assert.equal(miss.channel, 'backend');
  assert.equal(miss.perm, 'RO');
  const bad = messages[12]!;
  assert.deepEqual(bad.error, { message: 'reserved bits set in flags 0x8001', code: 'BAD_FLAGS', field: 'flags' });
  assert.equal(bad.name, 'SET_OWNER');

  const { lines: tl } = await decodeLines(sampleTrace(), { json: true, translations: true });
  const tr = tl.map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o.type === 'translation');
  assert.deepEqual(tr[0], { type: 'translation', timeNs: '0x30d4', timeMs: 0.0125, connection: 0, queue: 0, iova: '0xfffff000', length: 16, access: 'r', result: 'miss' });
});

test('--filter by request names (any case) and by channel', async () => {
  const names = async (values: string[]): Promise<string[]> => {
    const { lines } = await decodeLines(sampleTrace(), { json: true, filter: parseFilters(values) });
    return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o.type === 'message')
      .map((o) => `${o.channel === 'backend' ? 'b:' : ''}${o.name}${o.isReply ? ' reply' : ''}`);
  };
  assert.deepEqual(await names(['IOTLB_MSG', 'set_mem_table']),
    ['SET_MEM_TABLE', 'SET_MEM_TABLE reply', 'b:IOTLB_MSG', 'IOTLB_MSG', 'IOTLB_MSG reply', 'IOTLB_MSG']);
  assert.deepEqual(await names(['backend']), ['b:IOTLB_MSG']);
  assert.deepEqual(await names(['frontend', 'iotlb_msg']), ['IOTLB_MSG', 'IOTLB_MSG reply', 'IOTLB_MSG']);
  assert.deepEqual(await names(['main', 'iotlb_msg']), await names(['frontend', 'iotlb_msg']), '`main` is accepted for frontend');
  assert.deepEqual(await names(['vhost_user_set_owner']), ['SET_OWNER']);
  assert.deepEqual(await names(['get_features,set_vring_num']), ['GET_FEATURES', 'GET_FEATURES reply', 'SET_VRING_NUM']);
  assert.throws(() => parseFilters(['SET_MEMTABLE']), /unknown --filter value "SET_MEMTABLE"/);
});

test('--stats: counts per request, IOTLB counts, hit rate', async () => {
  const { lines, stats } = await decodeLines(sampleTrace(), { stats: true });
  assert.deepEqual(lines, [], 'stats mode prints no records');
  const json = stats.toJson() as Record<string, any>;
  assert.equal(json.messages, 14);
  assert.equal(json.undecodable, 2);
  assert.deepEqual(json.iotlb, { miss: 1, update: 1, invalidate: 1, accessFail: 0 });
  assert.deepEqual(json.translations, { total: 4, hit: 3, miss: 1, denied: 0, fault: 0, hitRate: 0.75 });
  const row = (name: string, channel = 'frontend') => json.requests.find((r: any) => r.name === name && r.channel === channel);
  assert.deepEqual(row('IOTLB_MSG'), { channel: 'frontend', name: 'IOTLB_MSG', requests: 2, replies: 1 });
  assert.deepEqual(row('IOTLB_MSG', 'backend'), { channel: 'backend', name: 'IOTLB_MSG', requests: 1, replies: 0 });
  assert.deepEqual(row('GET_FEATURES'), { channel: 'frontend', name: 'GET_FEATURES', requests: 1, replies: 1 });
  const text = stats.render();
  assert.match(text, /messages 14 \(2 undecodable\), connections 1/);
  assert.match(text, /│ frontend +│ IOTLB_MSG +│ +2 │ +1 │/);
  assert.match(text, /│ update +│ +1 │/);
  assert.match(text, /│ hit rate +│ +75\.00% │/);
  // Filtered stats count only the matching messages (translations always).
  const { stats: f } = await decodeLines(sampleTrace(), { stats: true, filter: parseFilters(['backend']) });
  assert.equal(f.messages, 1);
  assert.equal(f.translations.total, 4);
});

test('colour: a coloured chalk adds ANSI, the default one (and NO_COLOR / non-TTY) does not', async () => {
  const bytes = sampleTrace();
  const first = [...parseTrace(bytes)][0] as MessageRecord;
  assert.match(describeMessage(first, { chalk: new Chalk({ level: 1 }) }), ANSI);
  assert.doesNotMatch(describeMessage(first), ANSI);
  assert.equal(colorLevel({ isTTY: true }, { NO_COLOR: '1' }), 0);
  assert.equal(colorLevel({ isTTY: false }, {}), 0);
});

const runCli = (args: string[], env: Record<string, string | undefined>): CliRun => cli(args, { env });

test('CLI: piped output has no ANSI codes; FORCE_COLOR turns them on; bad traces exit 2 with the offset', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhtrace-'));
  try {
    const file = join(dir, 'sample.vhtrace');
    const bytes = sampleTrace();
    writeFileSync(file, bytes);
    const piped = runCli(['trace', 'decode', file], {});
    assert.equal(piped.status, 0, piped.stderr);
    assert.doesNotMatch(piped.stdout, ANSI);
    assert.match(piped.stdout, /sample\.vhtrace: trace format v1, started 2023-11-14T22:13:20\.000Z/);
    assert.match(piped.stdout, /UPDATE iova 0xfffff000/);
    assert.doesNotMatch(runCli(['trace', 'decode', file, '--stats'], { NO_COLOR: '1' }).stdout, ANSI);
    assert.match(runCli(['trace', 'decode', file], { FORCE_COLOR: '1' }).stdout, ANSI);
    assert.doesNotMatch(runCli(['trace', 'decode', file, '--no-color'], { FORCE_COLOR: '1' }).stdout, ANSI);
    const json = runCli(['trace', 'decode', file, '--json', '--filter', 'iotlb_msg'], { FORCE_COLOR: '1' });
    assert.equal(json.stdout.trim().split('\n').filter((l) => JSON.parse(l).type === 'message').length, 4);
    assert.doesNotMatch(json.stdout, ANSI);
    const stats = JSON.parse(runCli(['trace', 'decode', file, '--json', '--stats'], {}).stdout) as Record<string, any>;
    assert.equal(stats.translations.hitRate, 0.75);

    const cut = join(dir, 'cut.vhtrace');
    writeFileSync(cut, bytes.subarray(0, 24 + 8 + 10));
    const bad = runCli(['trace', 'decode', cut], {});
    assert.equal(bad.status, 2);
    assert.match(bad.stderr.replace(/\s*›\s*/g, ' '), /cut\.vhtrace: truncated record at byte 24: need 39 bytes, have 18/);
    const unknown = runCli(['trace', 'decode', file, '--filter', 'nope'], {});
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /unknown --filter value "nope"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('decoding never throws on arbitrary message bytes', async () => {
  const w = TraceWriter.inMemory();
  let seed = 7;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
  for (let i = 0; i < 2000; i++) {
    const len = rand() % 80;
    const bytes = Uint8Array.from({ length: len }, () => rand() & 0xff);
    if (len >= 12 && i % 2 === 0) { bytes[0] = rand() % 45; bytes[1] = bytes[2] = bytes[3] = 0; bytes[4] = 1; bytes[5] = bytes[6] = bytes[7] = 0; bytes[8] = len - 12; bytes[9] = bytes[10] = bytes[11] = 0; }
    w.writeMessage({ timeNs: BigInt(i), connection: 0, channel: i % 3 ? 'frontend' : 'backend', direction: 'to-backend', bytes,
      fds: Array.from({ length: rand() % 3 }, () => ({ kind: 'memfd' as const, size: 4096 })) });
  }
  w.close();
  const records: TraceRecord[] = [...parseTrace(w.bytes())];
  for (const json of [false, true]) {
    const lines: string[] = [];
    await decodeTrace(records, { json }, (l) => lines.push(l));
    assert.equal(lines.length, 2000);
  }
});

test('CLI: text and --json name each message\'s channel the same way, frontend or backend, the names --filter takes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vhtrace-'));
  try {
    const file = join(dir, 'sample.vhtrace');
    writeFileSync(file, sampleTrace());
    const decode = (...args: string[]): string => {
      const r = runCli(['trace', 'decode', file, ...args], {});
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const jsonChannels = (stdout: string): string[] => stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; channel?: string })
      .filter((o) => o.type === 'message').map((o) => o.channel!);
    // Message by message, in order: the text line's channel is the JSON record's.
    const text = decode().split('\n').flatMap((l) => l.match(/#\d+ {2}[→←] (\S+)/)?.[1] ?? []);
    const json = jsonChannels(decode('--json'));
    assert.deepEqual([...new Set(text)].sort(), ['backend', 'frontend']);
    assert.deepEqual(text, json);
    assert.match(decode('--stats'), /│ frontend +│ IOTLB_MSG /);
    // Each printed name filters its channel; the old name `main` still means frontend.
    for (const name of ['frontend', 'backend']) assert.deepEqual(jsonChannels(decode('--json', '--filter', name)), json.filter((c) => c === name));
    assert.equal(decode('--json', '--filter', 'main'), decode('--json', '--filter', 'frontend'));
    assert.doesNotMatch(decode(), /\bmain\b/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

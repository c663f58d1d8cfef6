/**
 * What every command shares, through the spawned CLI: oclif's help and did-you-mean plugins,
 * `--json` results and errors with the documented exit codes, and the shared `--color` flag.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import { runCli } from '../support/cli.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

test('help lists a topic\'s commands; an unknown command is named and exits 127', () => {
  const help = runCli(['help', 'trace']);
  assert.equal(help.status, 0, help.stderr);
  for (const sub of ['trace decode', 'trace record', 'trace synth']) assert.match(help.stdout, new RegExp(sub));
  const typo = runCli(['bnech']);
  assert.equal(typo.status, 127);
  // plugin-not-found colours its message whenever CI is set, TTY or not: read it without escapes.
  assert.match(stripVTControlCharacters(typo.stderr), /bnech is not a vhost-iotlb command/);
});

test('--json: the result as one document; a usage error as JSON with exit 2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-cli-'));
  try {
    const out = join(dir, 'd.vhtrace');
    const ok = runCli(['trace', 'synth', '--scenario', 'dynamic', '--packets', '20', '-o', out, '--json']);
    assert.equal(ok.status, 0, ok.stderr);
    const summary = JSON.parse(ok.stdout) as { scenario: string; packets: number; updates: number };
    assert.equal(summary.scenario, 'dynamic');
    assert.equal(summary.packets, 20);
    assert.ok(summary.updates > 0);

    const bench = runCli(['bench', out, '--json', '--time', '0.01', '--strategy', 'coalescing']);
    assert.equal(bench.status, 0, bench.stderr);
    const doc = JSON.parse(bench.stdout) as { rows: Array<{ trace: string; strategy: string }>; errors: unknown[] };
    assert.deepEqual(doc.rows.map((r) => `${r.trace}/${r.strategy}`), ['d/coalescing']);
    assert.deepEqual(doc.errors, []);

    for (const args of [['trace', 'synth', '--scenario', 'nope', '-o', out, '--json'], ['trace', 'synth', '--scenario', 'dynamic', '--queues', '0', '-o', out, '--json']]) {
      const bad = runCli(args);
      assert.equal(bad.status, 2, `${args.join(' ')}: ${bad.stdout}${bad.stderr}`);
      const err = JSON.parse(bad.stdout) as { error: { message: string } };
      assert.match(err.error.message, /scenario=nope|--queues/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--[no-]color is one shared flag of the commands that print for people', () => {
  for (const command of [['bench'], ['inspect'], ['trace', 'decode']]) {
    const help = runCli([...command, '--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /GLOBAL FLAGS[\s\S]*--\[no-\]color/, command.join(' '));
  }
});

test('output paths are checked before any work: a missing directory or a directory, exit 2, nothing created', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-cli-'));
  try {
    const missing = join(dir, 'missing');
    const cases: Array<[string[], RegExp]> = [
      [['bench', '--csv', join(missing, 'x.csv')], /--csv \S+missing\/x\.csv: directory \S+missing does not exist/],
      [['bench', '--chart', join(missing, 'x.html')], /--chart \S+missing\/x\.html: directory \S+missing does not exist/],
      [['trace', 'synth', '--scenario', 'dynamic', '-o', dir], /--output \S+: is a directory/],
      [['trace', 'record', '--listen', join(dir, 'l.sock'), '--connect', join(dir, 'c.sock'), '-o', join(missing, 't.vhtrace')], /--output \S+t\.vhtrace: directory \S+missing does not exist/],
      [['serve', '-s', join(dir, 'v.sock'), '--net', 'sink', '--trace', join(missing, 't.vhtrace')], /--trace \S+t\.vhtrace: directory \S+missing does not exist/],
    ];
    for (const [args, why] of cases) {
      const r = runCli(args);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.replace(/\s*\n\s*›\s*/g, ' '), why);
      assert.doesNotMatch(r.stderr, /\[1\//, 'no work started');
    }
    assert.deepEqual(readdirSync(dir), [], 'nothing was created');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trace decode of a directory or a missing file: one line, exit 2', () => {
  const dir = runCli(['trace', 'decode', tmpdir()]);
  assert.equal(dir.status, 2);
  assert.match(dir.stderr, /is a directory, not a trace file/);
  const missing = runCli(['trace', 'decode', join(tmpdir(), 'no-such-trace.vhtrace')]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /no-such-trace\.vhtrace: no such file/);
});

test('bench on proxy recordings: the IOMMU one replays from the misses DPDK revealed; the one without IOTLB traffic has nothing to replay, exit 2', () => {
  const r = runCli(['bench', 'fixtures/traces/recorded/qemu-dpdk-iommu.vhtrace', '--time', '0.01'], { cwd: ROOT });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /replay: misses revealed by the back-end/);
  assert.doesNotMatch(r.stdout, /NaN/);
  const none = runCli(['bench', 'fixtures/traces/recorded/qemu-dpdk.vhtrace', '--time', '0.01'], { cwd: ROOT });
  assert.equal(none.status, 2, none.stderr);
  assert.match(none.stdout + none.stderr, /no IOTLB operations or translations in .*qemu-dpdk\.vhtrace/);
});

test('a short flag means the same long flag in every command', async () => {
  const byChar = new Map<string, Set<string>>();
  for (const file of ['bench', 'inspect', 'serve', 'trace/decode', 'trace/record', 'trace/synth']) {
    const command = (await import(`../../commands/${file}.js`)).default as { flags?: Record<string, { char?: string }> };
    for (const [name, flag] of Object.entries(command.flags ?? {})) {
      if (flag.char === undefined) continue;
      if (!byChar.has(flag.char)) byChar.set(flag.char, new Set());
      byChar.get(flag.char)!.add(name);
    }
  }
  for (const [char, names] of byChar) assert.equal(names.size, 1, `-${char} means ${[...names].join(' and ')}`);
  assert.ok(byChar.size >= 4, 'the commands were read');
});

test('trace synth refuses a static area too large to map instead of running for minutes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-cli-'));
  try {
    const started = Date.now();
    const r = runCli(['trace', 'synth', '--scenario', 'static-4k', '--guest-mib', '100000', '-o', join(dir, 'never.vhtrace')]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr.replace(/\s*\n\s*›\s*/g, ' '), /guest-mib 100000 maps 25600000 IOMMU pages in static-4k, over 4194304/);
    assert.ok(Date.now() - started < 5000);
    assert.deepEqual(readdirSync(dir), [], 'no file was started');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('trace synth of a big area says how far it got on stderr, once a second; stdout stays the one JSON document', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-cli-'));
  try {
    const out = join(dir, 'big.vhtrace');
    // ~3 M messages: several seconds here, long enough for the first line after 1 s.
    const r = runCli(['trace', 'synth', '--scenario', 'static-4k', '--guest-mib', '6000', '--packets', '10', '-o', out, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { messages: number };
    const lines = r.stderr.trim().split('\n').filter(Boolean);
    assert.ok(lines.length >= 1, `no progress on stderr for ${summary.messages} messages`);
    for (const line of lines) assert.match(line, /big\.vhtrace: \d+ messages written \(\d+ s\)$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

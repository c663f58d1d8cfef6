import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { strategyNames } from '../../src/iotlb/registry.js';
import { bundledTraces, packageRoot, traceName } from '../../src/replay/fixtures.js';
import { TraceWriter } from '../../src/trace/writer.js';
import { FrontendRequest, IotlbType, encodeMessage } from '../../src/protocol/index.js';
import { runCli, type CliRun } from '../support/cli.js';
import { CSV_COLUMNS } from '../../src/replay/render.js';
import { DEFAULT_ROUNDS } from '../../src/replay/run.js';

const ROOT = packageRoot();

const bench = (args: string[], cwd = ROOT): CliRun => runCli(['bench', ...args], { cwd, env: { NO_COLOR: '1' } });

/** A small valid trace: two mappings, some lookups on two queues. */
function smallTrace(path: string): void {
  const w = TraceWriter.open(path, { startTimeNs: 0n });
  for (const [iova, uaddr] of [[0x10000, 0x7000_0000], [0x20000, 0x8000_0000]]) {
    w.writeMessage({ timeNs: 0n, connection: 0, channel: 'frontend', direction: 'to-backend', fds: [],
      bytes: encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG,
        body: { kind: 'iotlb', iova: BigInt(iova), size: 0x10000n, userAddr: BigInt(uaddr), perm: 3, iotlbType: IotlbType.UPDATE } }) });
  }
  for (let i = 0; i < 64; i++) w.translation(i, 0, i & 1, 0x10000 + i * 0x800, 64, 1, 0);
  w.close();
}

test('bench --json: one row per strategy per bundled trace, real sessions first, a session without IOMMU skipped', () => {
  // qemu-dpdk.vhtrace (recorded/, no IOMMU) has no IOTLB traffic: listed as skipped, not an error.
  const fixtures = bundledTraces(ROOT).filter((f) => traceName(f) !== 'qemu-dpdk');
  assert.ok(fixtures.length > 0, 'fixtures/traces/*.vhtrace present');
  // Real sessions first (top level, then recorded/, each by name), then the synthetic ones.
  const real = ['qemu-iommu-guest', 'qemu-serve-mq2-tcp-recv', 'qemu-serve-packed-tcp-send', 'qemu-serve-pktgen', 'qemu-serve-tcp-recv',
    'qemu-serve-tcp-send', 'qemu-dpdk-iommu', 'qemu-dpdk-pktgen-iommu'];
  assert.deepEqual(fixtures.slice(0, real.length).map(traceName), real, 'real sessions first');
  assert.ok(fixtures.slice(real.length).every((f) => !traceName(f).startsWith('qemu-')), 'then the synthetic ones');
  const dir = mkdtempSync(join(tmpdir(), 'bench-cmd-'));
  try {
    // From another directory: the fixtures are found relative to the package, not the cwd.
    const csv = join(dir, 'out.csv');
    const r = bench(['--json', '--time', '0.01', '--csv', csv], dir);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as {
      rows: Array<Record<string, unknown>>; errors: unknown[]; skipped: Array<{ trace: string }>; traces: Array<{ trace: string; replay: string }>;
    };
    assert.deepEqual(doc.errors, []);
    assert.deepEqual(doc.skipped.map((s) => s.trace), ['qemu-dpdk']);
    assert.deepEqual(doc.traces.map((t) => t.trace), fixtures.map(traceName), 'a profile per trace, in run order');
    assert.equal(doc.traces.find((t) => t.trace === 'qemu-dpdk-iommu')?.replay, 'revealed-misses');
    assert.equal(doc.traces.find((t) => t.trace === 'static-2m')?.replay, 'translations');
    const expected = fixtures.flatMap((f) => strategyNames().map((s) => `${traceName(f)}/${s}`));
    assert.deepEqual(doc.rows.map((row) => `${row.trace}/${row.strategy}`).sort(), expected.sort());
    for (const row of doc.rows) {
      assert.ok((row.lookupsPerSec as number) > 0, JSON.stringify(row));
      assert.equal(typeof row.marginPct, 'number');
      assert.equal(typeof row.hitRate, 'number');
      assert.equal(typeof row.missesSent, 'number');
      assert.equal(typeof row.peakEntries, 'number');
    }
    assert.equal(doc.rows.filter((row) => row.best === true).length, fixtures.length, 'one best per trace');
    for (const row of doc.rows) {
      const rounds = row.roundLookupsPerSec as number[];
      assert.equal(rounds.length, DEFAULT_ROUNDS, `${DEFAULT_ROUNDS} rounds by default`);
      const mean = rounds.reduce((a, v) => a + v, 0) / rounds.length;
      assert.ok(Math.abs(mean - (row.lookupsPerSec as number)) <= 1e-6 * (row.lookupsPerSec as number), 'the figure is the mean of the rounds');
      assert.ok(!(row.best && row.withinMargin), 'best and within-margin are exclusive');
    }
    assert.match(r.stderr, /lookups\/s/, 'progress on stderr');
    const lines = readFileSync(csv, 'utf8').trim().split('\n');
    assert.equal(lines[0], CSV_COLUMNS.join(','));
    assert.equal(lines.length, 1 + doc.rows.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench: a corrupted trace reports its byte offset, the others still run, exit status 2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-cmd-'));
  try {
    const good = join(dir, 'good.vhtrace');
    const cut = join(dir, 'cut.vhtrace');
    const empty = join(dir, 'empty.vhtrace');
    smallTrace(good);
    const bytes = readFileSync(good);
    writeFileSync(cut, bytes.subarray(0, bytes.length - 7));
    TraceWriter.open(empty, { startTimeNs: 0n }).close();
    const chart = join(dir, 'chart.html');
    const r = bench([cut, good, empty, '--json', '--time', '0.01', '--strategy', 'dpdk,coalescing', '--chart', chart]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /cut\.vhtrace: truncated record at byte \d+: need 36 bytes, have 29/);
    assert.match(r.stderr, new RegExp(`no IOTLB operations or translations in ${empty.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const doc = JSON.parse(r.stdout) as { rows: Array<{ trace: string; strategy: string; hits: number }>; errors: Array<{ trace: string; message: string }> };
    assert.deepEqual(doc.rows.map((row) => `${row.trace}/${row.strategy}`), ['good/dpdk', 'good/coalescing']);
    assert.equal(doc.rows[0].hits, 64);
    assert.deepEqual(doc.errors.map((e) => e.trace), ['cut', 'empty']);
    // One chart file per trace that ran.
    assert.ok(existsSync(join(dir, 'chart-good.html')));
    assert.match(readFileSync(join(dir, 'chart-good.html'), 'utf8'), /dpdk/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench --chart: the page works offline (Chart.js inlined) and plots the table\'s lookups/s', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-cmd-'));
  try {
    const good = join(dir, 'good.vhtrace');
    smallTrace(good);
    const chart = join(dir, 'chart.html');
    const r = bench([good, '--json', '--time', '0.01', '--strategy', 'lru,interval', '--chart', chart]);
    assert.equal(r.status, 0, r.stderr);
    const doc = JSON.parse(r.stdout) as { rows: Array<{ strategy: string; lookupsPerSec: number }> };
    const page = readFileSync(chart, 'utf8');
    // Nothing is loaded from the network (Chart.js's own comments still name its web site).
    assert.ok(!/<script[^>]*\ssrc=/.test(page), 'no script src');
    assert.ok(!/\s(src|href)=["']?https?:/.test(page), 'no http(s) src or href');
    assert.ok(page.includes('<script>/*!\n * Chart.js v3.'), 'Chart.js inlined');
    // The bars are the rows' lookups/s, and say so.
    const bars = JSON.parse(/\bdata: (\[[^\]]*\])/.exec(page)![1]) as number[];
    assert.deepEqual(bars, doc.rows.map((row) => row.lookupsPerSec));
    assert.match(page, /' lookups\/s'/);
    assert.match(page, /Lookups per second \(whole replays of 64 lookups\)/);
    assert.ok(!/ops\/s|Operations per second/.test(page), 'benny\'s ops/s labels are gone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench: tables on stdout with the best marked; unknown strategy lists the valid ones', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-cmd-'));
  try {
    const good = join(dir, 'good.vhtrace');
    smallTrace(good);
    const r = bench([good, '--time', '0.01', '--strategy', 'interval,lru']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^good\n/);
    assert.match(r.stdout, /✓ (interval|lru)/);
    assert.equal((r.stdout.match(/✓ (interval|lru)/g) ?? []).length, 1);
    assert.match(r.stdout, new RegExp(`✓ fastest · ≈ within the margin of the fastest .* ${DEFAULT_ROUNDS} round\\(s\\)`));
    assert.match(r.stderr, new RegExp(`good \\(round ${DEFAULT_ROUNDS}/${DEFAULT_ROUNDS}\\): (interval|lru) `), 'progress names the rounds');
    const bad = bench([good, '--strategy', 'dpdk,fastest']);
    assert.equal(bad.status, 2);
    // oclif wraps long error lines ("›" continuation marks).
    const message = bad.stderr.replace(/\s*\n\s*›\s*/g, ' ');
    assert.match(message, /unknown IOTLB strategy "fastest"; valid strategies: dpdk, lru, interval, coalescing/);
    assert.equal(bad.stdout, '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench: trace paths with spaces are taken as given', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench cmd '));
  try {
    const f = join(dir, 'a trace.vhtrace');
    smallTrace(join(dir, 'src.vhtrace'));
    copyFileSync(join(dir, 'src.vhtrace'), f);
    const r = bench([f, '--json', '--time', '0.01', '--strategy', 'dpdk']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { rows: Array<{ trace: string }> }).rows[0].trace, 'a trace');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

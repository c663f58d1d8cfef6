/** serve's statistics table (src/serve/stats-table.ts): human units, rates, quiet while idle. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NetDevice } from '../../src/device/device.js';
import { RING_COUNTERS, type RingCounterName } from '../../src/datapath/stats.js';
import { humanBytes, humanCount, statsTable } from '../../src/serve/stats-table.js';
import { BIN } from '../support/cli.js';
import { waitForPath } from '../peers/util.js';

/** A device whose vring 1 (TX) has run with these counters; vring 0 never ran. */
function deviceWith(counters: Partial<Record<RingCounterName, number>> | null): NetDevice {
  const full = Object.fromEntries(RING_COUNTERS.map((n) => [n, counters?.[n] ?? 0])) as Record<RingCounterName, number>;
  return { vrings: [{ index: 0 }, { index: 1 }], counters: (i: number) => (i === 1 && counters ? full : undefined) } as unknown as NetDevice;
}

test('human units', () => {
  assert.deepEqual([0, 9999, 12_345, 4_560_000, 1.5e9].map(humanCount), ['0', '9999', '12.3 k', '4.56 M', '1.50 G']);
  assert.deepEqual([512, 1536, 50 * 1024 * 1024].map(humanBytes), ['512 B', '1.50 KiB', '50.0 MiB']);
});

test('periodic prints are quiet until something moves, then give packets per second since the last call', () => {
  const idle = statsTable('t', deviceWith(null), null, true, 0);
  assert.equal(idle.text, null, 'no queue ran: nothing printed');
  assert.equal(statsTable('t', deviceWith(null), null, false, 0).text, 't: no queue has run', 'the final print says so');

  const first = statsTable('t', deviceWith({ packets: 5000, bytes: 320_000 }), idle.snapshot, true, 1000);
  assert.match(first.text!, /1 tx\s*│\s*-\s*│\s*5000\s*│\s*313 KiB/);
  const second = statsTable('t', deviceWith({ packets: 25_000, bytes: 1_600_000 }), first.snapshot, true, 3000);
  assert.match(second.text!, /1 tx\s*│\s*10.0 k\s*│\s*25.0 k\s*│\s*1.53 MiB/);
  assert.equal(statsTable('t', deviceWith({ packets: 25_000, bytes: 1_600_000 }), second.snapshot, true, 4000).text, null, 'nothing moved');
});

test('serve --stats-interval prints nothing while idle, and a labelled total at exit', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vit-stats-'));
  const sock = join(dir, 'v.sock');
  const child = spawn(process.execPath, [BIN, 'serve', '--net', 'sink', '-s', sock, '--stats-interval', '1', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  try {
    await waitForPath(`${sock}.ctl`, 20_000, 'serve control socket');
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(out, '', 'nothing printed while no front-end ran a queue');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
    assert.match(out, /v\.sock: totals at exit \(\d{4}-\d\d-\d\dT[^)]*\): no queue has run/);
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

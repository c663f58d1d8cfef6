/**
 * The per-queue statistics `serve` prints every --stats-interval (only when something moved)
 * and once at exit: counts in human units, and packets per second since the last print.
 */
import Table from 'cli-table3';
import type { NetDevice } from '../device/device.js';
import { RING_COUNTERS, type RingCounterName } from '../datapath/stats.js';

/** Packets per vring at one moment, to turn the next print's counts into rates. */
export interface StatsSnapshot {
  at: number;
  packets: Map<number, number>;
  /** Sum of every counter: unchanged means nothing moved. */
  activity: number;
}

/** 1234 -> "1234", 12345 -> "12.3 k", 4.56e6 -> "4.56 M". */
export function humanCount(n: number): string {
  if (n < 10_000) return String(Math.round(n));
  for (const [unit, scale] of [['G', 1e9], ['M', 1e6], ['k', 1e3]] as const) {
    if (n >= scale) {
      const v = n / scale;
      return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${unit}`;
    }
  }
  return String(n);
}

/** 1536 -> "1.50 KiB". */
export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

function cell(name: RingCounterName, value: number): string {
  return name === 'bytes' ? humanBytes(value) : humanCount(value);
}

/**
 * The table for `device` titled `title`, and the snapshot for the next call. `text` is null
 * when `quietIfIdle` and nothing ran or moved since `previous` (periodic prints stay quiet
 * while the device is idle).
 */
export function statsTable(title: string, device: NetDevice, previous: StatsSnapshot | null, quietIfIdle: boolean, now = Date.now()): { text: string | null; snapshot: StatsSnapshot } {
  const snapshot: StatsSnapshot = { at: now, packets: new Map(), activity: 0 };
  const table = new Table({ head: ['queue', 'pps', ...RING_COUNTERS], style: { head: [], border: [] } });
  for (const vring of device.vrings) {
    const counters = device.counters(vring.index);
    if (!counters) continue;
    snapshot.packets.set(vring.index, counters.packets);
    for (const name of RING_COUNTERS) snapshot.activity += counters[name];
    const before = previous?.packets.get(vring.index);
    const seconds = previous ? (now - previous.at) / 1000 : 0;
    const pps = before === undefined || seconds <= 0 ? '-' : humanCount((counters.packets - before) / seconds);
    table.push([`${vring.index} ${vring.index % 2 === 0 ? 'rx' : 'tx'}`, pps, ...RING_COUNTERS.map((name) => cell(name, counters[name]))]);
  }
  const idle = table.length === 0 || (previous !== null && previous.activity === snapshot.activity);
  if (quietIfIdle && idle) return { text: null, snapshot };
  const text = table.length === 0 ? `${title}: no queue has run` : `${title}\n${table.toString()}`;
  return { text, snapshot };
}

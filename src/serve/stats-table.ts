/** The per-queue statistics table `serve` prints every --stats-interval and at exit. */
import Table from 'cli-table3';
import type { NetDevice } from '../device/device.js';
import { RING_COUNTERS } from '../datapath/stats.js';

export function statsTable(label: string, device: NetDevice): string {
  const table = new Table({ head: ['queue', ...RING_COUNTERS], style: { head: [], border: [] } });
  for (const vring of device.vrings) {
    const counters = device.counters(vring.index);
    if (!counters) continue;
    table.push([`${vring.index} ${vring.index % 2 === 0 ? 'rx' : 'tx'}`, ...RING_COUNTERS.map((name) => String(counters[name]))]);
  }
  return table.length === 0 ? `${label}: no queue has run yet` : `${label}\n${table.toString()}`;
}

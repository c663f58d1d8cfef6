/** Human rendering of a DeviceState for `inspect`. */
import type { ChalkInstance } from 'chalk';
import { plain } from '../cli/color.js';
import Table from 'cli-table3';
import type { DeviceState } from './state.js';
import type { LatencySummary } from '../stats/latency.js';

const style = { head: [], border: [] };

export interface Rates {
  /** Per queue index: packets per second since the previous sample. */
  packetsPerSecond: Map<number, number>;
}

export function renderState(state: DeviceState, rates: Rates | null, showEntries: boolean, chalk: ChalkInstance = plain): string {
  const out: string[] = [];
  const status = state.connected ? chalk.green(`connected (${state.peer})`) : chalk.yellow('waiting for a front-end');
  out.push(`${chalk.bold(state.socket)}  ${status}  connections served: ${state.connections}  strategy: ${state.strategy}`);
  out.push(`features ${state.features.bits}: ${state.features.names.join(' ') || '-'}`);
  out.push(`protocol ${state.protocolFeatures.bits}: ${state.protocolFeatures.names.join(' ') || '-'}`);
  out.push(`IOMMU: ${state.iommu ? chalk.cyan('on (ACCESS_PLATFORM)') : 'off'}  status: 0x${state.status.toString(16)}${state.mtu === null ? '' : `  MTU: ${state.mtu}`}`);
  const t = state.threads;
  const idle = t.busyPollUs < 0 ? 'never sleep'
    : t.busyPollUs === 0 ? 'sleep'
    : state.iommu ? `poll ${t.busyPollUs} µs then sleep`
    : `poll up to ${t.busyPollUs} µs (as long as the guest's pauses show it pays) then sleep`;
  out.push(`workers: ${t.workers} on ${t.cpus.length > 0 ? `CPU ${t.cpus.join(',')}` : 'any CPU'}${t.sharesCpu ? ' (sharing CPUs with the control thread)' : ''}, idle: ${idle}` +
    `${state.iommu && t.yieldWhileParked ? ', yield while TX waits on a miss' : ''}, IOTLB requests read by the ${t.iotlbReader === 'worker' ? 'worker' : t.iotlbReader === 'thread' ? 'IOTLB reader thread' : 'control thread'}`);
  if (t.busyPollUs > 0 && state.idle.length > 0) {
    // Behind a vIOMMU the window stays at the budget (printed above): only the sleeps are news.
    out.push(state.iommu
      ? `idle sleeps so far: ${state.idle.map((w) => `worker ${w.worker} ${w.sleeps}`).join(', ')}`
      : `idle poll window now: ${state.idle.map((w) => `worker ${w.worker} ${w.windowUs.toFixed(0)} µs (${w.sleeps} sleeps)`).join(', ')}`);
  }
  if (state.dirtyLog.logging) {
    const d = state.dirtyLog;
    out.push(chalk.cyan(`dirty-page logging on (migration): ${d.logBytes}-byte log, ${d.pagesMarked} page marks`) +
      (d.outside > 0 ? chalk.red(`, ${d.outside} writes outside the log`) : ''));
  }
  if (state.memory.length > 0) {
    const mem = new Table({ head: ['guest address', 'size', 'user address', 'mmap offset'], style });
    for (const r of state.memory) mem.push([r.guestAddr, `${(r.size / 2 ** 20).toFixed(1)} MiB`, r.userAddr, r.mmapOffset]);
    out.push(mem.toString());
  }
  const queues = new Table({ head: ['queue', 'size', 'enabled', 'state', 'worker', 'last avail', 'avail', 'used', 'packets', 'pps', 'bytes', 'drops', 'held', 'kicks', 'irqs'], style });
  for (const q of state.queues) {
    const stateText = q.broken ? chalk.red(`broken: ${q.broken}`) : q.waitingForMapping ? chalk.yellow('waiting for mapping') : q.running ? chalk.green('running') : 'stopped';
    const c = q.counters;
    const pps = rates?.packetsPerSecond.get(q.index);
    queues.push([`${q.index} ${q.kind}`, q.size, q.enabled ? 'yes' : 'no', stateText, q.worker ?? '-', q.lastAvailIdx, q.availIdx ?? '-', q.usedIdx ?? '-',
      c?.packets ?? 0, pps === undefined ? '-' : Math.round(pps), c?.bytes ?? 0, c?.drops ?? 0, c?.held ?? 0, c?.kicks ?? 0, c?.interrupts ?? 0]);
  }
  out.push(queues.toString());
  for (const q of state.queues) {
    if (!q.iotlb) continue;
    const s = q.iotlb.stats;
    const rate = s.lookups > 0 ? ((100 * s.hits) / s.lookups).toFixed(2) + '%' : '-';
    out.push(`IOTLB of queue ${q.index} (${q.iotlb.strategy}): ${s.entries} entries, ${s.lookups} lookups, ${s.hits} hits, ${s.misses} misses, ` +
      `${s.evictions} evictions, ${q.iotlb.pendingMisses} pending misses, hit rate ${rate}`);
    if (q.roundTrips && q.roundTrips.miss.count > 0) out.push(`  miss round trip (parked -> UPDATE applied): ${latencyText(q.roundTrips.miss)}`);
    if (showEntries && q.iotlb.entries.length > 0) {
      const entries = new Table({ head: ['iova', 'end', 'size', 'perm', 'host (uaddr)'], style });
      for (const e of q.iotlb.entries) {
        entries.push([`0x${e.iova.toString(16)}`, `0x${(e.iova + e.size).toString(16)}`, e.size, ['--', 'RO', 'WO', 'RW'][e.perm] ?? e.perm, `0x${e.uaddr.toString(16)}`]);
      }
      out.push(entries.toString());
    }
  }
  const { updateAck, invalidateAck, ackedByWorker, ackedByReaderThread } = state.roundTrips;
  const acked = updateAck.count + invalidateAck.count;
  if (acked > 0) {
    out.push(`IOTLB acks (read -> ack sent): UPDATE ${latencyText(updateAck)}; INVALIDATE ${latencyText(invalidateAck)}`);
    const byControl = acked - ackedByWorker - ackedByReaderThread;
    out.push(`  of ${acked} read and acked: ${ackedByWorker} by the queue-pair worker itself, ${ackedByReaderThread} by the IOTLB reader thread, ${byControl} by the control thread`);
  }
  return out.join('\n');
}

function latencyText(s: LatencySummary): string {
  return s.count === 0 ? 'none' : `p50 ${s.p50Us} µs, p90 ${s.p90Us} µs, p99 ${s.p99Us} µs, max ${s.maxUs} µs (${s.count})`;
}

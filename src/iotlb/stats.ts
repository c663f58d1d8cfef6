import type { IotlbStats } from './strategy.js';

/** Records a cache's current size (and the peak) after a mutation. */
export function recordSize(stats: IotlbStats, entries: number): void {
  stats.entries = entries;
  if (entries > stats.peakEntries) stats.peakEntries = entries;
}

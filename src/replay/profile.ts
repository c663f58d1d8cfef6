/**
 * What kind of workload a trace is, computed from its op stream, so a reader of `bench`
 * can see why a strategy won: how many mappings were live at once (a list walk pays for
 * each), how often the mappings change per lookup (a structure that is cheap to look up
 * but dear to update loses when this is high), how wide the IOVAs are spread and how big
 * the pages are (coalescing only helps when neighbouring pages are mapped contiguously).
 */
import { OP_INVALIDATE, OP_LOOKUP, OP_UPDATE, REPLAY_KIND_LABELS, type OpStream, type ReplayKind } from './ops.js';

export interface WorkloadProfile {
  trace: string;
  /** Where the lookups came from (docs/trace-format.md, "Replaying a trace"). */
  replay: ReplayKind;
  replayLabel: string;
  lookups: number;
  /** Caches replayed (one per virtqueue; one per connection with revealed misses). */
  caches: number;
  /** UPDATE and INVALIDATE messages (each goes to every cache of its connection). */
  updates: number;
  invalidates: number;
  /** UPDATEs before the first lookup: the set-up a static trace's timed replays skip (Replayer). */
  setupUpdates: number;
  updatesPer1kLookups: number;
  invalidatesPer1kLookups: number;
  /** Most mappings the front-end had granted at once on one connection (the exact reference's peak). */
  entriesMapped: number;
  /** Lowest IOVA and end of the highest range touched by a lookup or an UPDATE (null without either). */
  iovaLow: number | null;
  iovaHigh: number | null;
  /** iovaHigh - iovaLow, bytes. */
  iovaSpan: number;
  /** Distinct 4 KiB pages the lookups touched. */
  pagesLookedUp: number;
  /** UPDATE sizes: how many UPDATEs mapped each size, smallest first. */
  pageSizes: { bytes: number; count: number }[];
  /** Back-end MISS messages in the trace. */
  recordedMisses: number;
  /**
   * Revealed misses only: MISSes for a mapping the front-end had granted and not invalidated
   * at that moment — where a strategy can hit although the recorded back-end missed. 0 otherwise.
   */
  revealedAlreadyMapped: number;
}

const PAGE = 4096;

export function workloadProfile(trace: string, ops: OpStream): WorkloadProfile {
  let low = Infinity;
  let high = -Infinity;
  const pages = new Set<number>();
  const sizes = new Map<number, number>();
  let setup = 0;
  let looked = false;
  for (let i = 0; i < ops.count; i++) {
    const kind = ops.kind[i];
    // An UPDATE or INVALIDATE is one row per cache of its connection, all with the same record.
    if (kind !== OP_LOOKUP && i > 0 && ops.kind[i - 1] === kind && ops.record[i - 1] === ops.record[i]) continue;
    if (kind === OP_INVALIDATE) continue; // may name the whole address space: not a span touched
    const start = ops.iova[i];
    const end = start + Math.max(ops.size[i], 1);
    if (start < low) low = start;
    if (end > high) high = end;
    if (kind === OP_UPDATE && !looked) setup++;
    if (kind === OP_LOOKUP) {
      looked = true;
      // Capped: a lookup returns at most one mapping, and a corrupt length must not loop for ever.
      const last = Math.min(Math.floor((end - 1) / PAGE), Math.floor(start / PAGE) + 1024);
      for (let p = Math.floor(start / PAGE); p <= last; p++) pages.add(p);
    } else if (kind === OP_UPDATE) {
      sizes.set(ops.size[i], (sizes.get(ops.size[i]) ?? 0) + 1);
    }
  }
  const per1k = (n: number): number => (ops.lookups > 0 ? (n * 1000) / ops.lookups : NaN);
  const touched = low <= high;
  return {
    trace,
    replay: ops.replay,
    replayLabel: REPLAY_KIND_LABELS[ops.replay],
    lookups: ops.lookups,
    caches: ops.slots.length,
    updates: ops.updates,
    setupUpdates: setup,
    invalidates: ops.invalidates,
    updatesPer1kLookups: per1k(ops.updates),
    invalidatesPer1kLookups: per1k(ops.invalidates),
    entriesMapped: ops.referencePeak,
    iovaLow: touched ? low : null,
    iovaHigh: touched ? high : null,
    iovaSpan: touched ? high - low : 0,
    pagesLookedUp: pages.size,
    pageSizes: [...sizes].sort((a, b) => a[0] - b[0]).map(([bytes, count]) => ({ bytes, count })),
    recordedMisses: ops.recordedMisses,
    revealedAlreadyMapped: ops.replay === 'revealed-misses' ? ops.recordedDisagreements : 0,
  };
}

/** 4096 -> "4 KiB", 2097152 -> "2 MiB", 1536 -> "1536 B". */
export function formatSize(bytes: number): string {
  for (const [unit, scale] of [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (bytes >= scale) return Number.isInteger(bytes / scale) ? `${bytes / scale} ${unit}` : `${(bytes / scale).toFixed(1)} ${unit}`;
  }
  return `${bytes} B`;
}

const rate = (x: number): string => (!Number.isFinite(x) ? '-' : x === 0 || x >= 10 ? x.toFixed(0) : x.toFixed(1));

/** The lines `bench` prints above a trace's table. */
export function renderProfile(p: WorkloadProfile): string[] {
  const span = p.iovaLow === null || p.iovaHigh === null
    ? 'no IOVAs touched'
    : `IOVAs 0x${p.iovaLow.toString(16)}–0x${p.iovaHigh.toString(16)} (${formatSize(p.iovaSpan)} span, ${p.pagesLookedUp} pages looked up)`;
  const sizes = p.pageSizes.length === 0 ? 'no UPDATEs'
    : `UPDATE sizes ${p.pageSizes.slice(0, 4).map((s) => `${formatSize(s.bytes)} ×${s.count}`).join(', ')}${p.pageSizes.length > 4 ? ', …' : ''}`;
  const lines = [
    `replay: ${p.replayLabel} (${p.lookups} lookups, ${p.caches} cache${p.caches === 1 ? '' : 's'})`,
    `workload: ≤ ${p.entriesMapped} mappings live; per 1000 lookups ${rate(p.updatesPer1kLookups)} UPDATE`
    + `${p.setupUpdates > 0 ? ` (${p.setupUpdates} of ${p.updates} before the first lookup)` : ''}, `
    + `${rate(p.invalidatesPer1kLookups)} INVALIDATE; ${span}; ${sizes}`,
  ];
  if (p.revealedAlreadyMapped > 0) {
    lines.push(`${p.revealedAlreadyMapped} of ${p.recordedMisses} MISSes asked for a mapping still granted: a strategy may hit there`);
  }
  return lines;
}

/**
 * Seeded generators of synthetic traces: vhost-user IOTLB_MSG traffic (real encoded bytes)
 * plus the datapath translations a back-end would perform, each tagged with the result an
 * exact, unbounded reference IOTLB gives at that moment. The scenarios are documented in
 * docs/trace-format.md ("Synthetic scenarios"); the same options and seed always give the
 * same bytes.
 */
import { Prng } from '../iotlb/prng.js';
import { TraceFlags } from './format.js';
import { TraceWriter } from './writer.js';
import { Emitter } from './synth/emitter.js';
import { GiB, MiB, PAGE } from './synth/layout.js';
import type { ScenarioName, SynthOptions, SynthSummary } from './synth/options.js';
import { runDynamic } from './synth/dynamic.js';
import { runStatic } from './synth/static.js';

export type { ScenarioName, SynthOptions, SynthSummary } from './synth/options.js';

export interface ScenarioInfo {
  name: ScenarioName;
  summary: string;
  defaults: { packets: number; queues: number; guestMib: number };
}

export const SCENARIOS: readonly ScenarioInfo[] = [
  { name: 'static-1g', summary: 'DPDK guest, 1 GiB IOMMU pages: whole hugepage area mapped RW once at start, then ring and mbuf lookups (all hits)',
    defaults: { packets: 10_000, queues: 1, guestMib: 1024 } },
  { name: 'static-2m', summary: 'DPDK guest, 2 MiB IOMMU pages: whole hugepage area mapped RW once at start, then ring and mbuf lookups (all hits)',
    defaults: { packets: 10_000, queues: 1, guestMib: 1024 } },
  { name: 'static-4k', summary: 'DPDK guest, 4 KiB IOMMU pages: whole area mapped RW page by page at start (many entries), then lookups (all hits)',
    defaults: { packets: 10_000, queues: 1, guestMib: 64 } },
  { name: 'dynamic', summary: 'Linux virtio-net with a strict IOMMU: per-packet map (miss, MISS, UPDATE, hit) and unmap (INVALIDATE), top-down IOVA allocator with LIFO caches',
    defaults: { packets: 10_000, queues: 1, guestMib: 1024 } },
  { name: 'multiqueue', summary: 'like static-2m with several queue pairs, bursts interleaved across queues',
    defaults: { packets: 10_000, queues: 4, guestMib: 1024 } },
];

export const SCENARIO_NAMES = SCENARIOS.map((s) => s.name);

export function scenarioInfo(name: string): ScenarioInfo | undefined {
  return SCENARIOS.find((s) => s.name === name);
}

/** IOMMU page size of a scenario: what translations are split at and static areas are mapped in. */
function unitOf(scenario: ScenarioName): number {
  return scenario === 'static-1g' ? GiB : scenario === 'static-4k' || scenario === 'dynamic' ? PAGE : 2 * MiB;
}

/**
 * Most IOTLB entries a static scenario maps at start (~120 bytes of trace each: 4 Mi entries
 * is a ~500 MB file and a minute of work); beyond it the run is refused, not left to run.
 */
export const MAX_STATIC_ENTRIES = 1 << 22;

function resolve(options: SynthOptions): Required<SynthOptions> {
  const info = scenarioInfo(options.scenario);
  if (!info) throw new RangeError(`unknown scenario "${options.scenario}" (known: ${SCENARIO_NAMES.join(', ')})`);
  const o: Required<SynthOptions> = {
    scenario: info.name,
    seed: options.seed ?? 1,
    packets: options.packets ?? info.defaults.packets,
    queues: options.queues ?? info.defaults.queues,
    guestMib: options.guestMib ?? info.defaults.guestMib,
    ringSize: options.ringSize ?? 256,
  };
  if (!Number.isInteger(o.packets) || o.packets < 0) throw new RangeError(`packets must be a non-negative integer, got ${o.packets}`);
  if (!Number.isInteger(o.queues) || o.queues < 1 || o.queues > 256) throw new RangeError(`queues must be 1..256, got ${o.queues}`);
  if (!Number.isInteger(o.guestMib) || o.guestMib < 1 || o.guestMib > 1024 * 1024) throw new RangeError(`guest-mib must be 1..1048576, got ${o.guestMib}`);
  if (![64, 128, 256, 512, 1024].includes(o.ringSize)) throw new RangeError(`ring size must be 64..1024 (power of two), got ${o.ringSize}`);
  if (!Number.isInteger(o.seed)) throw new RangeError(`seed must be an integer, got ${o.seed}`);
  if (o.scenario !== 'dynamic') {
    const entries = Math.ceil((o.guestMib * MiB) / unitOf(o.scenario));
    if (entries > MAX_STATIC_ENTRIES) {
      throw new RangeError(`guest-mib ${o.guestMib} maps ${entries} IOMMU pages in ${o.scenario}, over ${MAX_STATIC_ENTRIES}: `
        + 'use fewer MiB, or a scenario with larger pages (static-2m, static-1g)');
    }
  }
  return o;
}

/** Generates a scenario into `writer` (which the caller opened and closes). */
export function synthesize(options: SynthOptions, writer: TraceWriter): SynthSummary {
  return generate(resolve(options), writer);
}

function generate(o: Required<SynthOptions>, writer: TraceWriter, onProgress: ((messages: number) => void) | null = null): SynthSummary {
  const rng = new Prng(o.seed);
  const unit = unitOf(o.scenario);
  const e = new Emitter(writer, rng, unit);
  e.onProgress = onProgress;
  if (o.scenario === 'dynamic') runDynamic(e, rng, o);
  else runStatic(e, rng, unit, o);
  e.summary.durationNs = e.t;
  return { scenario: o.scenario, seed: o.seed, packets: o.packets, queues: o.queues, guestMib: o.guestMib, ...e.summary };
}

/** The writer options every synthetic trace uses: flagged synthetic, start time 0 (reproducible). */
export const SYNTH_WRITER_OPTIONS = { flags: TraceFlags.Synthetic, startTimeNs: 0n } as const;

/** A scenario as trace bytes in memory. */
export function synthTrace(options: SynthOptions): { bytes: Uint8Array; summary: SynthSummary } {
  const writer = TraceWriter.inMemory(SYNTH_WRITER_OPTIONS);
  const summary = synthesize(options, writer);
  writer.close();
  return { bytes: writer.bytes(), summary };
}

/** A scenario written to `path`; `onProgress` hears the messages written so far, now and then. */
export function writeSynthTrace(path: string, options: SynthOptions, onProgress: ((messages: number) => void) | null = null): SynthSummary {
  const o = resolve(options); // bad options throw before the file is created
  const writer = TraceWriter.open(path, SYNTH_WRITER_OPTIONS);
  try {
    return generate(o, writer, onProgress);
  } finally {
    writer.close();
  }
}

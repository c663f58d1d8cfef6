/** What a synthetic trace is asked for, and what generating it reports. */

export type ScenarioName = 'static-1g' | 'static-2m' | 'static-4k' | 'dynamic' | 'multiqueue';

export interface SynthOptions {
  scenario: ScenarioName;
  /** PRNG seed (default 1). */
  seed?: number;
  /** Packets the guest receives (static: each is forwarded back, testpmd io-fwd style; dynamic: RX or TX). */
  packets?: number;
  /** Queue pairs (RX queue 2q, TX queue 2q+1). */
  queues?: number;
  /** Static: size of the DPDK hugepage area; dynamic: guest RAM size. */
  guestMib?: number;
  /** Descriptors per ring (default 256). */
  ringSize?: number;
}

export interface SynthSummary {
  scenario: ScenarioName;
  seed: number;
  packets: number;
  queues: number;
  guestMib: number;
  messages: number;
  translations: number;
  hits: number;
  misses: number;
  updates: number;
  invalidates: number;
  iotlbMissMessages: number;
  durationNs: number;
}

/** Options with every default filled in (the generators' input). */
export type ResolvedOptions = Required<Omit<SynthOptions, 'seed'>>;

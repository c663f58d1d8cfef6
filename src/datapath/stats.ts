/**
 * Per-ring counters in shared memory: the worker bumps plain Float64Array slots (as cheap
 * as a local counter) and the main thread reads them whenever `inspect` or the stats
 * printer asks, without a message to the worker.
 */

import { NetCounter, NET_COUNTERS } from '../net/virtio-net.js';
import { LatencyHistogram, LATENCY_SLOTS } from '../stats/latency.js';

/** The virtio-net queue's own counters plus the IOTLB misses the worker actually sent. */
export const RingCounter = {
  ...NetCounter,
  missesSent: 8,
} as const;
export type RingCounterName = keyof typeof RingCounter;
export const RING_COUNTERS = Object.keys(RingCounter) as RingCounterName[];

const COUNTERS_PER_RING = NET_COUNTERS;
/** Rings per queue pair: RX (even index) and TX (odd index). */
export const RINGS_PER_PAIR = 2;

/** Per ring: the counters, then the miss round-trip histogram. */
const DOUBLES_PER_RING = COUNTERS_PER_RING + LATENCY_SLOTS;
/** After the rings: the worker's IOTLB acks (UPDATE, then INVALIDATE) on the socket it was lent. */
const ACKS_AT = RINGS_PER_PAIR * DOUBLES_PER_RING;

export function createStatsBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer((ACKS_AT + 2 * LATENCY_SLOTS) * 8);
}

/**
 * IOTLB messages the worker read and acknowledged itself (iotlb-fast-path.ts): message
 * seen -> ack sent, for UPDATE (`invalidate` false) or INVALIDATE.
 */
export function workerAckLatency(buffer: SharedArrayBuffer, invalidate: boolean): LatencyHistogram {
  return new LatencyHistogram(new Float64Array(buffer, (ACKS_AT + (invalidate ? LATENCY_SLOTS : 0)) * 8, LATENCY_SLOTS));
}

/** The counters of one ring (ringInPair 0 = RX, 1 = TX) as a typed array indexed by RingCounter. */
export function ringCounters(buffer: SharedArrayBuffer, ringInPair: number): Float64Array {
  return new Float64Array(buffer, ringInPair * DOUBLES_PER_RING * 8, COUNTERS_PER_RING);
}

/** The ring's miss round trips: miss sent -> the UPDATE covering it applied by the worker. */
export function missLatency(buffer: SharedArrayBuffer, ringInPair: number): LatencyHistogram {
  return new LatencyHistogram(new Float64Array(buffer, (ringInPair * DOUBLES_PER_RING + COUNTERS_PER_RING) * 8, LATENCY_SLOTS));
}

export function readCounters(buffer: SharedArrayBuffer, ringInPair: number): Record<RingCounterName, number> {
  const counters = ringCounters(buffer, ringInPair);
  const out = {} as Record<RingCounterName, number>;
  for (const name of RING_COUNTERS) out[name] = counters[RingCounter[name]];
  return out;
}

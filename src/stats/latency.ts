/**
 * A latency histogram with logarithmic buckets, kept in a Float64Array so it can live in
 * shared memory: a worker records into it with plain stores (no allocation, no lock) and the
 * main thread reads percentiles whenever `inspect` asks. The same class summarises round
 * trips found in a trace file (`trace decode --stats`), so live and recorded figures agree.
 *
 * Bucket i holds samples in [2^(i/4), 2^((i+1)/4)) microseconds (bucket 0 also holds
 * everything below 1 µs): four buckets per doubling, so a percentile is exact to ±9%, which
 * is finer than the run-to-run spread of any round trip on these machines. 100 buckets reach
 * 2^25 µs (33 s); slower samples land in the last.
 */

export const LATENCY_BUCKETS = 100;
const PER_DOUBLING = 4;
/** Slots: the buckets, then count, sum (µs) and max (µs). */
const COUNT = LATENCY_BUCKETS;
const SUM = LATENCY_BUCKETS + 1;
const MAX = LATENCY_BUCKETS + 2;
export const LATENCY_SLOTS = LATENCY_BUCKETS + 3;

export interface LatencySummary {
  count: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
}

/** Lower bound of bucket i, in µs. */
export function bucketLowUs(i: number): number {
  return i === 0 ? 0 : 2 ** (i / PER_DOUBLING);
}

export class LatencyHistogram {
  readonly slots: Float64Array;

  /** Over `slots` (e.g. a view into a SharedArrayBuffer), or fresh memory. */
  constructor(slots?: Float64Array) {
    if (slots !== undefined && slots.length < LATENCY_SLOTS) throw new RangeError(`a latency histogram needs ${LATENCY_SLOTS} slots`);
    this.slots = slots ?? new Float64Array(LATENCY_SLOTS);
  }

  record(us: number): void {
    if (!(us >= 0)) return; // NaN or negative (clock skew between recorders): not a sample
    const s = this.slots;
    let i = us < 1 ? 0 : Math.floor(Math.log2(us) * PER_DOUBLING);
    if (i >= LATENCY_BUCKETS) i = LATENCY_BUCKETS - 1;
    s[i]++;
    s[COUNT]++;
    s[SUM] += us;
    if (us > s[MAX]) s[MAX] = us;
  }

  get count(): number {
    return this.slots[COUNT];
  }

  /** The upper bound of the bucket holding the q-quantile (0 < q <= 1), capped at the max seen. */
  quantileUs(q: number): number {
    const s = this.slots;
    const n = s[COUNT];
    if (n === 0) return 0;
    const rank = Math.ceil(q * n);
    let seen = 0;
    for (let i = 0; i < LATENCY_BUCKETS; i++) {
      seen += s[i];
      if (seen >= rank) return Math.min(bucketLowUs(i + 1), s[MAX]);
    }
    return s[MAX];
  }

  summary(): LatencySummary {
    const n = this.count;
    const round = (v: number): number => Math.round(v * 10) / 10;
    return {
      count: n,
      meanUs: n === 0 ? 0 : round(this.slots[SUM] / n),
      p50Us: round(this.quantileUs(0.5)),
      p90Us: round(this.quantileUs(0.9)),
      p99Us: round(this.quantileUs(0.99)),
      maxUs: round(this.slots[MAX]),
    };
  }

  /** Adds another histogram's samples into this one (per-queue figures into a device total). */
  add(other: LatencyHistogram): void {
    const s = this.slots;
    const o = other.slots;
    for (let i = 0; i < LATENCY_BUCKETS; i++) s[i] += o[i];
    s[COUNT] += o[COUNT];
    s[SUM] += o[SUM];
    if (o[MAX] > s[MAX]) s[MAX] = o[MAX];
  }

  /** Non-empty buckets as [lowUs, highUs, count], for a printed histogram. */
  buckets(): Array<[number, number, number]> {
    const out: Array<[number, number, number]> = [];
    for (let i = 0; i < LATENCY_BUCKETS; i++) if (this.slots[i] > 0) out.push([bucketLowUs(i), bucketLowUs(i + 1), this.slots[i]]);
    return out;
  }
}

/**
 * A small seeded PRNG (mulberry32) so strategies that evict at random replay identically.
 * Not for anything security related.
 */
export class Prng {
  private state: number;

  constructor(seed = 0x5eed) {
    this.state = seed >>> 0;
  }

  /** A uniformly distributed unsigned 32-bit integer. */
  nextU32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n) for 0 < n <= 2^32. */
  below(n: number): number {
    return this.nextU32() % n;
  }
}

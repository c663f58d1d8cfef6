/**
 * The one small interface every IOTLB cache strategy implements.
 *
 * Addresses are JS numbers: the control path rejects any IOVA, size or user
 * address at or above 2^53 before it reaches a cache, so the hot path never
 * pays for BigInt. (Linux IOVAs live below 2^48, QEMU user addresses below 2^47.)
 */

/** Access / permission bits, numerically identical to vhost-user's VHOST_ACCESS_* perm values. */
export const Access = {
  None: 0,
  Read: 1,
  Write: 2,
  ReadWrite: 3,
} as const;
export type AccessBits = number;

export interface IotlbEntry {
  iova: number;
  size: number;
  /** Front-end (QEMU) virtual address the IOVA maps to. */
  uaddr: number;
  /** Access bits granted (Access.Read | Access.Write). */
  perm: AccessBits;
}

export interface IotlbStats {
  lookups: number;
  hits: number;
  misses: number;
  /** Lookups refused because the entry lacks the requested permission. */
  permissionFaults: number;
  evictions: number;
  inserts: number;
  invalidations: number;
  /** Current number of entries. */
  entries: number;
  /** Highest number of entries seen. */
  peakEntries: number;
}

/** Written by lookup() (uaddr) and span() on a hit; one object reused per caller so the hot path allocates nothing. */
export interface LookupOut {
  uaddr: number;
  /** Written by span() only: lookup() leaves them alone (see IotlbStrategy.span). */
  spanStart: number;
  spanEnd: number;
}

/** A fresh LookupOut (one per caller, reused). */
export function lookupOut(): LookupOut {
  return { uaddr: 0, spanStart: 0, spanEnd: 0 };
}

/** lookup() result codes (a positive result is a mapped length). */
export const LOOKUP_MISS = 0;
export const LOOKUP_DENIED = -1;

export interface IotlbStrategy {
  readonly name: string;
  /** Add a mapping. Overlapping older entries are replaced where they overlap. */
  insert(entry: IotlbEntry): void;
  /** Remove every entry overlapping [iova, iova+size); returns how many were removed or trimmed. */
  invalidate(iova: number, size: number): number;
  /**
   * Translate `iova` for `access`. On a hit writes the user address of `iova` into
   * out.uaddr and returns the number of bytes (1..len) contiguous in BOTH IOVA and
   * user-address space from iova. Returns LOOKUP_MISS if iova is unmapped and
   * LOOKUP_DENIED if it is mapped without the requested access.
   */
  lookup(iova: number, len: number, access: AccessBits, out: LookupOut): number;
  /**
   * Right after a hit of lookup(), with no change in between: writes into out.spanStart and
   * out.spanEnd an IOVA range around the looked-up address that the hit's entry maps
   * linearly (uaddr moves with the IOVA) with the same permission. A caller may answer later
   * lookups inside it itself, counting them as hits, for as long as `version` is unchanged.
   * Strategies whose hits have side effects (LRU recency, the dpdk model's list walk) write
   * an empty span (spanEnd <= spanStart). A separate call rather than part of every lookup:
   * the data path asks only when its own span runs out, and two more stores per lookup cost
   * the `coalescing` replay ~10% on a one-entry table.
   */
  span(out: LookupOut): void;
  /** Bumped by every change to the entries (insert, invalidate, eviction, clear): a span is valid while this is unchanged. */
  readonly version: number;
  /** A snapshot of the entries, sorted by IOVA (for inspect and tests; not for the hot path). */
  entries(): IotlbEntry[];
  clear(): void;
  readonly stats: IotlbStats;
}

export interface StrategyOptions {
  /** Upper bound on entries before eviction (strategies that evict). */
  capacity?: number;
  /** Seed for strategies that evict at random, so replays are repeatable. */
  seed?: number;
}

/** What one strategy file exports; the registry lists these. */
export interface StrategyDefinition {
  name: string;
  summary: string;
  create(options?: StrategyOptions): IotlbStrategy;
}

export function emptyStats(): IotlbStats {
  return {
    lookups: 0, hits: 0, misses: 0, permissionFaults: 0, evictions: 0,
    inserts: 0, invalidations: 0, entries: 0, peakEntries: 0,
  };
}

/**
 * What a queue-pair worker does about IOTLB misses: a ring whose burst stopped at a miss
 * sends it (once: the per-virtqueue pending-miss list) and is parked until an UPDATE covers
 * the address it stopped at, the other ring going on meanwhile (DPDK 17.11's non-blocking
 * design). By default every distinct miss behind it in the ring goes out at once too
 * (`--no-iotlb-batch-misses`: only the first; QEMU then needs one main-loop wake-up per miss),
 * and optionally the pages around it are asked for (`--iotlb-prefetch`).
 */
import { PAGE_SIZE } from '../iotlb/address.js';
import { Access, LOOKUP_MISS, lookupOut } from '../iotlb/strategy.js';
import { WALK_MISS } from '../virtqueue/chain.js';
import { ScatterList } from '../virtqueue/scatter.js';
import type { MissReporter } from './miss-reporter.js';
import type { Ring } from './ring.js';
import { RingCounter } from './stats.js';

/** How long a ring waits for the answer to a miss before asking again. */
export const MISS_RETRY_MS = 100;
/** Most extra misses one prefetch or batch sends, so a hostile ring cannot make us flood. */
const MAX_EXTRA_MISSES = 64;

export interface MissPolicyOptions {
  /** Bytes around a fresh miss to ask for as well (a power of two above a page), or 0. */
  prefetch: number;
  /** Walk the chains behind a fresh miss and send their misses too. */
  batchMisses: boolean;
}

export class MissPolicy {
  private readonly probeSg = new ScatterList(1024);
  private readonly probeOut = lookupOut();
  /** probeAhead's ring and the fresh misses it sent so far (read by sinkMiss). */
  private probeRing: Ring | null = null;
  private probeReported = 0;

  constructor(private readonly reporter: MissReporter, private readonly options: MissPolicyOptions) {}

  /** The ring's burst stopped at a miss: send it (and a batch or prefetch) and park the ring. */
  stopped(ring: Ring): void {
    const q = ring.queue;
    const fresh = this.report(ring, q.missAddr, q.missAccess);
    ring.missStalled = true;
    ring.stalledAt = performance.now();
    ring.stalledIova = q.missAddr;
    q.clearMiss();
    // A head miss already pending was sent with the batch behind it: walking the chains
    // again would only look up misses already sent (one walk per UPDATE of the batch).
    if (fresh && this.options.batchMisses) this.probeAhead(ring);
  }

  /** The ring's own memory missed (at start, or after an INVALIDATE of it): ask for it; the ring waits for the mapping. */
  ringMissed(ring: Ring): void {
    const q = ring.queue;
    this.report(ring, q.missAddr, q.missAccess);
    q.clearMiss();
  }

  /**
   * False while the ring waits for the answer to a miss; after MISS_RETRY_MS re-arms the
   * miss it stopped at (only that one: the rest of a batch may just be queued at a slow
   * front-end, and each is re-armed the same way if the ring stops at it).
   */
  answered(ring: Ring): boolean {
    if (!ring.missStalled) return true;
    if (performance.now() - ring.stalledAt < MISS_RETRY_MS) return false;
    ring.missStalled = false;
    ring.pending!.clearCovered(ring.stalledIova, 1, Access.ReadWrite);
    return true;
  }

  /** An UPDATE reached the ring's cache: misses it covers are answered, a parked ring it covers resumes. */
  mapped(ring: Ring, iova: number, size: number, perm: number): void {
    ring.pending!.clearCovered(iova, size, perm);
    if (ring.missStalled && ring.stalledIova >= iova && ring.stalledIova - iova < size) {
      ring.missStalled = false;
      ring.missLatency.record((performance.now() - ring.stalledAt) * 1000);
    }
  }

  /** An INVALIDATE reached the ring's cache: a miss for this range sent earlier is stale, the next one is sent afresh. */
  unmapped(ring: Ring, iova: number, size: number): void {
    ring.pending!.clearCovered(iova, size, Access.ReadWrite);
  }

  /** Sends the miss unless it is pending already; true when it was not (a fresh miss). */
  private report(ring: Ring, iova: number, access: number): boolean {
    const pending = ring.pending;
    if (pending === null) return false;
    const fresh = pending.add(iova, access);
    if (fresh && this.reporter.miss(ring.index, iova, access)) ring.counters[RingCounter.missesSent]++;
    const prefetch = this.options.prefetch;
    // Around a fresh miss only: a pending one had its range asked for when it was sent.
    if (fresh && prefetch > PAGE_SIZE) {
      const start = iova - (iova % prefetch);
      let sent = 0;
      for (let page = start; page < start + prefetch && sent < MAX_EXTRA_MISSES; page += PAGE_SIZE) {
        if (page === iova - (iova % PAGE_SIZE)) continue;
        if (ring.cache!.lookup(page, 1, access, this.probeOut) !== LOOKUP_MISS) continue;
        // Speculative: not recorded as pending. QEMU sends nothing for a page the guest has
        // not mapped, and a pending entry would then swallow the real miss when it comes.
        if (!pending.has(page, access) && this.reporter.miss(ring.index, page, access)) {
          ring.counters[RingCounter.missesSent]++;
          sent++;
        }
      }
    }
    return fresh;
  }

  /**
   * Batched misses: walk the chain that missed and the chains behind it, and report every
   * miss on the way: each page a device-readable buffer misses (ChainWalker.missSink), and
   * the first miss of each device-writable one.
   */
  private probeAhead(ring: Ring): void {
    const q = ring.queue;
    const avail = q.knownAvailable();
    this.probeRing = ring;
    this.probeReported = 0;
    q.missSink = this.sinkMiss;
    try {
      for (let ahead = 0; ahead < avail && this.probeReported < MAX_EXTRA_MISSES; ahead++) {
        this.probeSg.reset();
        if (q.walkChain(ahead, this.probeSg) === WALK_MISS) {
          // (A walk the sink stopped at the cap ends here too: nothing more is sent.)
          if (this.probeReported < MAX_EXTRA_MISSES && this.report(ring, q.missAddr, q.missAccess)) this.probeReported++;
          q.clearMiss();
        }
        if (q.broken) return;
      }
    } finally {
      q.missSink = null;
      this.probeRing = null;
    }
  }

  /** ChainWalker.missSink during probeAhead: reports the miss and lets the walk go on, up to MAX_EXTRA_MISSES. */
  private readonly sinkMiss = (addr: number, access: number): boolean => {
    if (this.probeReported >= MAX_EXTRA_MISSES) return false;
    if (this.report(this.probeRing!, addr, access)) this.probeReported++;
    return true;
  };
}

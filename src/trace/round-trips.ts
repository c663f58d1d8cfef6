/**
 * IOTLB round trips measured from the time stamps of a trace (`trace decode --stats`).
 * Fed one message at a time, in record order; keeps per connection only what is still
 * waiting for an answer (bounded), and one LatencyHistogram per kind — never the samples.
 *
 * * **miss**: a back-end-channel IOTLB MISS (iova X, perm P) → the first later frontend-channel
 *   IOTLB UPDATE whose [iova, iova + size) covers X and whose perm has every bit of P. One
 *   UPDATE answers every outstanding miss it covers (each is a sample). A miss still waiting
 *   at the end of the trace is *unanswered*, not a sample. "Later" is by time stamp, not by
 *   position: `serve --trace` writes its workers' MISS records when the main thread drains
 *   them (every 20 ms), often after the UPDATE that answered them, with the worker's time.
 *   So each connection keeps its last RECENT_UPDATES UPDATEs (frontend-channel messages are
 *   written in time order) and a MISS first looks there for the earliest covering UPDATE
 *   stamped after it; only if there is none does it wait for the UPDATEs still to come.
 * * **updateAck**, **invalidateAck**: a frontend-channel IOTLB UPDATE / INVALIDATE with
 *   NEED_REPLY → its reply. The frontend channel is strictly request/reply in order, so a reply
 *   answers the oldest request still waiting for one; requests waiting ahead of it that have
 *   another request number got no reply (a NEED_REPLY without REPLY_ACK negotiated, say) and
 *   are dropped — counted as unanswered when they were IOTLB requests.
 * * **frontendTurn**: the front-end's own time per answer, where the back-end is not the one
 *   waited for: from the back-end's last frontend-channel reply before an UPDATE to that UPDATE,
 *   for each UPDATE that answers a miss stamped before that reply (the miss was already waiting
 *   when the front-end had its channel back). One sample per UPDATE.
 *
 * A request waits for a reply when it has NEED_REPLY, or when the protocol always answers it
 * (GET_* and friends; IOTLB_MSG is answered only with NEED_REPLY, as QEMU, DPDK and serve do).
 */
import { FrontendRequest, IotlbType, NEED_REPLY_FLAG, REPLY_FLAG, requestInfo } from '../protocol/index.js';
import { LatencyHistogram, type LatencySummary } from '../stats/latency.js';
import type { Decoded } from './describe.js';
import type { MessageRecord } from './records.js';

/** Waiting misses / requests kept per connection; beyond that the oldest is given up (unanswered). */
export const MAX_OUTSTANDING = 4096;
/** UPDATEs kept per connection for MISS records written after their answer (see above). */
export const RECENT_UPDATES = 4096;
/** How far before a MISS a covering UPDATE may be stamped to count as `coveredBefore`. */
export const COVERED_BEFORE_NS = 1_000_000;


/** What a request waiting for a reply was. */
const enum Kind { Other = 0, Update = 1, Invalidate = 2 }

/** Growable parallel arrays; one per connection for misses, one (used as a FIFO ring) for requests. */
class Connection {
  // Outstanding back-end MISSes, oldest first: iova as two u32 halves, perm, time (ns).
  missHi = new Uint32Array(8);
  missLo = new Uint32Array(8);
  missPerm = new Uint8Array(8);
  /** 1: a covering UPDATE was stamped shortly before the miss (see coveredBefore). */
  missEarly = new Uint8Array(8);
  missTime = new Float64Array(8);
  misses = 0;
  // Main-channel requests waiting for a reply: a ring of request number, kind, time (ns).
  pendRequest = new Uint32Array(8);
  pendKind = new Uint8Array(8);
  pendTime = new Float64Array(8);
  pendHead = 0;
  pending = 0;
  // The last RECENT_UPDATES UPDATEs, a ring in time order: start and end (halves), perm, time.
  updStartHi = new Uint32Array(8);
  updStartLo = new Uint32Array(8);
  updEndHi = new Float64Array(8); // up to 2^32 when the range ends at 2^64
  updEndLo = new Uint32Array(8);
  updPerm = new Uint8Array(8);
  updTime = new Float64Array(8);
  /** The back-end's last reply before each UPDATE (frontendTurn), and whether the UPDATE was sampled. */
  updPrevReply = new Float64Array(8);
  updSampled = new Uint8Array(8);
  updHead = 0;
  updates = 0;
  /** Time of the back-end's last frontend-channel reply (-Infinity before the first). */
  lastReply = -Infinity;

  /** Keeps an UPDATE; returns its slot in the ring. */
  pushUpdate(sh: number, sl: number, eh: number, el: number, perm: number, timeNs: number): number {
    if (this.updates === this.updTime.length && this.updates < RECENT_UPDATES) {
      const n = this.updTime.length * 2;
      this.updStartHi = unroll(this.updStartHi, new Uint32Array(n), this.updHead);
      this.updStartLo = unroll(this.updStartLo, new Uint32Array(n), this.updHead);
      this.updEndHi = unroll(this.updEndHi, new Float64Array(n), this.updHead);
      this.updEndLo = unroll(this.updEndLo, new Uint32Array(n), this.updHead);
      this.updPerm = unroll(this.updPerm, new Uint8Array(n), this.updHead);
      this.updTime = unroll(this.updTime, new Float64Array(n), this.updHead);
      this.updPrevReply = unroll(this.updPrevReply, new Float64Array(n), this.updHead);
      this.updSampled = unroll(this.updSampled, new Uint8Array(n), this.updHead);
      this.updHead = 0;
    }
    const cap = this.updTime.length;
    let at: number;
    if (this.updates === cap) {
      at = this.updHead; // full: overwrite the oldest
      this.updHead = (this.updHead + 1) % cap;
    } else {
      at = (this.updHead + this.updates++) % cap;
    }
    this.updStartHi[at] = sh;
    this.updStartLo[at] = sl;
    this.updEndHi[at] = eh;
    this.updEndLo[at] = el;
    this.updPerm[at] = perm;
    this.updTime[at] = timeNs;
    this.updPrevReply[at] = this.lastReply;
    this.updSampled[at] = 0;
    return at;
  }

  /** The front-end's turn before the UPDATE in slot `at`, once per UPDATE; -1 if already taken. */
  takeTurn(at: number): number {
    if (this.updSampled[at] !== 0) return -1;
    this.updSampled[at] = 1;
    return this.updTime[at] - this.updPrevReply[at];
  }

  /** Set by answeredBy: the slot of the UPDATE it found. */
  foundAt = -1;

  /** Set by answeredBy: a covering UPDATE was stamped at most COVERED_BEFORE_NS before the miss. */
  coveredBefore = false;

  /** Time of the earliest kept UPDATE stamped after `timeNs` that answers (hi:lo, perm), or -1. */
  answeredBy(hi: number, lo: number, perm: number, timeNs: number): number {
    const cap = this.updTime.length;
    let found = -1;
    this.coveredBefore = false;
    // Newest first, stopping a little before the miss: costs the UPDATEs since then.
    for (let k = this.updates - 1; k >= 0; k--) {
      const at = (this.updHead + k) % cap;
      const t = this.updTime[at];
      if (t <= timeNs - COVERED_BEFORE_NS) break;
      if (!covers(this.updStartHi[at], this.updStartLo[at], this.updEndHi[at], this.updEndLo[at], hi, lo) || (this.updPerm[at] & perm) !== perm) continue;
      if (t > timeNs) {
        found = t;
        this.foundAt = at;
      } else {
        this.coveredBefore = true;
        break;
      }
    }
    return found;
  }

  /** Returns -1, or the missEarly flag (0 or 1) of the oldest miss, given up to make room. */
  pushMiss(hi: number, lo: number, perm: number, early: boolean, timeNs: number): number {
    let evicted = -1;
    if (this.misses === MAX_OUTSTANDING) {
      evicted = this.missEarly[0];
      this.removeMiss(0);
    } else if (this.misses === this.missHi.length) {
      const n = this.missHi.length * 2;
      this.missHi = grow(this.missHi, new Uint32Array(n));
      this.missLo = grow(this.missLo, new Uint32Array(n));
      this.missPerm = grow(this.missPerm, new Uint8Array(n));
      this.missEarly = grow(this.missEarly, new Uint8Array(n));
      this.missTime = grow(this.missTime, new Float64Array(n));
    }
    const i = this.misses++;
    this.missHi[i] = hi;
    this.missLo[i] = lo;
    this.missPerm[i] = perm;
    this.missEarly[i] = early ? 1 : 0;
    this.missTime[i] = timeNs;
    return evicted;
  }

  removeMiss(i: number): void {
    const n = this.misses;
    this.missHi.copyWithin(i, i + 1, n);
    this.missLo.copyWithin(i, i + 1, n);
    this.missPerm.copyWithin(i, i + 1, n);
    this.missEarly.copyWithin(i, i + 1, n);
    this.missTime.copyWithin(i, i + 1, n);
    this.misses = n - 1;
  }

  /** Returns the kind of the entry dropped to make room, or -1. */
  pushPending(request: number, kind: Kind, timeNs: number): number {
    let dropped = -1;
    if (this.pending === MAX_OUTSTANDING) {
      dropped = this.pendKind[this.pendHead];
      this.popPending();
    } else if (this.pending === this.pendRequest.length) {
      // Unroll the ring into arrays twice the size, head at 0.
      const n = this.pendRequest.length * 2;
      this.pendRequest = unroll(this.pendRequest, new Uint32Array(n), this.pendHead);
      this.pendKind = unroll(this.pendKind, new Uint8Array(n), this.pendHead);
      this.pendTime = unroll(this.pendTime, new Float64Array(n), this.pendHead);
      this.pendHead = 0;
    }
    const at = (this.pendHead + this.pending) % this.pendRequest.length;
    this.pendRequest[at] = request;
    this.pendKind[at] = kind;
    this.pendTime[at] = timeNs;
    this.pending++;
    return dropped;
  }

  popPending(): void {
    this.pendHead = (this.pendHead + 1) % this.pendRequest.length;
    this.pending--;
  }
}

/** Whether [start, end) (as hi:lo halves) holds hi:lo. */
function covers(sh: number, sl: number, eh: number, el: number, hi: number, lo: number): boolean {
  return (hi > sh || (hi === sh && lo >= sl)) && (hi < eh || (hi === eh && lo < el));
}

function grow<T extends Uint32Array | Uint8Array | Float64Array>(from: T, to: T): T {
  to.set(from as never);
  return to;
}

function unroll<T extends Uint32Array | Uint8Array | Float64Array>(from: T, to: T, head: number): T {
  to.set(from.subarray(head) as never);
  to.set(from.subarray(0, head) as never, from.length - head);
  return to;
}

export interface RoundTripSummary extends LatencySummary {
  /** Requests (misses) that never got their answer; not samples. */
  unanswered: number;
  /** Non-empty buckets as [lowUs, highUs, count]. */
  histogram: Array<[number, number, number]>;
}

export interface RoundTripReport {
  miss: RoundTripSummary & {
    /**
     * Of the unanswered misses, those with a covering UPDATE stamped at most 1 ms *before* them:
     * the miss's clock runs ahead of the frontend channel's (serve --trace stamps its workers'
     * MISS records with the worker's clock), or it asked for a page already mapped.
     */
    coveredBefore: number;
  };
  updateAck: RoundTripSummary;
  invalidateAck: RoundTripSummary;
  /** The front-end's time per answer while misses wait (never unanswered). */
  frontendTurn: RoundTripSummary;
  /** Main-channel replies no waiting request accounts for. */
  unmatchedReplies: number;
}

export type RoundTripKind = 'miss' | 'updateAck' | 'invalidateAck' | 'frontendTurn';
export const ROUND_TRIP_KINDS: readonly RoundTripKind[] = ['miss', 'updateAck', 'invalidateAck', 'frontendTurn'];

export class RoundTrips {
  readonly miss = new LatencyHistogram();
  readonly updateAck = new LatencyHistogram();
  readonly invalidateAck = new LatencyHistogram();
  readonly frontendTurn = new LatencyHistogram();
  /** Main-channel replies no waiting request accounts for. */
  unmatchedReplies = 0;
  /** Given up while the trace went on (dropped or evicted); those still waiting are added at report time. */
  private readonly gaveUp = { miss: 0, updateAck: 0, invalidateAck: 0, frontendTurn: 0, coveredBefore: 0 };
  private readonly connections = new Map<number, Connection>();

  private connection(id: number): Connection {
    let c = this.connections.get(id);
    if (!c) this.connections.set(id, (c = new Connection()));
    return c;
  }

  /** One message record, in trace order, with its decoding (decodeRecord). */
  message(record: MessageRecord, decoded: Decoded): void {
    let request: number;
    let flags: number;
    if (decoded.ok) {
      request = decoded.message.request;
      flags = decoded.message.flags;
    } else {
      if (decoded.request === undefined || decoded.flags === undefined) return; // not even a header
      request = decoded.request;
      flags = decoded.flags;
    }
    const t = Number(record.timeNs);
    const body = decoded.ok ? decoded.message.body : null;
    const iotlb = body !== null && body.kind === 'iotlb' ? body : null;
    const isReply = (flags & REPLY_FLAG) !== 0;

    if (record.channel === 'backend') {
      // Only the back-end's MISS requests matter here.
      if (record.direction === 'to-frontend' && !isReply && iotlb !== null && iotlb.iotlbType === IotlbType.MISS) {
        const c = this.connection(record.connection);
        const hi = Number(iotlb.iova >> 32n);
        const lo = Number(iotlb.iova & 0xffffffffn);
        const answered = c.answeredBy(hi, lo, iotlb.perm, t);
        if (answered >= 0) {
          this.miss.record((answered - t) / 1000);
          // Written after its answer (serve --trace): it still tells whether it was waiting.
          if (t < c.updPrevReply[c.foundAt]) this.turn(c, c.foundAt);
        } else {
          const evicted = c.pushMiss(hi, lo, iotlb.perm, c.coveredBefore, t);
          if (evicted >= 0) this.gaveUp.miss++;
          if (evicted === 1) this.gaveUp.coveredBefore++;
        }
      }
      return;
    }

    if (record.direction === 'to-frontend') {
      if (isReply) {
        const c = this.connection(record.connection);
        c.lastReply = t;
        this.reply(c, request, t);
      }
      return;
    }
    if (isReply) return; // a reply sent to the back-end on the frontend channel: not part of any round trip

    const c = this.connection(record.connection);
    if (iotlb !== null && iotlb.iotlbType === IotlbType.UPDATE) this.update(c, iotlb.iova, iotlb.size, iotlb.perm, t);
    const needsReply = (flags & NEED_REPLY_FLAG) !== 0;
    const waits = needsReply || (request !== FrontendRequest.IOTLB_MSG && requestInfo('frontend', request)?.alwaysReplies === true);
    if (!waits) return;
    const kind = iotlb === null || request !== FrontendRequest.IOTLB_MSG ? Kind.Other
      : iotlb.iotlbType === IotlbType.UPDATE ? Kind.Update : iotlb.iotlbType === IotlbType.INVALIDATE ? Kind.Invalidate : Kind.Other;
    this.countGivenUp(c.pushPending(request, kind, t));
  }

  private countGivenUp(kind: number): void {
    if (kind === Kind.Update) this.gaveUp.updateAck++;
    else if (kind === Kind.Invalidate) this.gaveUp.invalidateAck++;
  }

  /** Answers every outstanding miss of the connection that [iova, iova + size) covers with perm. */
  private update(c: Connection, iova: bigint, size: bigint, perm: number, t: number): void {
    if (size === 0n) return;
    const end = iova + size; // may be 2^64: the halves below are plain numbers, so that is fine
    const sh = Number(iova >> 32n);
    const sl = Number(iova & 0xffffffffn);
    const eh = Number(end >> 32n);
    const el = Number(end & 0xffffffffn);
    const at = c.pushUpdate(sh, sl, eh, el, perm, t);
    let i = 0;
    while (i < c.misses) {
      const p = c.missPerm[i];
      if (c.missTime[i] <= t && covers(sh, sl, eh, el, c.missHi[i], c.missLo[i]) && (perm & p) === p) {
        this.miss.record((t - c.missTime[i]) / 1000);
        if (c.missTime[i] < c.lastReply) this.turn(c, at);
        c.removeMiss(i);
      } else {
        i++;
      }
    }
  }

  /** A frontendTurn sample for the UPDATE in slot `at`, unless it gave one already. */
  private turn(c: Connection, at: number): void {
    const ns = c.takeTurn(at);
    if (ns >= 0) this.frontendTurn.record(ns / 1000);
  }

  private reply(c: Connection, request: number, t: number): void {
    while (c.pending > 0) {
      const at = c.pendHead;
      const kind = c.pendKind[at];
      if (c.pendRequest[at] === request) {
        if (kind === Kind.Update) this.updateAck.record((t - c.pendTime[at]) / 1000);
        else if (kind === Kind.Invalidate) this.invalidateAck.record((t - c.pendTime[at]) / 1000);
        c.popPending();
        return;
      }
      // Strict order: a reply to a later request means this one is not getting one.
      this.countGivenUp(kind);
      c.popPending();
    }
    this.unmatchedReplies++;
  }

  /** Misses and requests still waiting now (the end of the trace), per kind. */
  private waiting(): Record<RoundTripKind | 'coveredBefore', number> {
    const out = { miss: 0, updateAck: 0, invalidateAck: 0, frontendTurn: 0, coveredBefore: 0 };
    for (const c of this.connections.values()) {
      out.miss += c.misses;
      for (let i = 0; i < c.misses; i++) out.coveredBefore += c.missEarly[i];
      for (let k = 0; k < c.pending; k++) {
        const kind = c.pendKind[(c.pendHead + k) % c.pendKind.length];
        if (kind === Kind.Update) out.updateAck++;
        else if (kind === Kind.Invalidate) out.invalidateAck++;
      }
    }
    return out;
  }

  /** Figures so far; whatever is still waiting counts as unanswered. */
  report(): RoundTripReport {
    const waiting = this.waiting();
    const one = (kind: RoundTripKind): RoundTripSummary => {
      const h = this[kind];
      return {
        ...h.summary(),
        unanswered: this.gaveUp[kind] + waiting[kind],
        histogram: h.buckets().map(([lo, hi, n]) => [round3(lo), round3(hi), n]),
      };
    };
    return { miss: { ...one('miss'), coveredBefore: this.gaveUp.coveredBefore + waiting.coveredBefore }, updateAck: one('updateAck'), invalidateAck: one('invalidateAck'),
      frontendTurn: one('frontendTurn'), unmatchedReplies: this.unmatchedReplies };
  }
}

const round3 = (v: number): number => Math.round(v * 1000) / 1000;

/** 0.84 -> "0.84", 12.3 -> "12.3", 1234 -> "1234", 123456 -> "123.5 ms". */
export function formatUs(us: number): string {
  if (us >= 100_000) return `${(us / 1000).toFixed(1)} ms`;
  if (us >= 1000) return `${Math.round(us)} µs`;
  if (us >= 10) return `${us.toFixed(1)} µs`;
  return `${us.toFixed(2)} µs`;
}

/** A text histogram: one line per non-empty bucket, `  low – high µs │████ count`. */
export function renderHistogram(buckets: ReadonlyArray<readonly [number, number, number]>, bar: (s: string) => string = (s) => s, width = 40): string[] {
  if (buckets.length === 0) return [];
  const most = Math.max(...buckets.map((b) => b[2]));
  const labels = buckets.map(([lo, hi]) => `${formatUs(lo)} – ${formatUs(hi)}`);
  const pad = Math.max(...labels.map((l) => l.length));
  return buckets.map(([, , n], i) => {
    const len = Math.max(1, Math.round((n / most) * width));
    return `  ${labels[i].padStart(pad)} │${bar('█'.repeat(len))} ${n}`;
  });
}

/**
 * Turns a trace into the compact operation stream the replay engine runs: parallel,
 * preallocated typed arrays, one row per operation, with the reference answer of every
 * lookup computed once, here.
 *
 * Caches follow DPDK: one IOTLB cache per virtqueue (a "slot" = connection + queue). The
 * queues of a connection are the queues its translation records name. An IOTLB UPDATE or
 * INVALIDATE (a vhost-user IOTLB_MSG request on the main channel, decoded with the
 * protocol codec) is applied to every cache of its connection, so it becomes one row per
 * slot; a translation record becomes one lookup row on its own slot.
 *
 * Messages are checked the way the device's IOTLB_MSG handler checks them: an UPDATE of
 * size 0, with a perm other than RO/WO/RW, or reaching past 2^53 is refused (counted in
 * `rejected`, not replayed); an INVALIDATE reaching past 2^53 is clamped. Messages the
 * codec refuses are counted as rejected too. A connection with IOTLB traffic but no
 * translations gets one cache (queue -1) so its updates are still replayed.
 *
 * Two kinds of replay (docs/trace-format.md, "Replaying a trace"): a trace with translation
 * records replays those as its lookups ('translations'); a trace without any — a
 * `trace record` proxy sees none — replays each back-end-channel IOTLB MISS as a lookup of
 * that IOVA and perm that the recorded back-end missed ('revealed-misses'), ordered by time
 * stamp among the UPDATEs and INVALIDATEs. Never both: a `serve --trace` file holds its
 * workers' MISS messages as well as the translations that caused them, so counting both
 * would count every miss twice.
 */
import { BackendRequest, FrontendRequest, IotlbType, decodeMessage } from '../protocol/index.js';
import { ADDRESS_LIMIT } from '../iotlb/address.js';
import { parseTrace, readTrace } from '../trace/reader.js';
import type { TraceRecord } from '../trace/records.js';
import { ReferenceIotlb, type ReferenceAnswer } from '../iotlb/reference.js';

export const OP_LOOKUP = 0;
export const OP_UPDATE = 1;
export const OP_INVALIDATE = 2;
/** Builder-internal: a back-end MISS, which becomes an OP_LOOKUP row or is dropped (see above). */
const OP_REVEALED_MISS = 3;

/** Where a replay's lookups came from. */
export type ReplayKind = 'translations' | 'revealed-misses';
export const REPLAY_KIND_LABELS: Record<ReplayKind, string> = {
  translations: 'translations recorded by serve or synth',
  'revealed-misses': 'misses revealed by the back-end',
};

/** Recorded translation results, as the trace stores them (docs/trace-format.md). */
export const RECORDED_RESULTS = ['hit', 'miss', 'denied', 'fault'] as const;
const RESULT_INDEX: Record<string, number> = { hit: 0, miss: 1, denied: 2, fault: 3 };
const NO_RESULT = 255;

export interface CacheSlot {
  connection: number;
  /** Virtqueue index, or -1 for a connection that has IOTLB messages but no translations. */
  queue: number;
}

export interface OpStream {
  /** Trace name used in messages (the file name). */
  readonly source: string;
  /** What the lookups are: translation records, or the back-end's MISS messages. */
  readonly replay: ReplayKind;
  readonly count: number;
  /** OP_LOOKUP, OP_UPDATE or OP_INVALIDATE. */
  readonly kind: Uint8Array;
  /** Cache slot the row applies to (index into `slots`). */
  readonly slot: Uint32Array;
  readonly iova: Float64Array;
  /** UPDATE / INVALIDATE: size; lookup: bytes asked for. */
  readonly size: Float64Array;
  /** UPDATE: user address. */
  readonly uaddr: Float64Array;
  /** UPDATE: perm; lookup: access bits. */
  readonly perm: Uint8Array;
  /** Index of the trace record the row came from (0-based, records only). */
  readonly record: Uint32Array;
  /** Lookup: the result recorded in the trace (index into RECORDED_RESULTS), 255 otherwise. */
  readonly recorded: Uint8Array;
  /** Lookup: reference result (> 0 length, 0 miss, -1 denied). */
  readonly refResult: Float64Array;
  /** Lookup: reference user address on a hit. */
  readonly refUaddr: Float64Array;
  /** Lookup: the reference range holding iova (size 0 if none) — what a front-end would re-send on a miss. */
  readonly refEntryIova: Float64Array;
  readonly refEntrySize: Float64Array;
  readonly refEntryUaddr: Float64Array;
  readonly refEntryPerm: Uint8Array;
  readonly slots: readonly CacheSlot[];
  /** Lookup rows (translations, or revealed misses). */
  readonly lookups: number;
  /** UPDATE / INVALIDATE messages (before fan-out to the slots). */
  readonly updates: number;
  readonly invalidates: number;
  /** IOTLB_MSG requests refused (bad fields, codec errors) and so not replayed. */
  readonly rejected: number;
  /** MISS messages the recording back-end sent (back-end channel), for comparison. */
  readonly recordedMisses: number;
  /**
   * Lookups whose recorded result disagrees with the reference (0 for synthetic traces). With
   * revealed misses: MISSes for an IOVA the front-end had mapped and not invalidated at that
   * moment (the back-end had evicted it, or its MISS is stamped after the UPDATE answering it).
   */
  readonly recordedDisagreements: number;
  /** Most ranges the reference held at once on any connection. */
  readonly referencePeak: number;
}

/** A growable column of numbers, for the first pass. */
class Column<T extends Float64Array | Uint32Array | Uint8Array> {
  length = 0;
  constructor(public data: T, private readonly make: (n: number) => T) {}
  push(v: number): void {
    if (this.length === this.data.length) {
      const bigger = this.make(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = v;
  }
}
const f64 = (n: number): Float64Array => new Float64Array(n);
const u32 = (n: number): Uint32Array => new Uint32Array(n);
const u8 = (n: number): Uint8Array => new Uint8Array(n);

const LIMIT = BigInt(ADDRESS_LIMIT);

/** Builds the op stream from records (any iterable; see loadOps for files). */
export class OpStreamBuilder {
  private readonly kind = new Column(u8(1024), u8);
  private readonly conn = new Column(u32(1024), u32);
  private readonly queue = new Column(u32(1024), u32);
  private readonly iova = new Column(f64(1024), f64);
  private readonly size = new Column(f64(1024), f64);
  private readonly uaddr = new Column(f64(1024), f64);
  private readonly perm = new Column(u8(1024), u8);
  private readonly record = new Column(u32(1024), u32);
  private readonly recorded = new Column(u8(1024), u8);
  /** Time stamps (ns): revealed misses are ordered by them. */
  private readonly time = new Column(f64(1024), f64);
  /** connection -> queues seen in translations. */
  private readonly queues = new Map<number, Set<number>>();
  private readonly iotlbConnections = new Set<number>();
  /** Connections with back-end MISS messages (they get a cache only in a revealed-miss replay). */
  private readonly missConnections = new Set<number>();
  private records = 0;
  private lookups = 0;
  private updates = 0;
  private invalidates = 0;
  private rejected = 0;
  private recordedMisses = 0;
  private revealedMisses = 0;
  private missRejected = 0;
  /** Whether the records so far are in time-stamp order (then no reordering is needed). */
  private ordered = true;
  private lastTime = 0;

  constructor(private readonly source: string) {}

  add(record: TraceRecord): void {
    const index = this.records++;
    const time = Number(record.timeNs);
    if (time < this.lastTime) this.ordered = false;
    this.lastTime = time;
    if (record.type === 'translation') {
      let qs = this.queues.get(record.connection);
      if (qs === undefined) this.queues.set(record.connection, (qs = new Set()));
      qs.add(record.queue);
      this.push(OP_LOOKUP, record.connection, record.queue, clampAddress(record.iova), record.length, 0,
        record.access, index, RESULT_INDEX[record.result] ?? NO_RESULT, time);
      this.lookups++;
      return;
    }
    const bytes = record.bytes;
    // Cheap pre-filter on the header's request field before decoding.
    if (bytes.length < 4) return;
    const request = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (bytes[3] << 24);
    if (record.channel === 'backend') {
      if (record.direction === 'to-frontend' && request === BackendRequest.IOTLB_MSG) this.addMiss(record.connection, bytes, index, time);
      return;
    }
    if (record.direction !== 'to-backend' || request !== FrontendRequest.IOTLB_MSG) return;
    let body;
    try {
      const msg = decodeMessage('frontend', bytes, record.fds.map(() => -1));
      if (msg.isReply) return;
      body = msg.body;
    } catch {
      this.rejected++;
      return;
    }
    if (body.kind !== 'iotlb') {
      this.rejected++;
      return;
    }
    if (body.iotlbType === IotlbType.UPDATE) {
      const { iova, size, userAddr, perm } = body;
      if (size === 0n || perm < 1 || perm > 3 || iova + size > LIMIT || userAddr + size > LIMIT) {
        this.rejected++;
        return;
      }
      this.iotlbConnections.add(record.connection);
      this.push(OP_UPDATE, record.connection, 0, Number(iova), Number(size), Number(userAddr), perm, index, NO_RESULT, time);
      this.updates++;
    } else if (body.iotlbType === IotlbType.INVALIDATE) {
      // As the device does: an invalidation may name the whole 64-bit space; clamping only widens it.
      const start = body.iova >= LIMIT ? LIMIT - 1n : body.iova;
      const end = body.iova + body.size >= LIMIT ? LIMIT : body.iova + body.size;
      const size = end - start > 0n ? end - start : 1n;
      this.iotlbConnections.add(record.connection);
      this.push(OP_INVALIDATE, record.connection, 0, Number(start), Number(size), 0, 0, index, NO_RESULT, time);
      this.invalidates++;
    } else {
      this.rejected++;
    }
  }

  /**
   * A back-end MISS (iova, perm): kept as a one-byte lookup that the recorded back-end
   * missed. MISS messages the codec refuses, or with a perm that is no access, are counted
   * as rejected when they would be replayed (build()).
   */
  private addMiss(connection: number, bytes: Uint8Array, index: number, time: number): void {
    let body;
    try {
      body = decodeMessage('backend', bytes, []).body;
    } catch {
      this.missRejected++;
      return;
    }
    if (body.kind !== 'iotlb' || body.iotlbType !== IotlbType.MISS) return;
    this.recordedMisses++;
    if (body.perm < 1 || body.perm > 3) {
      this.missRejected++;
      return;
    }
    this.missConnections.add(connection);
    this.push(OP_REVEALED_MISS, connection, 0, clampAddress(body.iova), 1, 0, body.perm, index, RESULT_INDEX.miss, time);
    this.revealedMisses++;
  }

  private push(kind: number, conn: number, queue: number, iova: number, size: number, uaddr: number,
    perm: number, record: number, recorded: number, time: number): void {
    this.kind.push(kind);
    this.conn.push(conn);
    this.queue.push(queue);
    this.iova.push(iova);
    this.size.push(size);
    this.uaddr.push(uaddr);
    this.perm.push(perm);
    this.record.push(record);
    this.recorded.push(recorded);
    this.time.push(time);
  }

  /** Number of lookup + IOTLB message rows so far (0 = nothing to replay). */
  get rawCount(): number {
    return this.kind.length;
  }

  /** The op stream; EmptyTraceError when there is no lookup to replay. */
  buildOrThrow(): OpStream {
    if (this.lookups === 0 && this.revealedMisses === 0) throw new EmptyTraceError(this.source, this.rawCount);
    return this.build();
  }

  /**
   * Builder rows in replay order, as indices: revealed-miss rows become lookups or are
   * dropped (module comment); with revealed misses, rows are stably sorted by time stamp,
   * because a back-end's MISS may be written after the UPDATE that answered it (serve
   * drains its workers' MISS records every 20 ms) — the proxy's own records are in order.
   */
  private replayOrder(replay: ReplayKind): Uint32Array {
    const n = this.kind.length;
    const keep: number[] = [];
    for (let i = 0; i < n; i++) {
      if (this.kind.data[i] !== OP_REVEALED_MISS || replay === 'revealed-misses') keep.push(i);
    }
    const time = this.time.data;
    if (replay === 'revealed-misses' && !this.ordered) keep.sort((a, b) => time[a] - time[b] || a - b);
    return Uint32Array.from(keep);
  }

  build(): OpStream {
    // Translation records win when there are any (module comment).
    const replay: ReplayKind = this.lookups > 0 || this.revealedMisses === 0 ? 'translations' : 'revealed-misses';
    const order = this.replayOrder(replay);
    // Slots: every (connection, queue) seen in translations, sorted; -1 for IOTLB-only connections.
    const slots: CacheSlot[] = [];
    const slotsOf = new Map<number, number[]>();
    const slotIndex = new Map<string, number>();
    const revealed = replay === 'revealed-misses';
    const connections = [...new Set([...this.queues.keys(), ...this.iotlbConnections, ...(revealed ? this.missConnections : [])])]
      .sort((a, b) => a - b);
    for (const connection of connections) {
      const qs = [...(this.queues.get(connection) ?? [-1])].sort((a, b) => a - b);
      const list: number[] = [];
      for (const queue of qs) {
        slotIndex.set(`${connection}:${queue}`, slots.length);
        list.push(slots.length);
        slots.push({ connection, queue });
      }
      slotsOf.set(connection, list);
    }

    let count = 0;
    // Revealed-miss rows are lookups from here on (only kept in a revealed-miss replay).
    const kindOf = (i: number): number => (this.kind.data[i] === OP_REVEALED_MISS ? OP_LOOKUP : this.kind.data[i]);
    for (const i of order) {
      count += kindOf(i) === OP_LOOKUP ? 1 : slotsOf.get(this.conn.data[i])!.length;
    }
    const out = {
      kind: new Uint8Array(count),
      slot: new Uint32Array(count),
      iova: new Float64Array(count),
      size: new Float64Array(count),
      uaddr: new Float64Array(count),
      perm: new Uint8Array(count),
      record: new Uint32Array(count),
      recorded: new Uint8Array(count).fill(NO_RESULT),
      refResult: new Float64Array(count),
      refUaddr: new Float64Array(count),
      refEntryIova: new Float64Array(count),
      refEntrySize: new Float64Array(count),
      refEntryUaddr: new Float64Array(count),
      refEntryPerm: new Uint8Array(count),
    };
    const refs = new Map<number, ReferenceIotlb>();
    for (const c of connections) refs.set(c, new ReferenceIotlb());
    const answer: ReferenceAnswer = { result: 0, uaddr: 0, entryIova: 0, entrySize: 0, entryUaddr: 0, entryPerm: 0 };
    let disagreements = 0;
    let j = 0;
    for (const i of order) {
      const kind = kindOf(i);
      const conn = this.conn.data[i];
      const iova = this.iova.data[i];
      const size = this.size.data[i];
      const uaddr = this.uaddr.data[i];
      const perm = this.perm.data[i];
      const ref = refs.get(conn)!;
      const targets = kind === OP_LOOKUP ? [slotIndex.get(`${conn}:${this.queue.data[i]}`)!] : slotsOf.get(conn)!;
      if (kind === OP_UPDATE) ref.insert(iova, size, uaddr, perm);
      else if (kind === OP_INVALIDATE) ref.invalidate(iova, size);
      else {
        ref.lookup(iova, size, perm, answer);
        const rec = this.recorded.data[i];
        if ((rec === 0 && !(answer.result > 0)) || (rec === 1 && answer.result !== 0) || (rec === 2 && answer.result !== -1)) {
          disagreements++;
        }
      }
      for (const slot of targets) {
        out.kind[j] = kind;
        out.slot[j] = slot;
        out.iova[j] = iova;
        out.size[j] = size;
        out.uaddr[j] = uaddr;
        out.perm[j] = perm;
        out.record[j] = this.record.data[i];
        if (kind === OP_LOOKUP) {
          out.recorded[j] = this.recorded.data[i];
          out.refResult[j] = answer.result;
          out.refUaddr[j] = answer.uaddr;
          out.refEntryIova[j] = answer.entryIova;
          out.refEntrySize[j] = answer.entrySize;
          out.refEntryUaddr[j] = answer.entryUaddr;
          out.refEntryPerm[j] = answer.entryPerm;
        }
        j++;
      }
    }
    let referencePeak = 0;
    for (const r of refs.values()) referencePeak = Math.max(referencePeak, r.peak);
    return {
      source: this.source, replay, count, ...out, slots,
      lookups: revealed ? this.revealedMisses : this.lookups, updates: this.updates, invalidates: this.invalidates,
      rejected: this.rejected + (revealed ? this.missRejected : 0),
      recordedMisses: this.recordedMisses, recordedDisagreements: disagreements, referencePeak,
    };
  }
}

function clampAddress(v: bigint): number {
  return v >= LIMIT ? ADDRESS_LIMIT : Number(v);
}

/** Thrown for a trace with nothing to replay. */
export class EmptyTraceError extends Error {
  override readonly name = 'EmptyTraceError';
  constructor(readonly source: string, messagesOnly = 0) {
    super(messagesOnly > 0
      ? `${source} holds ${messagesOnly} IOTLB operations but no translation records and no back-end IOTLB misses: no lookups to replay`
      : `no IOTLB operations or translations in ${source}`);
  }
}

/** Op stream of an in-memory trace. Throws TraceFormatError (with the byte offset) or EmptyTraceError. */
export function opsFromBytes(bytes: Uint8Array, source = '<buffer>'): OpStream {
  const builder = new OpStreamBuilder(source);
  for (const record of parseTrace(bytes, { source })) builder.add(record);
  return builder.buildOrThrow();
}

/** Op stream of a trace file (streamed: memory is the op stream, not the file). */
export async function loadOps(path: string, source = path): Promise<OpStream> {
  const builder = new OpStreamBuilder(source);
  for await (const record of readTrace(path, { source })) builder.add(record);
  return builder.buildOrThrow();
}

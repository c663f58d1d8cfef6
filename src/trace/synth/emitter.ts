/** Writes a synthetic trace's records, keeps its clock and counters, and the reference IOTLB its translation results come from. */
import { BackendRequest, FrontendRequest, IotlbPerm, IotlbType, encodeMessage } from '../../protocol/index.js';
import type { Prng } from '../../iotlb/prng.js';
import { ReferenceIotlb, referenceAnswer } from '../../iotlb/reference.js';
import { LOOKUP_MISS } from '../../iotlb/strategy.js';
import { TranslationResultCode } from '../format.js';
import type { TraceChannel, TraceDirection } from '../records.js';
import type { TraceWriter } from '../writer.js';
import type { SynthSummary } from './options.js';

/** Messages between two progress reports (a 16 GiB static-4k area writes ~8 M). */
const PROGRESS_EVERY = 1 << 16;

/** Writes records, keeps the clock and the counters. */
export class Emitter {
  t = 0;
  readonly summary: Omit<SynthSummary, 'scenario' | 'seed' | 'packets' | 'queues' | 'guestMib'> = {
    messages: 0, translations: 0, hits: 0, misses: 0, updates: 0, invalidates: 0, iotlbMissMessages: 0, durationNs: 0,
  };
  /** What the translation records' results come from: every mapping granted and not revoked. */
  private readonly ref = new ReferenceIotlb();
  private readonly answer = referenceAnswer();

  /** Told the messages written so far, now and then (every PROGRESS_EVERY messages). */
  onProgress: ((messages: number) => void) | null = null;

  /** `unit`: the page size translations are split at (a lookup returns at most one page). */
  constructor(readonly writer: TraceWriter, readonly rng: Prng, readonly unit: number) {}

  /** Result code for an access inside one unit. */
  private lookup(iova: number, access: number): number {
    const result = this.ref.lookup(iova, 1, access, this.answer).result;
    return result > 0 ? TranslationResultCode.hit : result === LOOKUP_MISS ? TranslationResultCode.miss : TranslationResultCode.denied;
  }

  /** Advances the clock by lo..hi ns. */
  tick(lo: number, hi: number): void {
    this.t += lo + this.rng.below(hi - lo + 1);
  }

  message(channel: TraceChannel, direction: TraceDirection, bytes: Uint8Array): void {
    this.writer.writeMessage({ timeNs: BigInt(this.t), connection: 0, channel, direction, bytes, fds: [] });
    if (++this.summary.messages % PROGRESS_EVERY === 0) this.onProgress?.(this.summary.messages);
  }

  private iotlb(type: number, iova: number, size: number, uaddr: number, perm: number): void {
    this.message('frontend', 'to-backend', encodeMessage({
      channel: 'frontend', request: FrontendRequest.IOTLB_MSG, needsReply: true,
      body: { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: BigInt(uaddr), perm, iotlbType: type },
    }));
    this.tick(1_000, 3_000);
    // REPLY_ACK is negotiated (QEMU requires it with an IOMMU): the back-end acks with 0.
    this.message('frontend', 'to-frontend', encodeMessage({
      channel: 'frontend', request: FrontendRequest.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n },
    }));
  }

  update(iova: number, size: number, uaddr: number, perm: number): void {
    this.iotlb(IotlbType.UPDATE, iova, size, uaddr, perm);
    this.ref.insert(iova, size, uaddr, perm);
    this.summary.updates++;
  }

  invalidate(iova: number, size: number): void {
    this.iotlb(IotlbType.INVALIDATE, iova, size, 0, IotlbPerm.NONE);
    this.ref.invalidate(iova, size);
    this.summary.invalidates++;
  }

  /** The back-end asks the front-end for a translation on the back-end channel. */
  missMessage(iova: number, perm: number): void {
    this.message('backend', 'to-frontend', encodeMessage({
      channel: 'backend', request: BackendRequest.IOTLB_MSG,
      body: { kind: 'iotlb', iova: BigInt(iova), size: 0n, userAddr: 0n, perm, iotlbType: IotlbType.MISS },
    }));
    this.summary.iotlbMissMessages++;
  }

  private record(queue: number, iova: number, length: number, access: number, result: number): void {
    this.tick(10, 40);
    this.writer.translation(this.t, 0, queue, iova, length, access, result);
    this.summary.translations++;
    if (result === TranslationResultCode.hit) this.summary.hits++;
    else if (result === TranslationResultCode.miss) this.summary.misses++;
  }

  /**
   * Translates [iova, iova+len) as a back-end does: one lookup per reference-cache unit the
   * range touches (a lookup returns at most the rest of one entry). On a miss `onMiss`
   * resolves it (MISS + UPDATE) and the lookup is retried.
   */
  translate(queue: number, iova: number, len: number, access: number, onMiss?: (iova: number, access: number) => void): void {
    const unit = this.unit;
    let at = iova;
    const end = iova + len;
    while (at < end) {
      const pieceEnd = Math.min(end, (Math.floor(at / unit) + 1) * unit);
      let result = this.lookup(at, access);
      this.record(queue, at, pieceEnd - at, access, result);
      if (result === TranslationResultCode.miss && onMiss) {
        onMiss(at, access);
        result = this.lookup(at, access);
        this.record(queue, at, pieceEnd - at, access, result);
      }
      at = pieceEnd;
    }
  }
}

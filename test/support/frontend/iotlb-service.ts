/**
 * QEMU's side of the device IOTLB, for the test front-end: serves the back-end channel —
 * a MISS is answered like QEMU does (one UPDATE for the emulated IOMMU page holding the
 * address, clamped to guest memory, with the page's permission), an ACCESS_FAIL is recorded —
 * and sends the INVALIDATEs an unmap needs. Kept apart from dma.ts, the guest's side, which
 * decides what is mapped; this module only tells the device about it.
 *
 * A miss for an unmapped IOVA is remembered and answered when a mapping covers it (QEMU
 * would send nothing, and the back-end never repeats a pending miss).
 */
import { BackendRequest, FrontendRequest, IotlbType, type Body, type VhostMessage } from '../../../src/protocol/index.js';
import type { VhostUserConnection } from './connection.js';
import type { EmulatedIommu, IommuTranslation } from './iommu.js';
import type { ResolvedFrontendOptions } from './options.js';

export interface IotlbStats {
  missesReceived: number;
  updatesSent: number;
  missesDeferred: number;
  invalidatesSent: number;
  accessFails: number;
  /** UPDATEs sent one at a time (not held back and pipelined): the ones updateAckMs times. */
  soloUpdates: number;
  /**
   * Milliseconds from sending to the back-end's ack, summed over the solo UPDATEs and over the
   * INVALIDATEs: what each round trip costs, as the guest would wait for it.
   */
  updateAckMs: number;
  invalidateAckMs: number;
}

export class IotlbService {
  /** ACCESS_FAIL messages the back-end sent: [iova, perm]. */
  readonly accessFails: Array<{ iova: number; perm: number }> = [];
  /** Misses for unmapped IOVAs, answered when a mapping covers them (IOMMU page number -> perm). */
  private readonly deferred = new Map<number, number>();
  /** UPDATEs held back to be sent together (missReplies 'pipelined'), or null. */
  private heldUpdates: Body[] | null = null;
  private readonly tr: IommuTranslation = { pageIova: 0, pageGpa: 0, perm: 0 };

  constructor(
    private readonly conn: VhostUserConnection,
    private readonly iommu: EmulatedIommu | null,
    private readonly opts: Pick<ResolvedFrontendOptions, 'memoryBytes' | 'uaddrBase' | 'missReplies'>,
    private readonly stats: IotlbStats,
  ) {}

  /** [iova, iova+size) was just mapped in the IOMMU: answers the deferred misses it covers. */
  mapped(iova: number, size: number): void {
    if (this.deferred.size === 0) return;
    const p = this.iommu!.pageSize;
    const first = Math.floor(iova / p);
    const last = Math.floor((iova + size - 1) / p);
    for (let pn = first; pn <= last; pn++) {
      const perm = this.deferred.get(pn);
      if (perm === undefined) continue;
      this.deferred.delete(pn);
      this.answerMiss(pn * p, perm);
    }
  }

  /**
   * IOTLB_MSG INVALIDATE for [iova, iova+size); with REPLY_ACK, waits for the ack — the
   * device must not use the range once this returns. Then serves what came in meanwhile.
   */
  invalidate(iova: number, size: number): void {
    this.stats.invalidatesSent++;
    const sent = performance.now();
    this.conn.request(FrontendRequest.IOTLB_MSG, { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: 0n, perm: 0, iotlbType: IotlbType.INVALIDATE });
    this.stats.invalidateAckMs += performance.now() - sent;
    this.service();
  }

  /** Sends an UPDATE for the IOMMU page holding iova, as QEMU answers a miss; defers it if unmapped. */
  answerMiss(iova: number, perm: number): void {
    const mmu = this.iommu!;
    const t = this.tr;
    if (!mmu.translate(iova, t)) {
      // QEMU reports "Fail to lookup the translated address" and sends nothing. We remember
      // it and answer once a mapping covers it, or the device would wait forever (its
      // pending-miss list does not send the same miss twice).
      this.deferred.set(Math.floor(iova / mmu.pageSize), perm);
      this.stats.missesDeferred++;
      return;
    }
    const size = Math.min(mmu.pageSize, this.opts.memoryBytes - t.pageGpa);
    this.sendUpdate(t.pageIova, size, this.opts.uaddrBase + t.pageGpa, t.perm);
  }

  sendUpdate(iova: number, size: number, uaddr: number, perm: number): void {
    this.stats.updatesSent++;
    const body: Body = { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: BigInt(uaddr), perm, iotlbType: IotlbType.UPDATE };
    if (this.heldUpdates !== null) {
      this.heldUpdates.push(body);
      return;
    }
    const sent = performance.now();
    this.conn.request(FrontendRequest.IOTLB_MSG, body);
    this.stats.updateAckMs += performance.now() - sent;
    this.stats.soloUpdates++;
  }

  /** Handles every queued back-end request (misses), including those arriving while answering. Returns how many. */
  service(): number {
    const c = this.conn;
    c.pollBackend();
    if (this.opts.missReplies === 'pipelined' && c.backendPending > 1) return this.servicePipelined();
    let n = 0;
    for (let msg = c.nextBackendRequest(); msg !== undefined; msg = c.nextBackendRequest()) {
      n++;
      this.handleBackendRequest(msg);
      if (c.backendPending === 0) c.pollBackend();
    }
    return n;
  }

  /** service() for several requests at once (missReplies 'pipelined'): UPDATEs back to back, then their acks. */
  private servicePipelined(): number {
    const c = this.conn;
    const held: Body[] = [];
    let n = 0;
    this.heldUpdates = held;
    try {
      for (let msg = c.nextBackendRequest(); msg !== undefined; msg = c.nextBackendRequest()) {
        n++;
        this.handleBackendRequest(msg);
        if (c.backendPending === 0) c.pollBackend();
      }
    } finally {
      this.heldUpdates = null;
    }
    c.requestMany(FrontendRequest.IOTLB_MSG, held);
    // Misses that came in while the acks were collected are queued: answer them too.
    if (c.backendPending > 0) n += this.service();
    return n;
  }

  /** One back-end request: a miss is answered (or deferred), an ACCESS_FAIL recorded; replies if asked. */
  private handleBackendRequest(msg: VhostMessage): void {
    let result = 0n;
    if (msg.request === BackendRequest.IOTLB_MSG && msg.body.kind === 'iotlb') {
      const iova = Number(msg.body.iova);
      if (msg.body.iotlbType === IotlbType.MISS) {
        this.stats.missesReceived++;
        if (this.iommu !== null) this.answerMiss(iova, msg.body.perm);
      } else if (msg.body.iotlbType === IotlbType.ACCESS_FAIL) {
        this.stats.accessFails++;
        this.accessFails.push({ iova, perm: msg.body.perm });
      } else {
        result = 1n;
      }
    } else {
      result = 1n;
    }
    this.conn.replyBackend(msg, result);
  }
}

/**
 * The front-end socket lent to a queue-pair worker. While the session on the main thread is
 * idle, the worker reads IOTLB UPDATE and INVALIDATE requests itself, applies them to its
 * caches between two bursts and sends the ack: no hop through the main thread's event loop
 * and no wait for a burst in flight. That round trip is what a guest behind a vIOMMU waits on:
 * every DMA map is a miss -> UPDATE -> ack, every unmap an INVALIDATE -> ack, and QEMU's vCPU
 * blocks until each ack arrives (DPDK's vhost answers from a C thread; we answer from the
 * thread that owns the caches).
 *
 * The worker takes only what it can finish alone: a whole, plain IOTLB request carrying no
 * fds, seen with a peek first, so anything else stays queued untouched. (Linux's peek also
 * reports the fds of the send queued right behind, so a request followed by one with fds
 * goes to the session as well: one hand-over early, never one late.) Anything else
 * (another request, a partial or malformed message, fds, end of stream, a socket error, no
 * room to report back) gives the socket back at a message boundary to the session, which
 * handles it with the full decoder and handlers and lends the socket again once idle.
 * What the worker applied goes back through a ring to the main thread's IOTLB shadow
 * (for inspect, and what a worker started later begins with).
 */
import { decodePlainIotlb, encodeMessage, FrontendRequest, IOTLB_FRAME_SIZE, IotlbType, plainIotlbRequest } from '../protocol/index.js';
import { CARRIES_FDS, receiveBytes, sendMessage } from '../sys/index.js';
import type { LatencyHistogram } from '../stats/latency.js';
import { IotlbOp, type IotlbOpSink, type IotlbRingProducer } from './iotlb-ring.js';

const ACK = encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n } });

export interface SocketReturn {
  /** Why the worker gave the socket back. */
  reason: string;
  /** The connection cannot go on (an ack could not be sent): the session closes it. */
  fatal: boolean;
}

export class IotlbFastPath {
  /** The lent socket, -1 when the main thread has it. */
  fd = -1;
  /** IOTLB requests applied so far. */
  handled = 0;
  /** Set when poll() returned false. */
  returned: SocketReturn = { reason: '', fatal: false };
  private readonly frame = new Uint8Array(IOTLB_FRAME_SIZE);
  private readonly view = new DataView(this.frame.buffer);
  private readonly request = plainIotlbRequest();

  constructor(
    private readonly sink: IotlbOpSink,
    private readonly applied: IotlbRingProducer,
    private readonly updateAcks: LatencyHistogram,
    private readonly invalidateAcks: LatencyHistogram,
  ) {}

  get lent(): boolean {
    return this.fd >= 0;
  }

  /**
   * Handles the plain IOTLB requests queued, at most `limit` of them; false once the socket
   * must go back (see `returned`). A thread that polls the socket itself passes 1: its poll
   * says whether more came, and the look that would find none is a syscall saved.
   */
  poll(limit = Infinity): boolean {
    const fd = this.fd;
    const req = this.request;
    for (let n = 0; n < limit; n++) {
      let got: number;
      try {
        got = receiveBytes(fd, this.frame, 0, IOTLB_FRAME_SIZE, true);
      } catch (err) {
        return this.giveBack(`socket error: ${(err as Error).message}`);
      }
      if (got === -1) return true;
      if (got === 0) return this.giveBack('end of stream');
      if (got === CARRIES_FDS) return this.giveBack('a message with fds');
      if (got < IOTLB_FRAME_SIZE || !decodePlainIotlb(this.frame, req, this.view)) return this.giveBack('not a plain IOTLB request');
      if (this.applied.full) return this.giveBack('applied operations not yet collected');
      const seenAt = performance.now();
      // The peek showed a whole message and no fds: this read takes exactly it.
      if (receiveBytes(fd, this.frame, 0, IOTLB_FRAME_SIZE, false) !== IOTLB_FRAME_SIZE) {
        return this.giveBack('an IOTLB request vanished between peek and read', true);
      }
      const invalidate = req.iotlbType === IotlbType.INVALIDATE;
      if (invalidate) {
        this.sink.invalidate(req.iova, req.size);
        this.applied.push(IotlbOp.Invalidate, req.iova, req.size, 0, 0);
      } else {
        this.sink.update(req.iova, req.size, req.uaddr, req.perm);
        this.applied.push(IotlbOp.Update, req.iova, req.size, req.uaddr, req.perm);
      }
      this.handled++;
      if (!req.needsReply) continue;
      if (!this.ack()) return this.giveBack('could not send the IOTLB_MSG ack', true);
      (invalidate ? this.invalidateAcks : this.updateAcks).record((performance.now() - seenAt) * 1000);
    }
    return true;
  }

  private ack(): boolean {
    try {
      return sendMessage(this.fd, ACK) === ACK.length;
    } catch {
      return false; // EPIPE: the front-end is gone
    }
  }

  private giveBack(reason: string, fatal = false): false {
    this.fd = -1;
    this.returned = { reason, fatal };
    return false;
  }
}

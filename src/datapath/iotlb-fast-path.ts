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
 * fds. It reads exactly one such request's bytes, one recvmsg per request: a peek first
 * would cost a syscall on every round trip. Whatever else that read brings (another request,
 * a part of one, fds, which Linux delivers with the last byte of their send and stops after)
 * goes back with the socket to the session as `readAhead`, which frames it before it reads
 * on; so do end of stream, a socket error and having no room to report back. The session
 * handles all of that with the full decoder and handlers and lends the socket again once idle.
 * What the worker applied goes back through a ring to the main thread's IOTLB shadow
 * (for inspect, and what a worker started later begins with).
 */
import { decodePlainIotlb, encodeMessage, FrontendRequest, IOTLB_FRAME_SIZE, IotlbType, plainIotlbRequest } from '../protocol/index.js';
import { closeFd, receiveMessage, sendMessage, type Received } from '../sys/index.js';
import type { LatencyHistogram } from '../stats/latency.js';
import { IotlbOp, type IotlbOpSink, type IotlbRingProducer } from './iotlb-ring.js';

const ACK = encodeMessage({ channel: 'frontend', request: FrontendRequest.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n } });

export interface SocketReturn {
  /** Why the worker gave the socket back. */
  reason: string;
  /** The connection cannot go on (an ack could not be sent): the session closes it. */
  fatal: boolean;
  /** What was read but not taken: the session frames it before reading the socket again. */
  readAhead?: { bytes: Uint8Array; fds: number[] };
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
   * must go back (see `returned`, and its readAhead). A thread that polls the socket itself
   * passes 1: its poll says whether more came, and the look that would find none is a
   * syscall saved.
   */
  poll(limit = Infinity): boolean {
    const fd = this.fd;
    const req = this.request;
    for (let n = 0; n < limit; n++) {
      // Checked before the read, so a request that could not be reported stays queued.
      if (this.applied.full) return this.giveBack('applied operations not yet collected');
      let got: Received | null;
      try {
        got = receiveMessage(fd, this.frame, 0, IOTLB_FRAME_SIZE);
      } catch (err) {
        // Truncated fds (closed on arrival) leave the stream without a message boundary.
        const code = (err as NodeJS.ErrnoException).code;
        return this.giveBack(`socket error: ${(err as Error).message}`, code === 'ECTRUNC');
      }
      if (got === null) return true;
      if (got.bytes === 0) {
        for (const passed of got.fds) closeFd(passed);
        return this.giveBack('end of stream');
      }
      const seenAt = performance.now();
      if (got.fds.length > 0) return this.giveBack('a message with fds', false, got);
      if (got.bytes < IOTLB_FRAME_SIZE || !decodePlainIotlb(this.frame, req, this.view)) return this.giveBack('not a plain IOTLB request', false, got);
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

  /** Lets go of the socket; `read` (what the last recvmsg brought) goes back with it. */
  private giveBack(reason: string, fatal = false, read?: Received): false {
    this.fd = -1;
    this.returned = read ? { reason, fatal, readAhead: { bytes: this.frame.slice(0, read.bytes), fds: read.fds } } : { reason, fatal };
    return false;
  }
}

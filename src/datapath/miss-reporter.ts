/**
 * Sends IOTLB MISS (and ACCESS_FAIL) requests to the front-end over the backend channel,
 * straight from the worker: the message is 44 bytes, so one sendmsg is atomic on a Unix
 * stream socket even with several workers sharing it, and no round trip through the main
 * thread delays the answer. Nothing waits for a reply — the burst has already stopped and
 * the worker goes on with its other queues (DPDK 17.11's non-blocking design).
 */
import { BackendRequest, encodeMessage, IotlbType } from '../protocol/index.js';
import { sendMessage } from '../sys/index.js';

/** The backend-channel IOTLB request (MISS or ACCESS_FAIL) for `iova`. */
export function encodeIotlbRequest(iotlbType: number, iova: number, perm: number): Uint8Array {
  return encodeMessage({
    channel: 'backend', request: BackendRequest.IOTLB_MSG,
    body: { kind: 'iotlb', iova: BigInt(iova), size: 0n, userAddr: 0n, perm, iotlbType },
  });
}

/**
 * Told about every request actually sent (for `serve --trace`), with what `clock` read just
 * before sending: read after, a worker preempted there stamped its miss after the UPDATE
 * that answered it.
 */
export interface SentListener {
  clock(): number;
  sent(queue: number, iotlbType: number, iova: number, perm: number, at: number): void;
}

export class MissReporter {
  /** Misses that could not be sent (no backend channel, or its buffer full). */
  unsent = 0;
  onSent: SentListener | null = null;

  constructor(public backendFd: number) {}

  private send(queue: number, iotlbType: number, iova: number, perm: number): boolean {
    if (this.backendFd < 0) {
      this.unsent++;
      return false;
    }
    const bytes = encodeIotlbRequest(iotlbType, iova, perm);
    const at = this.onSent?.clock() ?? 0;
    try {
      if (sendMessage(this.backendFd, bytes) === bytes.length) {
        this.onSent?.sent(queue, iotlbType, iova, perm, at);
        return true;
      }
    } catch {
      // The channel is gone (front-end closed it); the main thread will notice the disconnect.
    }
    this.unsent++;
    return false;
  }

  miss(queue: number, iova: number, perm: number): boolean {
    return this.send(queue, IotlbType.MISS, iova, perm);
  }

  accessFail(queue: number, iova: number, perm: number): boolean {
    return this.send(queue, IotlbType.ACCESS_FAIL, iova, perm);
  }
}

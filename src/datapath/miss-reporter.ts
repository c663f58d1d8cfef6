/**
 * Sends IOTLB MISS (and ACCESS_FAIL) requests to the front-end over the backend channel,
 * straight from the worker: the message is 44 bytes, so one sendmsg is atomic on a Unix
 * stream socket even with several workers sharing it, and no round trip through the main
 * thread delays the answer. Nothing waits for a reply — the burst has already stopped and
 * the worker goes on with its other queues (DPDK 17.11's non-blocking design).
 *
 * Inside a burst the requests are held (hold() .. release()) and sent once the worker is
 * quiescent: a send wakes the front-end's thread, which Linux often runs on this CPU at
 * once, and a worker preempted inside its burst would make every INVALIDATE acked meanwhile
 * wait for it (iotlb-ring.ts). Held, the requests cost nothing but four numbers each.
 */
import { BackendRequest, encodeMessage, HEADER_SIZE, IotlbType } from '../protocol/index.js';
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

/** Where the IOTLB body's fields sit in a request (header, then iova u64, size u64, uaddr u64, perm u8, type u8). */
const IOVA_AT = HEADER_SIZE;
const PERM_AT = HEADER_SIZE + 24;
const TYPE_AT = HEADER_SIZE + 25;

/** Requests held per burst before the rest go out at once (a batch sends at most 129 per ring). */
const HELD_MAX = 256;
/** Numbers per held request: queue, iotlbType, iova, perm. */
const HELD_FIELDS = 4;

export class MissReporter {
  /** Misses that could not be sent (no backend channel, or its buffer full). */
  unsent = 0;
  onSent: SentListener | null = null;
  private holding = false;
  private heldCount = 0;
  private readonly held = new Float64Array(HELD_MAX * HELD_FIELDS);
  /** The request as the codec encodes it; sendNow() rewrites iova, perm and type in place. */
  private readonly message = encodeIotlbRequest(IotlbType.MISS, 0, 0);
  private readonly messageView = new DataView(this.message.buffer, this.message.byteOffset, this.message.byteLength);

  constructor(public backendFd: number) {}

  /** A burst begins: requests wait for release(). */
  hold(): void {
    this.holding = true;
  }

  /** The burst is over and the worker quiescent: sends what it held, in order. */
  release(): void {
    this.holding = false;
    const held = this.held;
    for (let i = 0; i < this.heldCount; i++) {
      const k = i * HELD_FIELDS;
      this.sendNow(held[k], held[k + 1], held[k + 2], held[k + 3]);
    }
    this.heldCount = 0;
  }

  /**
   * Forgets the held requests of a ring that is stopping: the front-end stops its device
   * before it asks for the ring's base, and a miss that arrives after that can only be
   * refused (QEMU: "Unexpected IOTLB message when virtio device is stopped").
   */
  discard(queue: number): void {
    const held = this.held;
    let kept = 0;
    for (let i = 0; i < this.heldCount; i++) {
      const k = i * HELD_FIELDS;
      if (held[k] === queue) continue;
      held.copyWithin(kept * HELD_FIELDS, k, k + HELD_FIELDS);
      kept++;
    }
    this.heldCount = kept;
  }

  /** Queued or sent: false only when there is no channel to send it on. */
  private send(queue: number, iotlbType: number, iova: number, perm: number): boolean {
    if (this.backendFd < 0) {
      this.unsent++;
      return false;
    }
    if (this.holding && this.heldCount < HELD_MAX) {
      const k = this.heldCount++ * HELD_FIELDS;
      this.held[k] = queue;
      this.held[k + 1] = iotlbType;
      this.held[k + 2] = iova;
      this.held[k + 3] = perm;
      return true;
    }
    return this.sendNow(queue, iotlbType, iova, perm);
  }

  private sendNow(queue: number, iotlbType: number, iova: number, perm: number): boolean {
    if (this.backendFd < 0) {
      this.unsent++;
      return false;
    }
    // One buffer, patched per request: a strict guest costs a miss per frame.
    const bytes = this.message;
    const view = this.messageView;
    view.setUint32(IOVA_AT, iova >>> 0, true);
    view.setUint32(IOVA_AT + 4, Math.floor(iova / 4294967296), true);
    view.setUint8(PERM_AT, perm);
    view.setUint8(TYPE_AT, iotlbType);
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

/**
 * Loopback: every frame the guest transmits comes back on the same pair's RX queue with
 * the source and destination MAC addresses swapped. The TX buffer is copied straight
 * into the RX buffer (one copy, no bounce buffer). When RX has no room (or misses in the
 * IOTLB) the TX chain is left unconsumed: backpressure, no loss.
 */
import type { Endpoint } from './endpoint.js';
import type { ScatterList } from '../virtqueue/scatter.js';
import { receiveFrame, RX_DONE, RX_DROPPED, type NetQueue } from './virtio-net.js';

export class LoopbackEndpoint implements Endpoint {
  /** Result of the last receiveFrame (RX_*), to tell backpressure from a miss or a broken RX queue. */
  lastResult = RX_DONE;
  readonly polls = false;
  readonly readableFd = -1;
  readonly feedsReceive = true;

  constructor(readonly rxq: NetQueue) {}

  transmit(sg: ScatterList, first: number, len: number): boolean {
    const r = receiveFrame(this.rxq, sg, first, len, true);
    this.lastResult = r;
    // A frame too big for a non-mergeable RX chain can never fit: drop it (counted on RX).
    return r === RX_DONE || r === RX_DROPPED;
  }

  flush(): void {
    this.rxq.finish();
  }

  poll(_max: number): number {
    return 0;
  }
}

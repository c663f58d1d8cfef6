/**
 * Loopback: every frame the guest transmits comes back on the same pair's RX queue with
 * the source and destination MAC addresses swapped. The TX buffer is copied straight
 * into the RX buffer (one copy, no bounce buffer). When RX has no room the TX chain is left
 * unconsumed (backpressure, no loss) or, with `whenFull: 'drop'`, the frame is dropped and
 * counted as an RX drop, as a NIC whose receive ring is full would. An IOTLB miss on RX
 * always leaves the chain for later.
 */
import type { Endpoint, LoopbackFull } from './endpoint.js';
import type { ScatterList } from '../virtqueue/scatter.js';
import { NetCounter, receiveFrame, RX_DONE, RX_DROPPED, RX_NO_ROOM, type NetQueue } from './virtio-net.js';

export class LoopbackEndpoint implements Endpoint {
  /** Result of the last receiveFrame (RX_*), to tell backpressure from a miss or a broken RX queue. */
  lastResult = RX_DONE;
  readonly pollBurst = 0;
  readonly readableFd = -1;
  readonly feedsReceive = true;
  readonly whyHeld = 'the RX ring has no room (the front-end does not take frames back); the TX ring waits '
    + '(serve --loopback-full drop drops them instead)';

  constructor(readonly rxq: NetQueue, private readonly whenFull: LoopbackFull = 'hold') {}

  transmit(sg: ScatterList, first: number, len: number): boolean {
    const r = receiveFrame(this.rxq, sg, first, len, true);
    this.lastResult = r;
    if (r === RX_NO_ROOM && this.whenFull === 'drop') {
      this.rxq.counters[NetCounter.drops]++;
      return true;
    }
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

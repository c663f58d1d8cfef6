/**
 * A Linux tap device (opened by the main thread, IFF_TAP|IFF_NO_PI, non-blocking): guest
 * frames are written to it, frames the host sends come back to the guest. One frame buffer
 * each way, allocated once; a frame read while RX has no room waits in it for the next poll.
 */
import { readFd, writeFd } from '../sys/index.js';
import type { Endpoint } from './endpoint.js';
import { ScatterList, copyBytes } from '../virtqueue/scatter.js';
import { wideOf } from '../memory/wide-view.js';
import { receiveFrame, RX_DONE, RX_DROPPED, type NetQueue } from './virtio-net.js';

const MAX_FRAME = 65536;

export class TapEndpoint implements Endpoint {
  private readonly txFrame = new Uint8Array(MAX_FRAME);
  private readonly rxFrame = new Uint8Array(MAX_FRAME);
  /** Wide views of rxFrame, so frames are copied into the guest 8 bytes at a time. */
  private readonly rxWide = wideOf(this.rxFrame);
  private readonly rxPieces = new ScatterList(1);
  /** Length of a frame read from the tap but not yet delivered (0 = none). */
  private heldLength = 0;
  writeErrors = 0;
  readonly polls = true;
  readonly feedsReceive = false;
  readonly whyHeld = 'the host side does not read the tap fast enough; the guest\'s TX waits';

  constructor(private readonly fd: number, private readonly rxq: NetQueue) {}

  get readableFd(): number {
    return this.fd;
  }

  transmit(sg: ScatterList, first: number, len: number): boolean {
    if (len > MAX_FRAME) return true; // cannot be a valid frame: drop
    let at = 0;
    for (let p = first; p < sg.count; p++) {
      copyBytes(this.txFrame, at, sg.bytes[p], sg.offset[p], sg.len[p]);
      at += sg.len[p];
    }
    try {
      // EAGAIN (-1) means the host side is not reading: keep the chain, try again later.
      return writeFd(this.fd, this.txFrame, 0, len) >= 0;
    } catch {
      this.writeErrors++;
      return true; // the interface went down: the frame is lost like on a real link
    }
  }

  flush(): void {}

  poll(max: number): number {
    let delivered = 0;
    while (delivered < max) {
      if (this.heldLength === 0) {
        const n = readFd(this.fd, this.rxFrame, 0, MAX_FRAME);
        if (n <= 0) break;
        this.heldLength = n;
      }
      this.rxPieces.reset();
      this.rxPieces.push(this.rxFrame, 0, this.heldLength, this.rxWide);
      const r = receiveFrame(this.rxq, this.rxPieces, 0, this.heldLength, false);
      if (r !== RX_DONE && r !== RX_DROPPED) break; // no room / miss: the frame waits
      this.heldLength = 0;
      delivered++;
    }
    if (delivered !== 0) this.rxq.finish();
    return delivered;
  }

  /** The fd to wait on while idle. */
  get waitFd(): number {
    return this.fd;
  }
}

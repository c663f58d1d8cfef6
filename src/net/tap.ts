/**
 * A Linux tap device (opened by the main thread, IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, non-blocking,
 * src/serve/net-mode.ts): guest frames are written to it with their virtio-net header, so
 * checksum and segmentation offloads reach the kernel as the guest asked (offloads.ts checked
 * the header first); frames the host sends come back to the guest with the kernel's header,
 * within the receive offloads the guest negotiated (up to 64 KiB segments over mergeable
 * buffers). A guest frame goes out with one writev(2) straight from guest memory, behind a
 * copy of its header (the one that was checked), as QEMU's tap back-end sends it; frames
 * from the host are read into one buffer, allocated once, where a frame read while RX has no
 * room waits for the next poll. Each header is fitted to the guest's receive offloads
 * (offloads.ts fitRxHeader): a frame that needs one it did not negotiate (queued before its
 * TUNSETOFFLOAD) is dropped and counted.
 */
import { readFd, setTapOffload, writevFd, WRITEV_MAX_PIECES } from '../sys/index.js';
import type { Endpoint } from './endpoint.js';
import { ScatterList, copyBytes } from '../virtqueue/scatter.js';
import { wideOf } from '../memory/wide-view.js';
import { NetCounter, receiveFrame, RX_DONE, RX_DROPPED, type NetQueue } from './virtio-net.js';
import { fitRxHeader } from './offloads.js';

/** The vnet header every frame on the tap carries (virtio_net_hdr_mrg_rxbuf: num_buffers unused). */
export const TAP_HEADER_LENGTH = 12;
/** A GSO frame: up to 64 KiB of IP packet, an Ethernet header and a VLAN tag. */
const MAX_FRAME = 65536 + 64;

export class TapEndpoint implements Endpoint {
  /** The header the tap gets with each guest frame: the checked copy's first 10 bytes, num_buffers 0. */
  private readonly txHeader = new Uint8Array(TAP_HEADER_LENGTH);
  private readonly rxFrame = new Uint8Array(TAP_HEADER_LENGTH + MAX_FRAME);
  /** Wide views of rxFrame, so frames are copied into the guest 8 bytes at a time. */
  private readonly rxWide = wideOf(this.rxFrame);
  private readonly rxPieces = new ScatterList(1);
  /** Length of a frame (after its vnet header) read from the tap but not yet delivered (0 = none). */
  private heldLength = 0;
  writeErrors = 0;
  /** Each frame is a read(2): a publish per 32 costs little beside them, and frames reach the guest sooner. */
  readonly pollBurst = 32;
  readonly feedsReceive = false;
  readonly takesHeader = true;
  readonly whyHeld = 'the host side does not read the tap fast enough; the guest\'s TX waits';

  /**
   * `rxOffloads` (TUN_F_*, offloads.ts tunOffloadsOf): what the kernel may hand us for this
   * guest; frames then keep their header (partial checksum, GSO) on the way in.
   */
  constructor(private readonly fd: number, private readonly rxq: NetQueue, private readonly rxOffloads = 0) {
    setTapOffload(fd, TAP_HEADER_LENGTH, rxOffloads);
    rxq.rxHeader = this.rxFrame.subarray(0, TAP_HEADER_LENGTH);
  }

  get readableFd(): number {
    return this.fd;
  }

  transmit(sg: ScatterList, first: number, len: number, header: Uint8Array | null): boolean {
    // Cannot be a valid frame (a Linux guest sends at most 19 pieces): drop.
    if (len > MAX_FRAME || sg.count - first > WRITEV_MAX_PIECES) return true;
    const head = this.txHeader;
    if (header !== null) copyBytes(head, 0, header, 0, 10);
    else head.fill(0, 0, 10);
    try {
      // EAGAIN (-1) means the host side is not reading: keep the chain, try again later.
      return writevFd(this.fd, head, TAP_HEADER_LENGTH, sg.bytes, sg.offset, sg.len, first, sg.count) >= 0;
    } catch {
      this.writeErrors++;
      return true; // the interface went down (or refused the frame): lost as on a real link
    }
  }

  flush(): void {}

  poll(max: number): number {
    let delivered = 0;
    while (delivered < max) {
      if (this.heldLength === 0) {
        const n = readFd(this.fd, this.rxFrame, 0, this.rxFrame.length);
        if (n <= TAP_HEADER_LENGTH) break;
        if (!fitRxHeader(this.rxFrame, this.rxOffloads)) {
          // Queued under an earlier guest's offloads: this guest cannot take what it asks for.
          // Counted against `max` like a frame receiveFrame() drops, so the poll stays bounded.
          this.rxq.counters[NetCounter.drops]++;
          delivered++;
          continue;
        }
        this.heldLength = n - TAP_HEADER_LENGTH; // the header stays in rxFrame: rxq.rxHeader
      }
      this.rxPieces.reset();
      this.rxPieces.push(this.rxFrame, TAP_HEADER_LENGTH, this.heldLength, this.rxWide);
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

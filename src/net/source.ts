/**
 * Source: generates frames of `frameSize` bytes into the pair's RX queue as fast as the
 * guest posts buffers. The frame is built once (Ethernet + IPv4 + UDP, UDP checksum 0);
 * only a 32-bit sequence number in the UDP payload changes per frame.
 */
import type { Endpoint } from './endpoint.js';
import { ScatterList } from '../virtqueue/scatter.js';
import { wideOf } from '../memory/wide-view.js';
import { receiveBurst, type NetQueue } from './virtio-net.js';

export const SOURCE_MIN_FRAME = 46; // 14 Ethernet + 20 IPv4 + 8 UDP + 4 sequence
export const SOURCE_MAX_FRAME = 65535;
/** Offset of the big-endian sequence number in generated frames. */
export const SOURCE_SEQ_OFFSET = 42;

export interface SourceOptions {
  frameSize: number;
  /** Frames to send in all; 0 or absent: no end. */
  count?: number;
  dstMac?: ArrayLike<number>;
  srcMac?: ArrayLike<number>;
}

/**
 * Frames per poll, published together. Each publish ends with a full fence (the interrupt
 * decision needs it), which waits until every store of the burst has reached the driver's
 * core. The copies are 8-byte stores, four times as many per frame as DPDK's 32-byte ones,
 * so that wait is longer here than in DPDK's vhost, and fewer publishes pay: against 32
 * at a time, 64 moved 1.10-1.11x and 128 1.17-1.20x back-end -> guest (serve-ab, split
 * and packed, 1 and 4 pairs). 128 is half of the usual 256-entry ring: the driver refills
 * one half while the other fills. (Linux's vhost-net publishes received buffers 64 at a time.)
 */
const SOURCE_BURST = 128;
/** Bound on the stamped frames' bytes: large frames go fewer at a time. */
const SOURCE_BURST_BYTES = 256 * 1024;

export class SourceEndpoint implements Endpoint {
  readonly frameSize: number;
  /** The frame every generated frame is a copy of (with its own sequence number). */
  readonly template: Uint8Array;
  /** Sequence number of the next frame. */
  seq = 0;
  /** Frames still to send (Infinity: no end). */
  private left: number;
  readonly pollBurst = SOURCE_BURST;
  readonly readableFd = -1;
  readonly feedsReceive = false;
  readonly whyHeld = '';
  /**
   * One burst of copies of the template, 8-byte aligned each so the copies into guest
   * buffers go 8 bytes at a time; each poll stamps their sequence numbers and hands them
   * to receiveBurst(), which fills a run of buffers in one loop.
   */
  private readonly frames: ScatterList;
  private readonly stamps: DataView;
  private readonly stride: number;

  constructor(readonly rxq: NetQueue, opts: SourceOptions) {
    const size = opts.frameSize;
    if (!Number.isInteger(size) || size < SOURCE_MIN_FRAME || size > SOURCE_MAX_FRAME) {
      throw new Error(`source frameSize must be an integer in ${SOURCE_MIN_FRAME}..${SOURCE_MAX_FRAME}, got ${size}`);
    }
    this.frameSize = size;
    this.left = opts.count ? opts.count : Infinity;
    this.template = buildFrame(size, opts.dstMac ?? [0x52, 0x54, 0x00, 0x12, 0x34, 0x56], opts.srcMac ?? [0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
    this.stride = (size + 7) & ~7;
    const count = Math.max(1, Math.min(SOURCE_BURST, Math.floor(SOURCE_BURST_BYTES / this.stride)));
    const burst = new Uint8Array(count * this.stride);
    const wide = wideOf(burst);
    this.frames = new ScatterList(count);
    for (let i = 0; i < count; i++) {
      burst.set(this.template, i * this.stride);
      this.frames.push(burst, i * this.stride, size, wide);
    }
    this.stamps = new DataView(burst.buffer, burst.byteOffset, burst.byteLength);
  }

  transmit(): boolean {
    return true; // a source has no TX side; guest frames are dropped silently
  }

  flush(): void {}

  poll(max: number): number {
    if (max > this.left) max = this.left;
    const burst = this.frames.count;
    const stamps = this.stamps;
    const stride = this.stride;
    let n = 0;
    while (n < max) {
      const m = max - n < burst ? max - n : burst;
      const seq = this.seq;
      for (let i = 0; i < m; i++) stamps.setUint32(i * stride + SOURCE_SEQ_OFFSET, (seq + i) >>> 0); // big-endian
      const moved = receiveBurst(this.rxq, this.frames, m);
      this.seq = (seq + moved) >>> 0;
      n += moved;
      if (moved < m) break;
    }
    this.left -= n;
    return n;
  }
}

function buildFrame(size: number, dst: ArrayLike<number>, src: ArrayLike<number>): Uint8Array {
  const f = new Uint8Array(size);
  for (let i = 0; i < 6; i++) {
    f[i] = dst[i];
    f[6 + i] = src[i];
  }
  f[12] = 0x08; // IPv4
  f[13] = 0x00;
  const ipLen = size - 14;
  f[14] = 0x45;
  f[16] = ipLen >>> 8;
  f[17] = ipLen & 0xff;
  f[22] = 64; // TTL
  f[23] = 17; // UDP
  f.set([198, 18, 0, 1], 26); // benchmark range (RFC 2544)
  f.set([198, 19, 0, 1], 30);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += (f[i] << 8) | f[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const csum = ~sum & 0xffff;
  f[24] = csum >>> 8;
  f[25] = csum & 0xff;
  const udpLen = ipLen - 20;
  f[34] = 0x04; // sport 1024
  f[36] = 0x04; // dport 1025
  f[37] = 0x01;
  f[38] = udpLen >>> 8;
  f[39] = udpLen & 0xff;
  return f;
}

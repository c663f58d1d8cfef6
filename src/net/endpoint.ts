/**
 * The frame endpoint a queue pair is connected to (loopback, sink, source, tap), and what the
 * worker needs to know about it: it asks the endpoint, never which kind it is, so a new
 * endpoint touches only this folder.
 */
import type { ScatterList } from '../virtqueue/scatter.js';

export const LOOPBACK_FULL = ['hold', 'drop'] as const;
export type LoopbackFull = (typeof LOOPBACK_FULL)[number];

/** `serve --net`, as the worker receives it. */
export type NetMode =
  | { kind: 'loopback'; /** A frame RX has no room for: wait for room (default) or drop it. */ whenFull?: LoopbackFull }
  | { kind: 'sink' }
  | { kind: 'source'; frameSize: number; /** Frames per queue pair, 0 = unbounded. */ count: number }
  | { kind: 'tap'; name: string; /** One per queue pair (IFF_MULTI_QUEUE when several). */ fds: number[] };

/** Where TX frames go: all transmitBurst (virtio-net.ts) needs. */
export interface FrameSink {
  /**
   * One guest frame: pieces sg[first .. sg.count) (the first one trimmed past the
   * virtio-net header), `len` bytes in all. The pieces are guest memory and only valid
   * during the call. Return false to refuse it (backpressure): the TX chain stays
   * unconsumed and the burst stops. `header` is the frame's virtio-net header when the sink
   * takes headers (offloads.ts), else null.
   */
  transmit(sg: ScatterList, first: number, len: number, header: Uint8Array | null): boolean;
  /** transmit() wants each frame's virtio-net header (a tap with IFF_VNET_HDR): offloads pass through. */
  readonly takesHeader?: boolean;
  /** End of a TX burst that delivered at least one frame (loopback publishes its RX used ring here). */
  flush(): void;
}

/** Where TX frames go and where RX frames come from. */
export interface Endpoint extends FrameSink {
  /** Put up to `max` frames into the pair's RX queue (sources); returns how many were taken. */
  poll(max: number): number;
  /**
   * Frames the worker asks poll() for per round; 0 when poll() brings none (loopback, sink).
   * Above 0 (source, tap) the worker calls it every round RX can take frames.
   */
  readonly pollBurst: number;
  /** An fd that becomes readable when poll() has frames (tap), for the worker to sleep on; -1 if none. */
  readonly readableFd: number;
  /**
   * transmit() writes into the pair's own RX queue (loopback): TX runs only while RX can take
   * frames, and RX's IOTLB misses happen inside the TX burst.
   */
  readonly feedsReceive: boolean;
  /** Why transmit() refuses frames, for the one log line the first refusal gets ('' if it never does). */
  readonly whyHeld: string;
}

/**
 * The frame endpoint a queue pair is connected to (loopback, sink, source, tap).
 */
import type { ScatterList } from '../virtqueue/scatter.js';

/** Where TX frames go and where RX frames come from. */
export interface Endpoint {
  /**
   * One guest frame: pieces sg[first .. sg.count) (the first one trimmed past the
   * virtio-net header), `len` bytes in all. The pieces are guest memory and only valid
   * during the call. Return false to refuse it (backpressure): the TX chain stays
   * unconsumed and the burst stops.
   */
  transmit(sg: ScatterList, first: number, len: number): boolean;
  /** End of a TX burst that delivered at least one frame (loopback publishes its RX used ring here). */
  flush(): void;
  /** Put up to `max` frames into the pair's RX queue (sources); returns how many were taken. */
  poll(max: number): number;
}


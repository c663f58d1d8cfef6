/** The one place an endpoint is built from `serve --net`. */
import type { Endpoint, NetMode } from './endpoint.js';
import { LoopbackEndpoint } from './loopback.js';
import { SinkEndpoint } from './sink.js';
import { SourceEndpoint } from './source.js';
import { TapEndpoint } from './tap.js';
import type { NetQueue } from './virtio-net.js';

/**
 * The endpoint of queue pair `pairIndex` for `net`, delivering into its RX queue `rx`;
 * `rxOffloads` (TUN_F_*): what a tap may hand this guest.
 */
export function createEndpoint(net: NetMode, rx: NetQueue, rxOffloads = 0, pairIndex = 0): Endpoint {
  switch (net.kind) {
    case 'loopback': return new LoopbackEndpoint(rx, net.whenFull);
    case 'source': return new SourceEndpoint(rx, { frameSize: net.frameSize, count: net.count });
    case 'tap': return new TapEndpoint(net.fds[pairIndex]!, rx, rxOffloads);
    case 'sink': return new SinkEndpoint();
  }
}

/** Sink: counts every transmitted frame and drops it without touching its bytes. */
import type { Endpoint } from './endpoint.js';
import type { ScatterList } from '../virtqueue/scatter.js';

export class SinkEndpoint implements Endpoint {
  frames = 0;
  bytes = 0;
  readonly pollBurst = 0;
  readonly readableFd = -1;
  readonly feedsReceive = false;
  readonly whyHeld = '';

  transmit(_sg: ScatterList, _first: number, len: number): boolean {
    this.frames++;
    this.bytes += len;
    return true;
  }

  flush(): void {}

  poll(_max: number): number {
    return 0;
  }
}

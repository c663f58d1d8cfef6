/**
 * serve's device code run in the benchmark's own thread against the repo's front-end, for
 * figures without threads or syscalls in the way: the front-end's guest memory as one region,
 * a split RX and TX queue over its rings, and a loopback endpoint between them.
 */
import type { VhostUserFrontend } from '../test/support/frontend/frontend.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { GuestPhysicalSpace, UserAddressSpace } from '../src/memory/address-space.js';
import { SplitQueue, RING_OK } from '../src/virtqueue/split.js';
import { NetQueue } from '../src/net/virtio-net.js';
import { LoopbackEndpoint } from '../src/net/loopback.js';

export interface InProcessDevice {
  memory: GuestMemory;
  rxq: NetQueue;
  txq: NetQueue;
  loopback: LoopbackEndpoint;
}

/** The device over a detached front-end's rings (queue size 256, its memory at guest address 0). */
export function inProcessDevice(fe: VhostUserFrontend): InProcessDevice {
  const memory = new GuestMemory();
  memory.addRegion({ guestAddr: 0, userAddr: fe.opts.uaddrBase, size: fe.memoryBytes, mmapOffset: 0, bytes: fe.memory });
  const queue = (r: typeof fe.rx): NetQueue => {
    const q = new SplitQueue();
    const st = q.configure({
      size: 256, descAddr: fe.opts.uaddrBase + r.layout.descAddr, availAddr: fe.opts.uaddrBase + r.layout.availAddr,
      usedAddr: fe.opts.uaddrBase + r.layout.usedAddr, ringSpace: new UserAddressSpace(memory), dataSpace: new GuestPhysicalSpace(memory),
      eventIdx: false, lastAvailIdx: 0,
    });
    if (st !== RING_OK) throw new Error('in-process device: rings did not map');
    return new NetQueue(q, { headerLength: 12, mergeable: r === fe.rx });
  };
  const rxq = queue(fe.rx);
  const txq = queue(fe.tx);
  return { memory, rxq, txq, loopback: new LoopbackEndpoint(rxq) };
}

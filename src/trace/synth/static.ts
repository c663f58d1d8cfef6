/** Static scenarios: DPDK in the guest maps its hugepage area once, then forwards packets. */
import { IotlbPerm } from '../../protocol/index.js';
import type { Prng } from '../../iotlb/prng.js';
import type { Emitter } from './emitter.js';
import { BURST, DPDK_BASE, GiB, KiB, MBUF_HDR_OFFSET, MBUF_STRIDE, MiB, NET_HDR, QEMU_RAM_HVA, READ, WRITE, contiguousRuns, deviceDescriptor, packetLength, ringAt, ringBytes } from './layout.js';
import type { ResolvedOptions } from './options.js';


export function runStatic(e: Emitter, rng: Prng, unit: number, o: ResolvedOptions): void {
  const area = Math.ceil((o.guestMib * MiB) / unit) * unit;
  const pages = area / unit;
  // Hugepages come from anywhere in guest RAM (twice the area, at least area + 1 GiB), but the
  // kernel reserves them at boot from free memory in long physically contiguous runs: DPDK's
  // IOVA-contiguous hugepage segments are mapped in order, so neighbouring IOVAs usually
  // have neighbouring guest-physical (and so QEMU-virtual) addresses. That contiguity is what
  // lets a coalescing cache merge 2 MiB entries (the "merge contiguous entries" patch of DPDK 17.11's IOTLB series).
  const ramUnits = Math.max(pages * 2, pages + GiB / unit);
  const gpaOf = contiguousRuns(rng, ramUnits, pages);
  e.tick(5_000, 20_000);
  for (let i = 0; i < pages; i++) {
    e.update(DPDK_BASE + i * unit, unit, QEMU_RAM_HVA + gpaOf[i]! * unit, IotlbPerm.RW);
    e.tick(500, 2_000);
  }

  const vqs = o.queues * 2;
  // DPDK memzones. DPDK's malloc heap carves each allocation from the END of a free element,
  // so the rings and mbuf pools of a DPDK guest sit at the top of the hugepage area: a cache
  // kept sorted by IOVA and searched from the bottom (DPDK 17.11) walks past almost every
  // entry before finding them — which is why 2 MiB pages hurt in DPDK 17.11's IOTLB measurements.
  const ringStride = Math.ceil(ringBytes(o.ringSize) / (16 * KiB)) * 16 * KiB;
  const ringRegion = Math.ceil((vqs * ringStride) / (64 * KiB)) * 64 * KiB;
  const top = DPDK_BASE + area;
  const rings = Array.from({ length: vqs }, (_, i) => ringAt(top - ringRegion + i * ringStride, o.ringSize));
  const poolBytes = Math.floor((area - ringRegion) / o.queues / MBUF_STRIDE) * MBUF_STRIDE;
  const mbufsPerPool = Math.min(poolBytes / MBUF_STRIDE, 8191);
  if (mbufsPerPool < o.ringSize * 2 + BURST) {
    throw new RangeError(`--guest-mib ${o.guestMib} is too small for ${o.queues} queue pair(s) of ${o.ringSize} descriptors`);
  }
  const poolSpan = mbufsPerPool * MBUF_STRIDE;
  const mbufAddr = (q: number, m: number): number => top - ringRegion - (q + 1) * poolSpan + m * MBUF_STRIDE + MBUF_HDR_OFFSET;

  interface Pair {
    free: number[]; // mempool (cache) as a LIFO stack
    rxSlots: number[]; // mbuf posted in each RX slot
    rxNext: number;
    txNext: number;
    txDone: number[]; // transmitted, freed at the next TX burst (virtio PMD cleans up lazily)
  }
  const pairs: Pair[] = [];
  for (let q = 0; q < o.queues; q++) {
    const free: number[] = [];
    for (let m = mbufsPerPool - 1; m >= 0; m--) free.push(m);
    const rxSlots = Array.from({ length: o.ringSize }, () => free.pop()!);
    pairs.push({ free, rxSlots, rxNext: 0, txNext: 0, txDone: [] });
  }

  e.tick(50_000, 100_000);
  let received = 0;
  while (received < o.packets) {
    const q = o.queues === 1 ? 0 : rng.below(o.queues);
    const pair = pairs[q]!;
    const rxVq = 2 * q;
    const txVq = 2 * q + 1;
    const burst = Math.min(o.packets - received, rng.below(4) === 0 ? 1 + rng.below(BURST) : BURST);
    // Device -> guest: fill `burst` posted RX buffers.
    e.translate(rxVq, rings[rxVq]!.avail + 2, 2, READ);
    const got: Array<{ mbuf: number; length: number }> = [];
    for (let i = 0; i < burst; i++) {
      const slot = pair.rxNext++ % o.ringSize;
      const mbuf = pair.rxSlots[slot]!;
      const length = NET_HDR + packetLength(rng);
      deviceDescriptor(e, rxVq, rings[rxVq]!, slot, mbufAddr(q, mbuf), length, WRITE);
      got.push({ mbuf, length });
      pair.rxSlots[slot] = -1;
    }
    e.translate(rxVq, rings[rxVq]!.used + 2, 2, WRITE);
    e.tick(500, 3_000);
    // The guest (testpmd io forwarding) sends them straight back; refills RX from its cache.
    for (const m of pair.txDone) pair.free.push(m);
    pair.txDone = [];
    for (let i = 0; i < burst; i++) {
      const slot = (pair.rxNext - burst + i) % o.ringSize;
      pair.rxSlots[slot] = pair.free.pop()!;
    }
    e.translate(txVq, rings[txVq]!.avail + 2, 2, READ);
    for (const { mbuf, length } of got) {
      const slot = pair.txNext++ % o.ringSize;
      deviceDescriptor(e, txVq, rings[txVq]!, slot, mbufAddr(q, mbuf), length, READ);
      pair.txDone.push(mbuf);
    }
    e.translate(txVq, rings[txVq]!.used + 2, 2, WRITE);
    received += burst;
    e.tick(200, 5_000);
  }
}

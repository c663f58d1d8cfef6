/** The dynamic scenario: Linux virtio-net with a strict IOMMU maps and unmaps every buffer. */
import { IotlbPerm } from '../../protocol/index.js';
import type { Prng } from '../../iotlb/prng.js';
import type { Emitter } from './emitter.js';
import { KiB, MiB, NET_HDR, PAGE, QEMU_RAM_HVA, READ, WRITE, deviceDescriptor, packetLength, ringAt, ringBytes, type Ring } from './layout.js';
import type { ResolvedOptions } from './options.js';
import { IovaAllocator } from './iova-allocator.js';

interface Mapping {
  /** IOVA of the first byte of the buffer. */
  iova: number;
  /** Page-aligned start and page count of the IOVA range allocated for it. */
  base: number;
  pages: number;
  length: number;
}

export function runDynamic(e: Emitter, rng: Prng, o: ResolvedOptions): void {
  const ramPages = Math.max(1, Math.floor((o.guestMib * MiB) / PAGE));
  const iovas = new IovaAllocator();
  /** The guest's IOMMU page table: IOVA page -> guest-physical page and permission. */
  const pageTable = new Map<number, { gpaPage: number; perm: number }>();

  const map = (gpa: number, length: number, perm: number): Mapping => {
    const offset = gpa % PAGE;
    const pages = Math.ceil((offset + length) / PAGE);
    const base = iovas.alloc(pages);
    const firstGpaPage = Math.floor(gpa / PAGE);
    for (let i = 0; i < pages; i++) pageTable.set(base / PAGE + i, { gpaPage: (firstGpaPage + i) % ramPages, perm });
    return { iova: base + offset, base, pages: 1 << IovaAllocator.orderFor(pages), length };
  };
  const unmap = (m: Mapping): void => {
    for (let i = 0; i < m.pages; i++) pageTable.delete(m.base / PAGE + i);
    e.tick(300, 1_500);
    // Strict mode: the guest invalidates its IOMMU at once and QEMU forwards it.
    e.invalidate(m.base, m.pages * PAGE);
    iovas.free(m.base, m.pages);
  };
  // The front-end's answer to a MISS: walk the guest IOMMU page table, send a 4 KiB UPDATE.
  const onMiss = (iova: number, access: number): void => {
    e.missMessage(iova, access);
    e.tick(8_000, 30_000);
    const page = Math.floor(iova / PAGE);
    const pte = pageTable.get(page);
    if (!pte) throw new Error(`synth: device touched unmapped IOVA 0x${iova.toString(16)}`);
    e.update(page * PAGE, PAGE, QEMU_RAM_HVA + pte.gpaPage * PAGE, pte.perm);
  };

  const randomGpa = (align: number): number => rng.below(ramPages) * PAGE + Math.floor(rng.below(PAGE) / align) * align;
  // RX buffers: page_frag chunks of 1536 bytes out of 32 KiB frags.
  let frag = 0;
  let fragLeft = 0;
  const rxBufferGpa = (): number => {
    if (fragLeft < 1536) {
      frag = Math.floor(rng.below(ramPages) / 8) * 8 * PAGE;
      fragLeft = 32 * KiB;
    }
    const gpa = frag + (32 * KiB - fragLeft);
    fragLeft -= 1536;
    return gpa;
  };

  // Driver init: rings from dma_alloc_coherent (RW, never unmapped), then fill the RX rings.
  const vqs = o.queues * 2;
  const rings: Ring[] = [];
  for (let vq = 0; vq < vqs; vq++) {
    const bytes = ringBytes(o.ringSize);
    const m = map(rng.below(Math.max(1, ramPages - bytes / PAGE)) * PAGE, bytes, IotlbPerm.RW);
    rings.push(ringAt(m.iova, o.ringSize));
  }
  interface Pair {
    rx: Mapping[];
    rxNext: number;
    txNext: number;
    txInFlight: Mapping[];
  }
  const pairs: Pair[] = [];
  for (let q = 0; q < o.queues; q++) {
    const rx = Array.from({ length: o.ringSize }, () => map(rxBufferGpa(), 1536, IotlbPerm.WO));
    pairs.push({ rx, rxNext: 0, txNext: 0, txInFlight: [] });
  }

  e.tick(50_000, 100_000);
  let done = 0;
  while (done < o.packets) {
    const q = o.queues === 1 ? 0 : rng.below(o.queues);
    const pair = pairs[q]!;
    const burst = Math.min(o.packets - done, 1 + rng.below(8));
    if (rng.below(2) === 0) {
      // RX: the device fills posted buffers; NAPI then unmaps each and refills its slot.
      const vq = 2 * q;
      e.translate(vq, rings[vq]!.avail + 2, 2, READ, onMiss);
      const slots: number[] = [];
      for (let i = 0; i < burst; i++) {
        const slot = pair.rxNext++ % o.ringSize;
        deviceDescriptor(e, vq, rings[vq]!, slot, pair.rx[slot]!.iova, NET_HDR + packetLength(rng), WRITE, onMiss);
        slots.push(slot);
      }
      e.translate(vq, rings[vq]!.used + 2, 2, WRITE, onMiss);
      e.tick(1_000, 5_000);
      for (const slot of slots) {
        unmap(pair.rx[slot]!);
        pair.rx[slot] = map(rxBufferGpa(), 1536, IotlbPerm.WO);
      }
    } else {
      // TX: free what completed earlier (unmap), map the new skbs, the device reads them.
      const vq = 2 * q + 1;
      for (const m of pair.txInFlight) unmap(m);
      pair.txInFlight = [];
      const posted: Mapping[] = [];
      for (let i = 0; i < burst; i++) {
        const length = NET_HDR + packetLength(rng);
        posted.push(map(randomGpa(64), length, IotlbPerm.RO));
      }
      e.tick(500, 2_000);
      e.translate(vq, rings[vq]!.avail + 2, 2, READ, onMiss);
      for (const m of posted) {
        const slot = pair.txNext++ % o.ringSize;
        deviceDescriptor(e, vq, rings[vq]!, slot, m.iova, m.length, READ, onMiss);
      }
      e.translate(vq, rings[vq]!.used + 2, 2, WRITE, onMiss);
      pair.txInFlight = posted;
    }
    done += burst;
    e.tick(1_000, 10_000);
  }
  // Reclaim the last transmitted buffers so every TX mapping is invalidated after use.
  for (const pair of pairs) for (const m of pair.txInFlight) unmap(m);
}

/**
 * The guest a synthetic trace pretends to be: address constants (QEMU's RAM, DPDK's hugepage
 * area and mbufs), split-ring layout, packet sizes, and the device's accesses for one
 * descriptor.
 */
import type { Prng } from '../../iotlb/prng.js';
import { Access } from '../../iotlb/strategy.js';
import type { Emitter } from './emitter.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const PAGE = 4 * KiB;
/** Where QEMU's guest RAM starts in its own address space (front-end user addresses). */
export const QEMU_RAM_HVA = 0x7f00_0000_0000;
/** DPDK IOVA-as-VA base of the hugepage area. */
export const DPDK_BASE = 0x1_0000_0000;
/** DPDK mbuf object stride: mempool header + rte_mbuf + 128 headroom + 2048 data room. */
export const MBUF_STRIDE = 2432;
/** Offset of the virtio-net header in an mbuf object (it sits in the headroom, before the data). */
export const MBUF_HDR_OFFSET = 64 + 128 + 128 - 12;
export const NET_HDR = 12;
export const BURST = 32;

/** vhost-user access bits (src/iotlb/strategy.ts Access). */
export const READ = Access.Read;
export const WRITE = Access.Write;

/** Packet sizes: simple IMIX (64 / 594 / 1518 roughly 7:4:1) plus some uniform 64..1518. */
export function packetLength(rng: Prng): number {
  const p = rng.below(100);
  if (p < 55) return 64;
  if (p < 85) return 594;
  if (p < 95) return 1518;
  return 64 + rng.below(1518 - 64 + 1);
}


/** `count` distinct units out of `total`, in runs of 8..64 consecutive units that start at random free places. */
export function contiguousRuns(rng: Prng, total: number, count: number): number[] {
  const used = new Uint8Array(total);
  const out: number[] = [];
  while (out.length < count) {
    let at = rng.below(total);
    const run = Math.min(count - out.length, 8 + rng.below(57));
    for (let i = 0; i < run && out.length < count; i++, at = (at + 1) % total) {
      while (used[at]) at = (at + 1) % total;
      used[at] = 1;
      out.push(at);
    }
  }
  return out;
}

export interface Ring {
  desc: number;
  avail: number;
  used: number;
}
/** Split ring layout: desc (16 B each) | avail (4 + 2n + 2) | used (4 + 8n + 2) at the next page. */
export function ringAt(base: number, size: number): Ring {
  const avail = base + 16 * size;
  const used = Math.ceil((avail + 4 + 2 * size + 2) / PAGE) * PAGE;
  return { desc: base, avail, used };
}
/** Bytes a split ring of `size` entries spans (page rounded). */
export function ringBytes(size: number): number {
  const r = ringAt(0, size);
  return Math.ceil((r.used + 4 + 8 * size + 2) / PAGE) * PAGE;
}

/**
 * The device's side of one descriptor: read the avail entry and the descriptor, touch the
 * buffer, write the used entry.
 */
export function deviceDescriptor(
  e: Emitter, vq: number, ring: Ring, slot: number, buffer: number, length: number, access: number,
  onMiss?: (iova: number, access: number) => void,
): void {
  e.translate(vq, ring.avail + 4 + slot * 2, 2, READ, onMiss);
  e.translate(vq, ring.desc + slot * 16, 16, READ, onMiss);
  e.translate(vq, buffer, length, access, onMiss);
  e.translate(vq, ring.used + 4 + slot * 8, 8, WRITE, onMiss);
}

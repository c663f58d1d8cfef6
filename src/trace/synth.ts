/**
 * Seeded generators of synthetic traces: vhost-user IOTLB_MSG traffic (real encoded bytes)
 * plus the datapath translations a back-end would perform, each tagged with the result an
 * exact, unbounded reference IOTLB gives at that moment. The scenarios are documented in
 * docs/trace-format.md ("Synthetic scenarios"); the same options and seed always give the
 * same bytes.
 */
import { BackendRequest, FrontendRequest, IotlbPerm, IotlbType, encodeMessage } from '../protocol/index.js';
import { Prng } from '../iotlb/prng.js';
import { ReferenceIotlb, referenceAnswer } from '../iotlb/reference.js';
import { LOOKUP_MISS } from '../iotlb/strategy.js';
import { TraceFlags, TranslationResultCode } from './format.js';
import type { TraceChannel, TraceDirection } from './records.js';
import { TraceWriter } from './writer.js';

export type ScenarioName = 'static-1g' | 'static-2m' | 'static-4k' | 'dynamic' | 'multiqueue';

export interface ScenarioInfo {
  name: ScenarioName;
  summary: string;
  defaults: { packets: number; queues: number; guestMib: number };
}

export const SCENARIOS: readonly ScenarioInfo[] = [
  { name: 'static-1g', summary: 'DPDK guest, 1 GiB IOMMU pages: whole hugepage area mapped RW once at start, then ring and mbuf lookups (all hits)',
    defaults: { packets: 10_000, queues: 1, guestMib: 1024 } },
  { name: 'static-2m', summary: 'DPDK guest, 2 MiB IOMMU pages: whole hugepage area mapped RW once at start, then ring and mbuf lookups (all hits)',
    defaults: { packets: 10_000, queues: 1, guestMib: 1024 } },
  { name: 'static-4k', summary: 'DPDK guest, 4 KiB IOMMU pages: whole area mapped RW page by page at start (many entries), then lookups (all hits)',
    defaults: { packets: 10_000, queues: 1, guestMib: 64 } },
  { name: 'dynamic', summary: 'Linux virtio-net with a strict IOMMU: per-packet map (miss, MISS, UPDATE, hit) and unmap (INVALIDATE), top-down IOVA allocator with LIFO caches',
    defaults: { packets: 10_000, queues: 1, guestMib: 1024 } },
  { name: 'multiqueue', summary: 'like static-2m with several queue pairs, bursts interleaved across queues',
    defaults: { packets: 10_000, queues: 4, guestMib: 1024 } },
];

export const SCENARIO_NAMES = SCENARIOS.map((s) => s.name);

export interface SynthOptions {
  scenario: ScenarioName;
  /** PRNG seed (default 1). */
  seed?: number;
  /** Packets the guest receives (static: each is forwarded back, testpmd io-fwd style; dynamic: RX or TX). */
  packets?: number;
  /** Queue pairs (RX queue 2q, TX queue 2q+1). */
  queues?: number;
  /** Static: size of the DPDK hugepage area; dynamic: guest RAM size. */
  guestMib?: number;
  /** Descriptors per ring (default 256). */
  ringSize?: number;
}

export interface SynthSummary {
  scenario: ScenarioName;
  seed: number;
  packets: number;
  queues: number;
  guestMib: number;
  messages: number;
  translations: number;
  hits: number;
  misses: number;
  updates: number;
  invalidates: number;
  iotlbMissMessages: number;
  durationNs: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const PAGE = 4 * KiB;
/** Where QEMU's guest RAM starts in its own address space (front-end user addresses). */
const QEMU_RAM_HVA = 0x7f00_0000_0000;
/** DPDK IOVA-as-VA base of the hugepage area. */
const DPDK_BASE = 0x1_0000_0000;
/** DPDK mbuf object stride: mempool header + rte_mbuf + 128 headroom + 2048 data room. */
const MBUF_STRIDE = 2432;
/** Offset of the virtio-net header in an mbuf object (it sits in the headroom, before the data). */
const MBUF_HDR_OFFSET = 64 + 128 + 128 - 12;
const NET_HDR = 12;
const BURST = 32;

const READ = 1;
const WRITE = 2;

/** Writes records, keeps the clock and the counters. */
class Emitter {
  t = 0;
  readonly summary: Omit<SynthSummary, 'scenario' | 'seed' | 'packets' | 'queues' | 'guestMib'> = {
    messages: 0, translations: 0, hits: 0, misses: 0, updates: 0, invalidates: 0, iotlbMissMessages: 0, durationNs: 0,
  };
  /** What the translation records' results come from: every mapping granted and not revoked. */
  private readonly ref = new ReferenceIotlb();
  private readonly answer = referenceAnswer();

  /** `unit`: the page size translations are split at (a lookup returns at most one page). */
  constructor(readonly writer: TraceWriter, readonly rng: Prng, readonly unit: number) {}

  /** Result code for an access inside one unit. */
  private lookup(iova: number, access: number): number {
    const result = this.ref.lookup(iova, 1, access, this.answer).result;
    return result > 0 ? TranslationResultCode.hit : result === LOOKUP_MISS ? TranslationResultCode.miss : TranslationResultCode.denied;
  }

  /** Advances the clock by lo..hi ns. */
  tick(lo: number, hi: number): void {
    this.t += lo + this.rng.below(hi - lo + 1);
  }

  message(channel: TraceChannel, direction: TraceDirection, bytes: Uint8Array): void {
    this.writer.writeMessage({ timeNs: BigInt(this.t), connection: 0, channel, direction, bytes, fds: [] });
    this.summary.messages++;
  }

  private iotlb(type: number, iova: number, size: number, uaddr: number, perm: number): void {
    this.message('frontend', 'to-backend', encodeMessage({
      channel: 'frontend', request: FrontendRequest.IOTLB_MSG, needsReply: true,
      body: { kind: 'iotlb', iova: BigInt(iova), size: BigInt(size), userAddr: BigInt(uaddr), perm, iotlbType: type },
    }));
    this.tick(1_000, 3_000);
    // REPLY_ACK is negotiated (QEMU requires it with an IOMMU): the back-end acks with 0.
    this.message('frontend', 'to-frontend', encodeMessage({
      channel: 'frontend', request: FrontendRequest.IOTLB_MSG, isReply: true, body: { kind: 'u64', value: 0n },
    }));
  }

  update(iova: number, size: number, uaddr: number, perm: number): void {
    this.iotlb(IotlbType.UPDATE, iova, size, uaddr, perm);
    this.ref.insert(iova, size, uaddr, perm);
    this.summary.updates++;
  }

  invalidate(iova: number, size: number): void {
    this.iotlb(IotlbType.INVALIDATE, iova, size, 0, IotlbPerm.NONE);
    this.ref.invalidate(iova, size);
    this.summary.invalidates++;
  }

  /** The back-end asks the front-end for a translation on the back-end channel. */
  missMessage(iova: number, perm: number): void {
    this.message('backend', 'to-frontend', encodeMessage({
      channel: 'backend', request: BackendRequest.IOTLB_MSG,
      body: { kind: 'iotlb', iova: BigInt(iova), size: 0n, userAddr: 0n, perm, iotlbType: IotlbType.MISS },
    }));
    this.summary.iotlbMissMessages++;
  }

  private record(queue: number, iova: number, length: number, access: number, result: number): void {
    this.tick(10, 40);
    this.writer.translation(this.t, 0, queue, iova, length, access, result);
    this.summary.translations++;
    if (result === TranslationResultCode.hit) this.summary.hits++;
    else if (result === TranslationResultCode.miss) this.summary.misses++;
  }

  /**
   * Translates [iova, iova+len) as a back-end does: one lookup per reference-cache unit the
   * range touches (a lookup returns at most the rest of one entry). On a miss `onMiss`
   * resolves it (MISS + UPDATE) and the lookup is retried.
   */
  translate(queue: number, iova: number, len: number, access: number, onMiss?: (iova: number, access: number) => void): void {
    const unit = this.unit;
    let at = iova;
    const end = iova + len;
    while (at < end) {
      const pieceEnd = Math.min(end, (Math.floor(at / unit) + 1) * unit);
      let result = this.lookup(at, access);
      this.record(queue, at, pieceEnd - at, access, result);
      if (result === TranslationResultCode.miss && onMiss) {
        onMiss(at, access);
        result = this.lookup(at, access);
        this.record(queue, at, pieceEnd - at, access, result);
      }
      at = pieceEnd;
    }
  }
}

/** Packet sizes: simple IMIX (64 / 594 / 1518 roughly 7:4:1) plus some uniform 64..1518. */
function packetLength(rng: Prng): number {
  const p = rng.below(100);
  if (p < 55) return 64;
  if (p < 85) return 594;
  if (p < 95) return 1518;
  return 64 + rng.below(1518 - 64 + 1);
}

/** Seeded Fisher-Yates shuffle of 0..n-1. */
/** `count` distinct units out of `total`, in runs of 8..64 consecutive units that start at random free places. */
function contiguousRuns(rng: Prng, total: number, count: number): number[] {
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

interface Ring {
  desc: number;
  avail: number;
  used: number;
}
/** Split ring layout: desc (16 B each) | avail (4 + 2n + 2) | used (4 + 8n + 2) at the next page. */
function ringAt(base: number, size: number): Ring {
  const avail = base + 16 * size;
  const used = Math.ceil((avail + 4 + 2 * size + 2) / PAGE) * PAGE;
  return { desc: base, avail, used };
}
/** Bytes a split ring of `size` entries spans (page rounded). */
function ringBytes(size: number): number {
  const r = ringAt(0, size);
  return Math.ceil((r.used + 4 + 8 * size + 2) / PAGE) * PAGE;
}

/**
 * The device's side of one descriptor: read the avail entry and the descriptor, touch the
 * buffer, write the used entry.
 */
function deviceDescriptor(
  e: Emitter, vq: number, ring: Ring, slot: number, buffer: number, length: number, access: number,
  onMiss?: (iova: number, access: number) => void,
): void {
  e.translate(vq, ring.avail + 4 + slot * 2, 2, READ, onMiss);
  e.translate(vq, ring.desc + slot * 16, 16, READ, onMiss);
  e.translate(vq, buffer, length, access, onMiss);
  e.translate(vq, ring.used + 4 + slot * 8, 8, WRITE, onMiss);
}

// --- static scenarios (DPDK in the guest) ---------------------------------------------------

function runStatic(e: Emitter, rng: Prng, unit: number, o: Required<Omit<SynthOptions, 'seed'>>): void {
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

// --- dynamic scenario (Linux virtio-net, strict IOMMU) -------------------------------------

/**
 * Linux's IOVA allocator in outline: sizes rounded up to a power of two pages and aligned
 * to it; freed ranges of up to 32 pages go to a per-size LIFO cache (the "rcache", two
 * 128-entry magazines here) and are handed out again first; otherwise the allocator takes
 * the highest free range below the 32-bit DMA limit, growing downwards.
 */
export class IovaAllocator {
  private nextPfn: number;
  private readonly rcache = new Map<number, number[]>();
  private readonly freed = new Map<number, number[]>(); // by order, kept sorted high to low
  static readonly RCACHE_MAX_ORDER = 5;
  static readonly RCACHE_DEPTH = 256;

  constructor(readonly limit = 4 * GiB) {
    this.nextPfn = limit / PAGE;
  }

  static orderFor(pages: number): number {
    let order = 0;
    while (1 << order < pages) order++;
    return order;
  }

  /** Returns the IOVA (page aligned) of a fresh range of at least `pages` pages. */
  alloc(pages: number): number {
    const order = IovaAllocator.orderFor(pages);
    const cached = this.rcache.get(order);
    if (order <= IovaAllocator.RCACHE_MAX_ORDER && cached && cached.length > 0) return cached.pop()! * PAGE;
    const tree = this.freed.get(order);
    if (tree && tree.length > 0) return tree.shift()! * PAGE;
    const size = 1 << order;
    this.nextPfn = Math.floor((this.nextPfn - size) / size) * size;
    if (this.nextPfn < 1) throw new RangeError('IOVA space exhausted');
    return this.nextPfn * PAGE;
  }

  free(iova: number, pages: number): void {
    const order = IovaAllocator.orderFor(pages);
    const pfn = iova / PAGE;
    if (order <= IovaAllocator.RCACHE_MAX_ORDER) {
      let cached = this.rcache.get(order);
      if (!cached) this.rcache.set(order, (cached = []));
      if (cached.length < IovaAllocator.RCACHE_DEPTH) {
        cached.push(pfn);
        return;
      }
    }
    let tree = this.freed.get(order);
    if (!tree) this.freed.set(order, (tree = []));
    const at = tree.findIndex((p) => p < pfn);
    tree.splice(at < 0 ? tree.length : at, 0, pfn);
  }
}

interface Mapping {
  /** IOVA of the first byte of the buffer. */
  iova: number;
  /** Page-aligned start and page count of the IOVA range allocated for it. */
  base: number;
  pages: number;
  length: number;
}

function runDynamic(e: Emitter, rng: Prng, o: Required<Omit<SynthOptions, 'seed'>>): void {
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

// --- entry points ----------------------------------------------------------------------------

export function scenarioInfo(name: string): ScenarioInfo | undefined {
  return SCENARIOS.find((s) => s.name === name);
}

function resolve(options: SynthOptions): Required<SynthOptions> {
  const info = scenarioInfo(options.scenario);
  if (!info) throw new RangeError(`unknown scenario "${options.scenario}" (known: ${SCENARIO_NAMES.join(', ')})`);
  const o: Required<SynthOptions> = {
    scenario: info.name,
    seed: options.seed ?? 1,
    packets: options.packets ?? info.defaults.packets,
    queues: options.queues ?? info.defaults.queues,
    guestMib: options.guestMib ?? info.defaults.guestMib,
    ringSize: options.ringSize ?? 256,
  };
  if (!Number.isInteger(o.packets) || o.packets < 0) throw new RangeError(`packets must be a non-negative integer, got ${o.packets}`);
  if (!Number.isInteger(o.queues) || o.queues < 1 || o.queues > 256) throw new RangeError(`queues must be 1..256, got ${o.queues}`);
  if (!Number.isInteger(o.guestMib) || o.guestMib < 1 || o.guestMib > 1024 * 1024) throw new RangeError(`guest-mib must be 1..1048576, got ${o.guestMib}`);
  if (![64, 128, 256, 512, 1024].includes(o.ringSize)) throw new RangeError(`ring size must be 64..1024 (power of two), got ${o.ringSize}`);
  if (!Number.isInteger(o.seed)) throw new RangeError(`seed must be an integer, got ${o.seed}`);
  return o;
}

/** Generates a scenario into `writer` (which the caller opened and closes). */
export function synthesize(options: SynthOptions, writer: TraceWriter): SynthSummary {
  const o = resolve(options);
  const rng = new Prng(o.seed);
  const unit = o.scenario === 'static-1g' ? GiB : o.scenario === 'static-4k' || o.scenario === 'dynamic' ? PAGE : 2 * MiB;
  const e = new Emitter(writer, rng, unit);
  if (o.scenario === 'dynamic') runDynamic(e, rng, o);
  else runStatic(e, rng, unit, o);
  e.summary.durationNs = e.t;
  return { scenario: o.scenario, seed: o.seed, packets: o.packets, queues: o.queues, guestMib: o.guestMib, ...e.summary };
}

/** The writer options every synthetic trace uses: flagged synthetic, start time 0 (reproducible). */
export const SYNTH_WRITER_OPTIONS = { flags: TraceFlags.Synthetic, startTimeNs: 0n } as const;

/** A scenario as trace bytes in memory. */
export function synthTrace(options: SynthOptions): { bytes: Uint8Array; summary: SynthSummary } {
  const writer = TraceWriter.inMemory(SYNTH_WRITER_OPTIONS);
  const summary = synthesize(options, writer);
  writer.close();
  return { bytes: writer.bytes(), summary };
}

/** A scenario written to `path`. */
export function writeSynthTrace(path: string, options: SynthOptions): SynthSummary {
  const writer = TraceWriter.open(path, SYNTH_WRITER_OPTIONS);
  try {
    return synthesize(options, writer);
  } finally {
    writer.close();
  }
}

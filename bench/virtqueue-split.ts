/**
 * Split-ring data path throughput, driver and device in one thread over one guest
 * memory buffer (no syscalls, no interrupts): what the pure-TS hot path costs.
 *
 *   node dist/bench/virtqueue-split.js [seconds-per-case] [--iotlb strategy|none]
 *        [--case name-prefix] [--inline] [--packed]
 *
 * --packed runs the same cases over packed virtqueues (PackedQueue / PackedDriver).
 *
 * Each case runs in its own process (a worker runs one configuration, so its call sites
 * are monomorphic); --inline runs them all in this one.
 *
 * Cases (64-byte frames, 12-byte virtio-net header, queue size 256, bursts of 32):
 *   baseline   a minimal hand-written loop: avail -> desc -> used, no translation
 *   tx-sink    TX, 1 descriptor (hdr+frame) per frame -> SinkEndpoint
 *   tx-chain   TX, 2 descriptors (hdr | frame)
 *   tx-indir   TX, 1 indirect descriptor -> 2-entry table
 *   rx-source  SourceEndpoint -> RX, 1 writable 2 KiB descriptor per frame (copies 76 bytes)
 *   rx-mrg     same with MRG_RXBUF
 *   loopback   TX -> loopback -> RX (copy + MAC swap), both queues
 *   *-iotlb    the same through IotlbAddressSpace (IOVA -> strategy -> uaddr) on every access
 */
import { GuestMemory, type GuestRegion } from '../src/memory/guest-memory.js';
import { GuestPhysicalSpace, UserAddressSpace, IotlbAddressSpace, type AddressSpace } from '../src/memory/address-space.js';
import { SplitQueue, RING_OK } from '../src/virtqueue/split.js';
import { SplitDriver, layoutRings } from '../test/support/frontend/split-driver.js';
import { PackedQueue } from '../src/virtqueue/packed.js';
import { PackedDriver, layoutPacked } from '../test/support/frontend/packed-driver.js';
import type { VirtQueue } from '../src/virtqueue/queue.js';
import { NetQueue, transmitBurst } from '../src/net/virtio-net.js';
import { SinkEndpoint } from '../src/net/sink.js';
import { SourceEndpoint } from '../src/net/source.js';
import { LoopbackEndpoint } from '../src/net/loopback.js';
import type { IotlbStrategy } from '../src/iotlb/strategy.js';
import { parseArgs } from 'node:util';
import { answerHelp, optionsOrExit } from './options.js';

const GPA = 0x40000000;
const UVA = 0x7f0000000000;
const IOVA = 0x100000000;
const MEM = 16 << 20;
const QSIZE = 256;
const BURST = 32;
const FRAME = 64;
const HDR = 12;

answerHelp(import.meta.url);
const { values: opts, positionals } = optionsOrExit('virtqueue-split', () => parseArgs({
  options: {
    iotlb: { type: 'string' }, case: { type: 'string' }, inline: { type: 'boolean', default: false },
    packed: { type: 'boolean', default: false }, exact: { type: 'boolean', default: false },
    shared: { type: 'boolean', default: false }, 'no-baseline': { type: 'boolean', default: false },
  },
  allowPositionals: true,
}));
/** --packed: packed virtqueues instead of split ones. */
const packed = opts.packed!;

interface Ring {
  driver: SplitDriver | PackedDriver;
  queue: VirtQueue;
  bufBase: number; // device-visible (GPA or IOVA) address of the buffer area
  bufOff: number; // its offset in region bytes
}

function makeRing(region: GuestRegion, memory: GuestMemory, at: number, iotlb: IotlbStrategy | null): Ring {
  const split = layoutRings(QSIZE, GPA + at);
  const pl = layoutPacked(QSIZE, GPA + at);
  const lay = packed ? { descAddr: pl.descAddr, availAddr: pl.driverAddr, usedAddr: pl.deviceAddr, end: pl.end } : split;
  const driver = packed
    ? new PackedDriver({ memory: region.bytes, base: GPA, size: QSIZE, descAddr: pl.descAddr, driverAddr: pl.driverAddr, deviceAddr: pl.deviceAddr })
    : new SplitDriver({ memory: region.bytes, base: GPA, size: QSIZE, descAddr: lay.descAddr, availAddr: lay.availAddr, usedAddr: lay.usedAddr });
  const queue: VirtQueue = packed ? new PackedQueue() : new SplitQueue();
  let ringSpace: AddressSpace;
  let dataSpace: AddressSpace;
  let toRing: (g: number) => number;
  let toData: (g: number) => number;
  if (iotlb !== null) {
    ringSpace = dataSpace = new IotlbAddressSpace(iotlb, memory);
    toRing = toData = (g) => g - GPA + IOVA;
  } else {
    ringSpace = new UserAddressSpace(memory);
    dataSpace = new GuestPhysicalSpace(memory);
    toRing = (g) => g - GPA + UVA;
    toData = (g) => g;
  }
  const st = queue.configure({ size: QSIZE, descAddr: toRing(lay.descAddr), availAddr: toRing(lay.availAddr), usedAddr: toRing(lay.usedAddr), ringSpace, dataSpace, eventIdx: true, lastAvailIdx: packed ? 0x8000 : 0 });
  if (st !== RING_OK) throw new Error(queue.error);
  const bufGpa = Math.ceil(lay.end / 4096) * 4096;
  return { driver, queue, bufBase: toData(bufGpa), bufOff: bufGpa - GPA };
}

function setup(iotlb: IotlbStrategy | null) {
  const memory = new GuestMemory();
  const region = memory.addRegion({ guestAddr: GPA, userAddr: UVA, size: MEM, mmapOffset: 0, bytes: new Uint8Array(shared ? new SharedArrayBuffer(MEM) : new ArrayBuffer(MEM)) });
  if (iotlb !== null) {
    // 2 MiB "hugepage" mappings, as a static (DPDK-in-guest) IOMMU setup would give.
    for (let off = 0; off < MEM; off += 2 << 20) iotlb.insert({ iova: IOVA + off, size: 2 << 20, uaddr: UVA + off, perm: 3 });
  }
  return { memory, region };
}

type Kind = 'single' | 'chain' | 'indirect';

/** Driver side of TX: keep the ring full of 64-byte frames, reclaim used. */
/**
 * Where a one-descriptor buffer starts in its 2 KiB slot: as DPDK's virtio PMD posts mbufs
 * (the virtio-net header just before the packet data, which sits at RTE_PKTMBUF_HEADROOM),
 * so frames are 8-byte aligned as they are against a real virtio-user front-end.
 */
const SKEW = 128 - HDR;

const addrs = [0, 0];
const lens = [HDR, FRAME];

function fillTx(r: Ring, kind: Kind, slot: { n: number }): void {
  const d = r.driver;
  while (d.freeCount > 0) {
    const i = slot.n++ & (QSIZE - 1);
    const a = r.bufBase + i * 2048;
    if (kind === 'single') d.addBuffer(a + SKEW, HDR + FRAME, false);
    else {
      addrs[0] = a;
      addrs[1] = a + 256;
      if (kind === 'chain') {
        if (d.freeCount < 2) break;
        d.addChain(addrs, lens, 2);
      } else d.addIndirect(r.bufOff + GPA + QSIZE * 2048 + i * 32, addrs, lens, 2, 2, r.bufBase + QSIZE * 2048 + i * 32);
    }
  }
  d.publish();
}

function reclaim(d: SplitDriver | PackedDriver): number {
  let n = d.usedCount();
  const got = n;
  while (n-- > 0) d.takeUsed();
  return got;
}


function fillRx(r: Ring, slot: { n: number }): void {
  const d = r.driver;
  while (d.freeCount > 0) {
    const i = slot.n++ & (QSIZE - 1);
    d.addBuffer(r.bufBase + i * 2048 + SKEW, 2048 - SKEW, true);
  }
  d.publish();
}

/** --case: only the cases whose names start with it (with --exact: the one named so). */
const only = opts.case;
/** Guest memory in a SharedArrayBuffer (--shared) instead of a plain ArrayBuffer like src/sys mapFd returns. */
const shared = opts.shared!;
/** Time spent inside the device calls only (transmitBurst / poll), ms. */
let deviceMs = 0;
const exact = opts.exact!;

function want(name: string): boolean {
  return only === undefined || (exact ? name === only : name.startsWith(only));
}

function run(name: string, seconds: number, step: () => number): number {
  // warm-up
  const warmEnd = Date.now() + 300;
  while (Date.now() < warmEnd) step();
  let count = 0;
  deviceMs = 0;
  const t0 = process.hrtime.bigint();
  const end = Date.now() + seconds * 1000;
  let iter = 0;
  while (true) {
    count += step();
    if ((++iter & 255) === 0 && Date.now() >= end) break;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  const mdps = (count / ns) * 1000;
  const dev = deviceMs > 0 ? `   device only ${(count / (deviceMs * 1e3)).toFixed(2).padStart(6)} Mdesc/s (${((deviceMs * 1e6) / count).toFixed(1)} ns/desc)` : '';
  console.log(`${name.padEnd(28)} ${mdps.toFixed(2).padStart(6)} Mdesc/s (${(ns / count).toFixed(1).padStart(5)} ns/desc)${dev}`);
  return mdps;
}

/** The reference: a bare loop over the same ring layout, no translation, no checks. */
function baseline(seconds: number): void {
  const buf = new SharedArrayBuffer(1 << 20);
  const u16 = new Uint16Array(buf);
  const u32 = new Uint32Array(buf);
  const D = 0; // desc at byte 0
  const A = (16 * QSIZE) >> 1; // avail in u16 units
  const U = (16 * QSIZE + 4096) >> 1; // used in u16 units
  for (let i = 0; i < QSIZE; i++) {
    u32[D + 4 * i] = 0x10000 + i * 2048;
    u32[D + 4 * i + 2] = 76;
  }
  let availIdx = 0;
  let lastAvail = 0;
  let usedIdx = 0;
  let driverUsed = 0;
  let sum = 0;
  run('baseline (bare loop)', seconds, () => {
    // driver: post everything free
    while (((availIdx - driverUsed) & 0xffff) < QSIZE) {
      u16[A + 2 + (availIdx & (QSIZE - 1))] = availIdx & (QSIZE - 1);
      availIdx = (availIdx + 1) & 0xffff;
    }
    Atomics.store(u16, A + 1, availIdx);
    // device
    const avail = Atomics.load(u16, A + 1);
    let n = (avail - lastAvail) & 0xffff;
    if (n > BURST) n = BURST;
    for (let k = 0; k < n; k++) {
      const head = u16[A + 2 + ((lastAvail + k) & (QSIZE - 1))];
      const w = D + 4 * head;
      sum += u32[w] + u32[w + 1] * 4294967296 + u32[w + 2];
      const ui = ((U + 2) >> 1) + (((usedIdx + k) & (QSIZE - 1)) << 1);
      u32[ui] = head;
      u32[ui + 1] = 0;
    }
    lastAvail = (lastAvail + n) & 0xffff;
    usedIdx = (usedIdx + n) & 0xffff;
    Atomics.store(u16, U + 1, usedIdx);
    // driver reclaims
    driverUsed = Atomics.load(u16, U + 1);
    return n;
  });
  if (sum === -1) console.log(sum);
}

async function main(): Promise<void> {
  const seconds = optionsOrExit('virtqueue-split', () => {
    if (positionals.length > 1) throw new Error(`one positional argument (seconds per case), got: ${positionals.join(' ')}`);
    const n = Number(positionals[0] ?? 1);
    if (!(n > 0)) throw new Error(`seconds per case: "${positionals[0]}" is not a positive number`);
    return n;
  });
  let strategies: { name: string; create: () => IotlbStrategy }[] = [];
  try {
    const reg = await import('../src/iotlb/registry.js');
    strategies = reg.strategies.map((s) => ({ name: s.name, create: () => s.create({ capacity: 2048, seed: 1 }) }));
    if (opts.iotlb !== undefined) strategies = strategies.filter((s) => s.name === opts.iotlb);
  } catch {
    console.log('(src/iotlb registry not loadable: IOTLB cases skipped)');
  }
  const modes: { label: string; tlb: () => IotlbStrategy | null }[] = [{ label: '', tlb: () => null }];
  for (const s of strategies) modes.push({ label: `-iotlb(${s.name})`, tlb: s.create });
  if (!exact) {
    console.log(`${packed ? 'packed' : 'split'} ring, queue ${QSIZE}, burst ${BURST}, ${FRAME}-byte frames, ${seconds}s per case, node ${process.version}`);
    if (!opts['no-baseline']) baseline(seconds);
  }
  if (only === undefined && !opts.inline) {
    // One process per case, as each worker runs one configuration: call sites stay
    // monomorphic, as they would in production. (--inline runs everything here.)
    const { spawnSync } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const names: string[] = [];
    for (const mode of modes) {
      for (const c of ['tx-single', 'tx-chain', 'tx-indirect', 'rx-source', 'rx-mrg', 'loopback']) names.push(c + mode.label);
    }
    for (const name of names) {
      const strat = /iotlb\((.*)\)/.exec(name)?.[1] ?? 'none';
      const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), String(seconds), '--case', name, '--exact', '--iotlb', strat, ...(shared ? ['--shared'] : []), ...(packed ? ['--packed'] : [])], { encoding: 'utf8' });
      process.stdout.write(r.stdout + r.stderr);
    }
    return;
  }
  for (const mode of modes) {
    for (const kind of ['single', 'chain', 'indirect'] as Kind[]) {
      if (!want(`tx-${kind}${mode.label}`)) continue;
      const tlb = mode.tlb();
      const { memory, region } = setup(tlb);
      const r = makeRing(region, memory, 0, tlb);
      const txq = new NetQueue(r.queue, { headerLength: HDR, mergeable: false });
      const sink = new SinkEndpoint();
      const slot = { n: 0 };
      const descsPer = kind === 'chain' ? 2 : 1;
      run(`tx-${kind}${mode.label}`, seconds, () => {
        fillTx(r, kind, slot);
        const t = performance.now();
        const n = transmitBurst(txq, sink, BURST);
        deviceMs += performance.now() - t;
        reclaim(r.driver);
        return n * descsPer;
      });
      if (r.queue.broken) throw new Error(r.queue.brokenReason);
    }
    for (const mergeable of [false, true]) {
      if (!want(`rx-${mergeable ? 'mrg' : 'source'}${mode.label}`)) continue;
      const tlb = mode.tlb();
      const { memory, region } = setup(tlb);
      const r = makeRing(region, memory, 0, tlb);
      const rxq = new NetQueue(r.queue, { headerLength: HDR, mergeable });
      const src = new SourceEndpoint(rxq, { frameSize: FRAME });
      const slot = { n: 0 };
      run(`rx-${mergeable ? 'mrg' : 'source'}${mode.label}`, seconds, () => {
        fillRx(r, slot);
        const t = performance.now();
        const n = src.poll(BURST);
        deviceMs += performance.now() - t;
        reclaim(r.driver);
        return n;
      });
      if (r.queue.broken) throw new Error(r.queue.brokenReason);
    }
    if (want(`loopback${mode.label}`)) {
      const tlb = mode.tlb();
      const { memory, region } = setup(tlb);
      const tx = makeRing(region, memory, 0, tlb);
      const rx = makeRing(region, memory, 4 << 20, tlb);
      const txq = new NetQueue(tx.queue, { headerLength: HDR, mergeable: false });
      const rxq = new NetQueue(rx.queue, { headerLength: HDR, mergeable: true });
      const lo = new LoopbackEndpoint(rxq);
      const ts = { n: 0 };
      const rs = { n: 0 };
      run(`loopback${mode.label}`, seconds, () => {
        fillTx(tx, 'single', ts);
        fillRx(rx, rs);
        const t = performance.now();
        const n = transmitBurst(txq, lo, BURST);
        deviceMs += performance.now() - t;
        reclaim(tx.driver);
        reclaim(rx.driver);
        return 2 * n; // one TX and one RX descriptor per frame
      });
      if (tx.queue.broken || rx.queue.broken) throw new Error(tx.queue.brokenReason + rx.queue.brokenReason);
    }
  }
}

await main();

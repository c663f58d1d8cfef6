/**
 * The dirty-page log against an independent account of what the device wrote: random RX
 * and TX bursts through random IOTLB mappings (every strategy, split and packed,
 * mergeable or not), the pages the log marked compared with the pages the driver knows
 * were written (the first `len` bytes of each used chain, translated by the test's own
 * IOVA -> GPA table, plus the ring areas the device writes) and with the pages whose bytes
 * changed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPA, IOVA, UVA, MEM_SIZE, Capture, makeMemory, makePackedRig, makeRig, netq, type Rig, type PackedRig } from '../virtqueue/helpers.js';
import { DirtyLog, LOG_PAGE, logBytesFor } from '../../src/memory/dirty-log.js';
import { ACCESS_READ, ACCESS_WRITE } from '../../src/memory/address-space.js';
import { ScatterList } from '../../src/virtqueue/scatter.js';
import { receiveBurst, transmitBurst } from '../../src/net/virtio-net.js';
import { strategies, getStrategy } from '../../src/iotlb/registry.js';
import { Prng } from '../../src/iotlb/prng.js';

const SIZE = 64;
/** Buffers live at IOVAs from here, one IOTLB entry per 4 KiB page, each page at a random GPA page. */
const BUF_IOVA = IOVA + 0x1000000;
const BUF_PAGES = 96;
const FILL = 0xa5;
/** And 64 KiB of IOVAs in one entry over contiguous guest memory (the last 64 KiB): runs of buffers (receiveRun). */
const RUN_IOVA = IOVA + 0x2000000;
const RUN_SIZE = 0x10000;
const RUN_GPA = GPA + MEM_SIZE - RUN_SIZE;

interface Piece { iova: number; len: number }

type AnyRig = Rig | PackedRig;

/** An RX and a TX queue in one guest memory and one IOTLB, both logging into one bitmap. */
class LogRig {
  readonly log: DirtyLog;
  readonly bits: Uint8Array;
  readonly rx: AnyRig;
  readonly tx: AnyRig;
  readonly bytes: Uint8Array;
  /** IOVA page index -> GPA of that page (the test's own translation). */
  readonly pageGpa: number[] = [];
  /** Chain id -> its buffers, as the driver posted them (per queue). */
  readonly chains = [new Map<number, Piece[]>(), new Map<number, Piece[]>()];
  before: Uint8Array;

  constructor(readonly rnd: Prng, strategyName: string, packed: boolean) {
    const tlb = getStrategy(strategyName).create({ seed: 1 });
    const mem = makeMemory();
    const make = (ringOffset: number): AnyRig => packed
      ? makePackedRig({ iotlb: tlb, size: SIZE, memory: mem, ringOffset })
      : makeRig({ iotlb: tlb, size: SIZE, memory: mem, ringOffset });
    this.rx = make(0);
    this.tx = make(0x4000);
    this.bytes = mem.region.bytes;
    this.bits = new Uint8Array(logBytesFor(GPA + MEM_SIZE));
    this.log = new DirtyLog(this.bits, mem.memory);
    this.rx.queue.log = this.tx.queue.log = this.log;
    // Free GPA pages for buffers, shuffled: consecutive IOVA pages land on scattered pages.
    const free: number[] = [];
    for (let p = Math.max(this.rx.bufBase, this.tx.bufBase) / LOG_PAGE; p < RUN_GPA / LOG_PAGE; p++) free.push(p * LOG_PAGE);
    for (let i = free.length - 1; i > 0; i--) {
      const j = rnd.below(i + 1);
      [free[i], free[j]] = [free[j]!, free[i]!];
    }
    for (let i = 0; i < BUF_PAGES; i++) {
      const gpa = free[i]!;
      this.pageGpa.push(gpa);
      tlb.insert({ iova: BUF_IOVA + i * LOG_PAGE, size: LOG_PAGE, uaddr: UVA + (gpa - GPA), perm: ACCESS_READ | ACCESS_WRITE });
    }
    tlb.insert({ iova: RUN_IOVA, size: RUN_SIZE, uaddr: UVA + (RUN_GPA - GPA), perm: ACCESS_READ | ACCESS_WRITE });
    this.bytes.fill(FILL, 0x10000);
    this.before = this.bytes.slice();
  }

  gpaOf(iova: number): number {
    if (iova >= RUN_IOVA) return RUN_GPA + (iova - RUN_IOVA);
    const i = Math.floor((iova - BUF_IOVA) / LOG_PAGE);
    return this.pageGpa[i]! + (iova - BUF_IOVA) % LOG_PAGE;
  }

  /**
   * A chain of 1-3 buffers of random IOVAs and lengths (a buffer may cross into the next
   * IOVA page), or with `single` one 2 KiB buffer in the contiguous area.
   */
  post(rig: AnyRig, minTotal: number, single: boolean): void {
    const writable = rig === this.rx;
    if (single) {
      const iova = RUN_IOVA + this.rnd.below(RUN_SIZE / 2048) * 2048;
      const head = rig.driver.addChain([iova], [2048], writable ? 0 : 1);
      this.chains[writable ? 0 : 1]!.set(head, [{ iova, len: 2048 }]);
      return;
    }
    const n = 1 + this.rnd.below(3);
    const pieces: Piece[] = [];
    let total = 0;
    for (let k = 0; k < n; k++) {
      const len = (k === n - 1 ? Math.max(minTotal - total, 0) : 0) + 1 + this.rnd.below(1200);
      const iova = BUF_IOVA + this.rnd.below((BUF_PAGES - 1) * LOG_PAGE - len);
      pieces.push({ iova, len });
      total += len;
    }
    const head = rig.driver.addChain(pieces.map((p) => p.iova), pieces.map((p) => p.len), writable ? 0 : n);
    this.chains[writable ? 0 : 1]!.set(head, pieces);
  }

  /** Pages of the first `len` bytes of a used RX chain. */
  addWritten(pages: Set<number>, id: number, len: number): void {
    for (const p of this.chains[0]!.get(id)!) {
      for (let at = 0; at < p.len && len > 0; at++, len--) pages.add(Math.floor(this.gpaOf(p.iova + at) / LOG_PAGE));
    }
  }

  /** Pages of the ring areas the device writes. */
  ringPages(rig: AnyRig): Set<number> {
    const pages = new Set<number>();
    const add = (gpa: number, len: number): void => {
      for (let p = Math.floor(gpa / LOG_PAGE); p <= Math.floor((gpa + len - 1) / LOG_PAGE); p++) pages.add(p);
    };
    if ('usedAddr' in rig.layout) add(rig.layout.usedAddr, 6 + 8 * SIZE);
    else {
      add(rig.layout.descAddr, 16 * SIZE);
      add(rig.layout.deviceAddr, 4);
    }
    return pages;
  }

  marked(): Set<number> {
    const pages = new Set<number>();
    for (let b = 0; b < this.bits.length; b++) for (let i = 0; i < 8; i++) if (this.bits[b]! & (1 << i)) pages.add(b * 8 + i);
    return pages;
  }

  changed(): Set<number> {
    const pages = new Set<number>();
    const now = this.bytes;
    for (let i = 0; i < now.length; i++) if (now[i] !== this.before[i]) pages.add(Math.floor((GPA + i) / LOG_PAGE));
    return pages;
  }
}

const sorted = (s: Set<number>): number[] => [...s].sort((a, b) => a - b);

for (const packed of [false, true]) {
  for (const def of strategies) {
    for (const mergeable of [false, true]) {
      test(`dirty log: ${packed ? 'packed' : 'split'}, ${def.name}, ${mergeable ? 'mergeable' : 'one chain per frame'}: marked pages = pages written`, () => {
        const rnd = new Prng(0xd1 + def.name.length + (packed ? 7 : 0) + (mergeable ? 3 : 0));
        const lr = new LogRig(rnd, def.name, packed);
        const rxq = netq(lr.rx.queue, 12, mergeable);
        const txq = netq(lr.tx.queue, 12, false);
        const frames = new ScatterList(32);
        const source = new Uint8Array(2048).fill(0x3c);
        let rxFrames = 0;
        for (let round = 0; round < 40; round++) {
          const rx = rnd.below(3) !== 0;
          const rig = rx ? lr.rx : lr.tx;
          const count = 1 + rnd.below(12);
          const lens: number[] = [];
          for (let i = 0; i < count; i++) lens.push(14 + rnd.below(1500));
          // Without MRG_RXBUF a frame must fit one chain: post chains big enough for the longest.
          const longest = Math.max(...lens) + 12;
          const free = rig.driver.freeCount;
          const single = rnd.below(2) === 0;
          for (let i = 0; i < Math.min(count, Math.floor(free / 3)); i++) lr.post(rig, rx && !mergeable ? longest : 0, single);
          rig.driver.publish();
          lr.before = lr.bytes.slice(); // what the driver wrote is not the device's
          if (rx) {
            frames.reset();
            for (const len of lens) frames.push(source, 0, len);
            rxFrames += receiveBurst(rxq, frames);
          } else {
            transmitBurst(txq, new Capture(), SIZE);
            txq.finish();
          }
          const expected = new Set<number>();
          let used = 0;
          while (rig.driver.usedCount() > 0) {
            const id = rig.driver.takeUsed();
            if (rx) lr.addWritten(expected, id, rig.driver.lastLen);
            used++;
          }
          if (used > 0) for (const p of lr.ringPages(rig)) expected.add(p);
          assert.ok(rig.queue.brokenReason === '', rig.queue.brokenReason);
          lr.log.flush(); // as the worker does after every step
          const marked = lr.marked();
          assert.deepEqual(sorted(marked), sorted(expected), `round ${round} (${rx ? 'rx' : 'tx'}): marked pages differ from pages written`);
          for (const p of lr.changed()) assert.ok(marked.has(p), `round ${round}: page 0x${p.toString(16)} changed but was not marked`);
          assert.equal(lr.log.outside, 0);
          lr.bits.fill(0); // what the front-end does when it syncs the log
        }
        assert.ok(rxFrames > 20, `only ${rxFrames} frames received`);
      });
    }
  }
}

test('dirty log: a write past the end of a short bitmap is counted, never stored', () => {
  const rig = makeRig({ size: SIZE });
  const bits = new Uint8Array(1); // pages 0..7 only; guest memory is at 1 MiB (page 256)
  const log = new DirtyLog(bits, rig.memory);
  log.markHost(rig.region.bytes, 0, 100);
  assert.equal(bits[0], 0);
  assert.equal(log.outside, 1);
  log.markHost(new Uint8Array(16), 0, 16);
  assert.equal(log.outside, 2, 'bytes of no region are counted as outside');
  log.markGuest(0x2000, 0x1001);
  assert.equal(bits[0], 0, 'gathered, not applied before flush()');
  log.flush();
  assert.equal(bits[0], 0b1100, 'pages 2 and 3');
  // More distinct bytes than are gathered at once: applied early, none lost.
  const wide = new Uint8Array(200);
  const big = new DirtyLog(wide, rig.memory);
  for (let page = 0; page < 1600; page += 3) big.markGuest(page * 0x1000, 1);
  big.flush();
  for (let page = 0; page < 1600; page++) assert.equal((wide[page >> 3]! >> (page & 7)) & 1, page % 3 === 0 ? 1 : 0, `page ${page}`);
});

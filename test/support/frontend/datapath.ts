/**
 * The test front-end's data path: frames in and out through the two pools. TX writes a
 * header + frame into a pool slot and posts it; RX posts empty pool slots; what the device
 * returns is taken back — unmapped (dma.ts), canary-checked (canaries.ts), its slot freed —
 * and received frames are handed out, MRG_RXBUF frames spread over several buffers
 * gathered first. Also raw buffers in caller-owned memory, for tests of odd layouts.
 *
 * Allocation-free: benchmarks run it in their measured loop.
 */
import type { Canaries } from './canaries.js';
import type { Dma } from './dma.js';
import { NET_HDR, type ResolvedFrontendOptions } from './options.js';
import { NOT_IN_FLIGHT, RAW_BUFFER, type DriverRing } from './vring.js';

export interface DatapathStats {
  txPosted: number;
  txCompleted: number;
  rxPosted: number;
  rxFrames: number;
  rxBuffers: number;
  kicks: number;
}

export type FrameHandler = (bytes: Uint8Array, offset: number, len: number) => void;

type DatapathOptions = Pick<ResolvedFrontendOptions, 'slotSize' | 'txPerm' | 'rxPerm' | 'mergeableRx'>;

export class Datapath {
  /** MRG_RXBUF frames are gathered here. */
  private readonly rxScratch = new Uint8Array(65536 + NET_HDR);

  constructor(
    private readonly memory: Uint8Array,
    private readonly rx: DriverRing,
    private readonly tx: DriverRing,
    private readonly dma: Dma,
    private readonly canaries: Canaries,
    private readonly opts: DatapathOptions,
    private readonly stats: DatapathStats,
  ) {}

  // ---------------------------------------------------------------- TX

  /** Writes header + frame into a free TX slot and posts it (not yet published: call flush()). False if full. */
  txSend(frame: Uint8Array, offset: number, len: number): boolean {
    const slot = this.takeTxSlot();
    if (slot < 0) return false;
    this.memory.set(frame.subarray(offset, offset + len), this.tx.pool.slotGpa(slot) + NET_HDR);
    return this.postTxSlot(slot, NET_HDR + len);
  }

  /** Lets `write(memory, offset)` fill a frame of `len` bytes in place, then posts it. */
  txSendWith(len: number, write: (memory: Uint8Array, offset: number) => void): boolean {
    const slot = this.takeTxSlot();
    if (slot < 0) return false;
    write(this.memory, this.tx.pool.slotGpa(slot) + NET_HDR);
    return this.postTxSlot(slot, NET_HDR + len);
  }

  /** Benchmarks: posts the next TX slot as is (prefillTx() wrote every slot once). */
  txPostPrefilled(len: number): boolean {
    const r = this.tx;
    if (r.pool.freeCount === 0 || r.driver.freeCount === 0) return false;
    return this.postTxSlot(r.pool.take(), NET_HDR + len);
  }

  /** Writes header + frame into every TX slot (benchmarks); canary checks stop, slots no longer hold canary between uses. */
  prefillTx(frame: Uint8Array): void {
    const pool = this.tx.pool;
    for (let s = 0; s < pool.slots; s++) {
      const gpa = pool.slotGpa(s);
      this.memory.fill(0, gpa, gpa + NET_HDR);
      this.memory.set(frame, gpa + NET_HDR);
    }
    this.canaries.disable();
  }

  /** Posts raw TX buffers (device addresses) as one chain; returns the head or -1. The caller owns the memory. */
  txPostRaw(addrs: number[], lens: number[]): number {
    const head = this.tx.driver.addChain(addrs, lens, addrs.length);
    if (head >= 0) {
      this.tx.track(head, RAW_BUFFER, 0, 0);
      this.stats.txPosted++;
    }
    return head;
  }

  /** Reclaims completed TX buffers; returns how many. */
  reapTx(): number {
    const r = this.tx;
    const d = r.driver;
    let n = d.usedCount();
    const done = n;
    while (n-- > 0) {
      const head = d.takeUsed();
      const slot = r.untrack(head);
      this.stats.txCompleted++;
      if (slot === RAW_BUFFER) continue;
      if (slot < 0) throw new Error(`TX used entry for head ${head}, which is not in flight`);
      const len = r.headLen[head];
      this.dma.releaseBuffer(r.headAddr[head], len);
      this.canaries.checkTx(slot, r.pool.slotGpa(slot), len);
      r.pool.put(slot);
    }
    return done;
  }

  /** Takes a free TX slot and zeroes its virtio-net header; -1 if the pool or the ring is full. */
  private takeTxSlot(): number {
    const r = this.tx;
    if (r.pool.freeCount === 0 || r.driver.freeCount === 0) return -1;
    const slot = r.pool.take();
    this.memory.fill(0, r.pool.slotGpa(slot), r.pool.slotGpa(slot) + NET_HDR);
    return slot;
  }

  private postTxSlot(slot: number, len: number): boolean {
    const r = this.tx;
    const gpa = r.pool.slotGpa(slot);
    this.canaries.saveTx(slot, gpa, len);
    const addr = this.dma.bufferAddr(gpa, len, this.opts.txPerm);
    r.track(r.driver.addBuffer(addr, len, false), slot, addr, len);
    this.stats.txPosted++;
    return true;
  }

  // ---------------------------------------------------------------- RX

  /** Posts a raw writable RX buffer (device address); returns the head or -1. */
  rxPostRaw(addr: number, len: number): number {
    const head = this.rx.driver.addBuffer(addr, len, true);
    if (head >= 0) {
      this.rx.track(head, RAW_BUFFER, addr, len);
      this.stats.rxPosted++;
    }
    return head;
  }

  /** Posts free RX slots until the ring or the pool is full (or `max` are posted). */
  refillRx(max: number): number {
    const r = this.rx;
    const d = r.driver;
    const size = this.opts.slotSize;
    let n = 0;
    while (n < max && d.freeCount !== 0 && r.pool.freeCount !== 0) {
      const slot = r.pool.take();
      const addr = this.dma.bufferAddr(r.pool.slotGpa(slot), size, this.opts.rxPerm);
      r.track(d.addBuffer(addr, size, true), slot, addr, size);
      n++;
    }
    this.stats.rxPosted += n;
    return n;
  }

  /**
   * Takes received frames: onFrame(bytes, offset, len) gets each frame (virtio-net header
   * stripped; MRG_RXBUF frames spread over several buffers are gathered into a scratch
   * buffer). The view is only valid during the call. Returns frames taken.
   */
  pollRx(onFrame: FrameHandler | undefined, max: number): number {
    const r = this.rx;
    const d = r.driver;
    const m = this.memory;
    let avail = d.usedCount();
    let frames = 0;
    while (avail > 0 && frames < max) {
      const head = d.takeUsed();
      avail--;
      const len = d.lastLen;
      const slot = r.untrack(head);
      this.stats.rxBuffers++;
      if (slot === NOT_IN_FLIGHT) throw new Error(`RX used entry for head ${head}, which is not in flight`);
      if (slot === RAW_BUFFER) {
        frames++;
        continue;
      }
      const gpa = r.pool.slotGpa(slot);
      this.dma.releaseBuffer(r.headAddr[head], r.headLen[head]);
      const nbuf = this.opts.mergeableRx && len >= NET_HDR ? m[gpa + 10] | (m[gpa + 11] << 8) : 1;
      if (nbuf <= 1) {
        if (onFrame && len >= NET_HDR) onFrame(m, gpa + NET_HDR, len - NET_HDR);
        this.releaseRx(slot, gpa, len);
      } else {
        // Gather: this buffer and the next nbuf-1 used entries.
        const scratch = this.rxScratch;
        scratch.set(m.subarray(gpa + NET_HDR, gpa + len), 0);
        let total = len - NET_HDR;
        this.releaseRx(slot, gpa, len);
        for (let k = 1; k < nbuf; k++) {
          if (avail === 0) {
            avail = d.usedCount();
            if (avail === 0) throw new Error('MRG_RXBUF frame announces more buffers than are used');
          }
          const h2 = d.takeUsed();
          avail--;
          const l2 = d.lastLen;
          const s2 = r.untrack(h2);
          this.stats.rxBuffers++;
          const g2 = r.pool.slotGpa(s2);
          this.dma.releaseBuffer(r.headAddr[h2], r.headLen[h2]);
          scratch.set(m.subarray(g2, g2 + l2), total);
          total += l2;
          this.releaseRx(s2, g2, l2);
        }
        if (onFrame) onFrame(scratch, 0, total);
      }
      frames++;
      this.stats.rxFrames++;
    }
    return frames;
  }

  private releaseRx(slot: number, gpa: number, len: number): void {
    this.canaries.checkRx(slot, gpa, len);
    this.rx.pool.put(slot);
  }

  // ---------------------------------------------------------------- both

  /** Publishes both rings and kicks where the device asks for it. */
  flush(): void {
    if (this.rx.flush()) this.stats.kicks++;
    if (this.tx.flush()) this.stats.kicks++;
  }
}

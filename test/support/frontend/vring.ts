/**
 * One vring as the test front-end drives it: the split-ring driver, the addresses the
 * device was given for it (uaddr or IOVA), its kick / call eventfds, its buffer pool, and
 * for every descriptor head in flight what it carries (pool slot, device address, length),
 * so the buffer can be unmapped, checked and returned when the device is done with it.
 */
import { closeFd, eventfdWrite } from '../../../src/sys/index.js';
import { PAGE_4K } from './iommu.js';
import { SplitDriver, type RingLayout } from './split-driver.js';
import type { BufferPool } from './buffer-pool.js';

/** headSlot value of a head the device does not hold. */
export const NOT_IN_FLIGHT = -1;
/** headSlot value of a head posted with caller-owned memory (txPostRaw / rxPostRaw), not a pool slot. */
export const RAW_BUFFER = -2;

export class DriverRing {
  readonly driver: SplitDriver;
  /** Device-visible ring addresses (uaddr or IOVA), set when the rings are mapped. */
  descDev = 0;
  availDev = 0;
  usedDev = 0;
  kickFd = -1;
  callFd = -1;
  /** Per head in flight: pool slot (or RAW_BUFFER; NOT_IN_FLIGHT when idle), device address, length. */
  readonly headSlot: Int32Array;
  readonly headAddr: Float64Array;
  readonly headLen: Int32Array;

  constructor(readonly index: number, readonly layout: RingLayout, readonly pool: BufferPool, memory: Uint8Array, queueSize: number, eventIdx: boolean) {
    this.driver = new SplitDriver({
      memory, base: 0, size: queueSize, descAddr: layout.descAddr, availAddr: layout.availAddr, usedAddr: layout.usedAddr, eventIdx,
    });
    this.headSlot = new Int32Array(queueSize).fill(NOT_IN_FLIGHT);
    this.headAddr = new Float64Array(queueSize);
    this.headLen = new Int32Array(queueSize);
  }

  /** Records what a freshly posted head carries. */
  track(head: number, slot: number, addr: number, len: number): void {
    this.headSlot[head] = slot;
    this.headAddr[head] = addr;
    this.headLen[head] = len;
  }

  /** The device returned `head`: its slot (RAW_BUFFER, or NOT_IN_FLIGHT if it was not posted), now forgotten. */
  untrack(head: number): number {
    const slot = this.headSlot[head];
    this.headSlot[head] = NOT_IN_FLIGHT;
    return slot;
  }

  /** Appends [start, end) of every pool slot the device holds. */
  postedSlotRanges(out: Array<[number, number]>): void {
    for (let h = 0; h < this.headSlot.length; h++) {
      const s = this.headSlot[h];
      if (s >= 0) out.push([this.pool.slotGpa(s), this.pool.slotGpa(s) + this.pool.slotSize]);
    }
  }

  /** Publishes what was added; kicks if the device asks for it. True if it kicked. */
  flush(): boolean {
    if (this.driver.publish() !== 0 && this.driver.needsKick() && this.kickFd >= 0) {
      eventfdWrite(this.kickFd, 1);
      return true;
    }
    return false;
  }

  /** The ring's device-visible IOVA range (desc .. end of used, whole pages). */
  iovaRange(): { iova: number; gpa: number; size: number } {
    const l = this.layout;
    const size = Math.ceil((l.end - l.descAddr) / PAGE_4K) * PAGE_4K;
    return { iova: this.descDev, gpa: l.descAddr, size };
  }

  closeFds(): void {
    if (this.kickFd >= 0) closeFd(this.kickFd);
    if (this.callFd >= 0) closeFd(this.callFd);
    this.kickFd = this.callFd = -1;
  }
}

/**
 * A pool of equal buffer slots in guest memory, handed out first-in first-out so every slot
 * gets used in turn (a buffer the device wrongly keeps using is soon someone else's, and the
 * canary checks see it). Allocation-free: the data path takes and returns slots per frame.
 */
import type { PoolRegion } from './guest-memory.js';

export class BufferPool {
  readonly gpa: number;
  /** Bytes of guest memory the pool spans (slots rounded up to its mapping block). */
  readonly bytes: number;
  /** FIFO ring of free slot numbers: freeCount of them from freeHead on. */
  private readonly free: Int32Array;
  private freeHead = 0;
  freeCount: number;

  constructor(region: PoolRegion, readonly slots: number, readonly slotSize: number) {
    this.gpa = region.gpa;
    this.bytes = region.bytes;
    this.free = new Int32Array(slots);
    for (let i = 0; i < slots; i++) this.free[i] = i;
    this.freeCount = slots;
  }

  /** Guest-physical address of a slot. */
  slotGpa(slot: number): number {
    return this.gpa + slot * this.slotSize;
  }

  /** The oldest free slot, or -1 if none is free. */
  take(): number {
    if (this.freeCount === 0) return -1;
    const s = this.free[this.freeHead];
    this.freeHead = this.freeHead + 1 === this.slots ? 0 : this.freeHead + 1;
    this.freeCount--;
    return s;
  }

  put(slot: number): void {
    let tail = this.freeHead + this.freeCount;
    if (tail >= this.slots) tail -= this.slots;
    this.free[tail] = slot;
    this.freeCount++;
  }
}

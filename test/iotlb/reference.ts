/**
 * An obviously-correct IOTLB for tests: a map from fixed-size unit index to the user
 * address of that unit and its permissions. Every insert/invalidate a test feeds it must
 * be aligned to `unit` (an invalidate may also run past the end of everything).
 */
import assert from 'node:assert/strict';
import { LOOKUP_DENIED, LOOKUP_MISS } from '../../src/iotlb/strategy.js';
import type { IotlbEntry } from '../../src/iotlb/strategy.js';

export interface Translation {
  /** LOOKUP_MISS, LOOKUP_DENIED or a mapped length. */
  result: number;
  uaddr: number;
}

interface Unit {
  uaddr: number;
  perm: number;
}

export class ReferenceIotlb {
  readonly units = new Map<number, Unit>();

  constructor(readonly unit: number) {}

  insert(e: IotlbEntry): void {
    assert.equal(e.iova % this.unit, 0, 'reference insert must be unit aligned');
    assert.equal(e.size % this.unit, 0, 'reference insert must be unit aligned');
    for (let off = 0; off < e.size; off += this.unit) {
      this.units.set((e.iova + off) / this.unit, { uaddr: e.uaddr + off, perm: e.perm });
    }
  }

  invalidate(iova: number, size: number): void {
    const end = iova + size; // may be inexact for huge sizes; only ever compared
    for (const k of [...this.units.keys()]) {
      const start = k * this.unit;
      if (start + this.unit > iova && start < end) {
        assert.ok(start >= iova && start + this.unit <= end, 'reference invalidate must be unit aligned');
        this.units.delete(k);
      }
    }
  }

  lookup(iova: number, len: number, access: number): Translation {
    let k = Math.floor(iova / this.unit);
    let u = this.units.get(k);
    if (u === undefined) return { result: LOOKUP_MISS, uaddr: 0 };
    if ((u.perm & access) !== access) return { result: LOOKUP_DENIED, uaddr: 0 };
    const uaddr = u.uaddr + (iova - k * this.unit);
    let mapped = (k + 1) * this.unit - iova;
    while (mapped < len) {
      const next = this.units.get(k + 1);
      if (next === undefined || next.uaddr !== u.uaddr + this.unit || (next.perm & access) !== access) break;
      mapped += this.unit;
      k++;
      u = next;
    }
    return { result: Math.min(mapped, len), uaddr };
  }

  /** Total mapped bytes. */
  mappedBytes(): number {
    return this.units.size * this.unit;
  }

  /** The unit containing iova, if mapped. */
  at(iova: number): Unit | undefined {
    return this.units.get(Math.floor(iova / this.unit));
  }
}

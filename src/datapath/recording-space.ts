/**
 * An AddressSpace decorator that records every translation for `serve --trace`. Only used
 * when tracing, so the untraced data path pays nothing for it.
 */
import { MAP_MISS, FAULT_DENIED, type AddressSpace } from '../memory/address-space.js';
import type { WideView } from '../memory/wide-view.js';
import { TranslationCode, type TranslationRingProducer } from './translation-ring.js';

export class RecordingAddressSpace implements AddressSpace {
  bytes: Uint8Array;
  wide?: WideView;
  offset = 0;
  missAddr = 0;
  faultKind = 0;
  /** Every translation is recorded, one by one: no window. */
  readonly windowBase = 0;
  readonly windowStart = 0;
  readonly windowEnd = 0;
  window(): boolean {
    return false;
  }
  countWindowed(): void {}
  get translatesOnDemand(): boolean {
    return this.inner.translatesOnDemand;
  }

  constructor(private readonly inner: AddressSpace, private readonly ring: TranslationRingProducer, private readonly queue: number) {
    this.bytes = inner.bytes;
    this.wide = inner.wide;
  }

  map(addr: number, len: number, access: number): number {
    const inner = this.inner;
    const n = inner.map(addr, len, access);
    this.bytes = inner.bytes;
    this.wide = inner.wide;
    this.offset = inner.offset;
    this.missAddr = inner.missAddr;
    this.faultKind = inner.faultKind;
    const result = n > 0 ? TranslationCode.hit : n === MAP_MISS ? TranslationCode.miss
      : inner.faultKind === FAULT_DENIED ? TranslationCode.denied : TranslationCode.fault;
    this.ring.record(this.queue, addr, n > 0 ? n : len, access, result);
    return n;
  }
}

/**
 * A run of device-writable (or readable) buffers reserved in one go by
 * VirtQueue.reserveRun(): the next available chains that are each one direct descriptor,
 * all inside windows of the data space (a guest-memory region, or an IOTLB span) in one
 * region, for a burst to fill with a plain loop and complete with VirtQueue.completeRun().
 *
 * Why a run and not one chain at a time: when the front-end's core owns the buffers' cache
 * lines, every store of the device's per-chain bookkeeping (queue fields, translation
 * fields, counters, a call's stack frame) waits behind those lines' ownership transfers,
 * and on this machine a transfer costs 40-200 ns depending on where the host placed the
 * two vCPUs. Keeping the per-chain state in locals and these preallocated arrays cut the
 * cost of a 64-byte frame into the guest by about a third (README, Performance).
 */
import { NO_WIDE, type WideView } from '../memory/wide-view.js';

const EMPTY = new Uint8Array(0);

export class BufferRun {
  /** The region every buffer of the run is in, and its wide views. */
  bytes: Uint8Array = EMPTY;
  wide: WideView = NO_WIDE;
  /**
   * The window (AddressSpace.window) while the run is reserved: buffers in [winStart,
   * winEnd), address a at bytes[a - winBase].
   */
  winBase = 0;
  winStart = 0;
  winEnd = 0;
  /** Per chain: the id to complete it with (split: head index; packed: buffer id). */
  readonly ids: Uint16Array;
  /** Per chain: where its buffer starts in `bytes` (a Uint8Array is at most 4 GiB). */
  readonly offsets: Uint32Array;
  /** Per chain: the length to report as used, set by whoever fills the run. */
  readonly used: Uint32Array;

  constructor(readonly capacity: number) {
    this.ids = new Uint16Array(capacity);
    this.offsets = new Uint32Array(capacity);
    this.used = new Uint32Array(capacity);
  }
}

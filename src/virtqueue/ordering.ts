/**
 * How a packed ring reads the flags the driver publishes with a release store (each
 * descriptor's AVAIL/USED word): an acquire, so that nothing read after it (the
 * descriptor's address, length and id) is older than the flags.
 *
 * On x86-64 every load is an acquire in hardware (TSO never reorders a load with a later
 * load) and V8 keeps typed-array loads in program order, so a plain load is enough there;
 * it is what DPDK's rte_atomic_load_explicit(..., acquire) compiles to. Atomics.load gives
 * the same order, but Node 20's V8 makes it a builtin call (~5 ns against under 1), once
 * per descriptor. Elsewhere (arm64, where a load may pass a load) rings keep Atomics.load.
 * Could the compiler answer a plain load from an earlier read of the same word? Between
 * bursts, and in enableNotifications() before its rescan, the worker makes atomic operations
 * that V8 treats as writing all memory, so not across them. Within a burst a position is read
 * again only while it was not available (once taken, the scan moves past it), so a reused
 * value could only hide a new buffer until the next burst, never hand out a stale one.
 *
 * The same holds for stores: x86-64 never reorders a store with an earlier store, so a plain
 * store of a used descriptor's flags is a release there (what DPDK's release stores compile
 * to): the frame and the descriptor's length, stored before it, are visible first. Elsewhere
 * such a store is Atomics.store.
 *
 * What no plain access gives is store -> load order: before the interrupt decision reads the
 * driver's event suppression, every used entry of the burst must be visible, or a driver
 * that enabled interrupts and found nothing new would sleep while the device, reading the
 * old flags, decides not to interrupt. A seq_cst store is that fence (storeLoadFence(), or
 * the publishing Atomics.store itself).
 */
export const PLAIN_LOAD_IS_ACQUIRE = process.arch === 'x64';
export const PLAIN_STORE_IS_RELEASE = process.arch === 'x64';

/** A word of this thread's own for storeLoadFence() to store to (no ring word is rewritten). */
const FENCE_WORD = new Int32Array(new SharedArrayBuffer(4));

/** A full fence: every store before it is visible before any load after it. */
export function storeLoadFence(): void {
  Atomics.store(FENCE_WORD, 0, 0);
}

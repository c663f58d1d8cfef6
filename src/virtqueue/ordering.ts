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
 * Stores need no such care: a packed ring's used descriptors are written with plain stores
 * behind a batch head the driver cannot pass, and the head is published last with one
 * Atomics.store (packed.ts flushUsed). That seq_cst store is also the store -> load fence
 * the interrupt decision needs: every used entry of the burst must be visible before it
 * reads the driver's event suppression, or a driver that enabled interrupts and found
 * nothing new would sleep while the device, reading the old flags, decides not to interrupt.
 */
export const PLAIN_LOAD_IS_ACQUIRE = process.arch === 'x64';

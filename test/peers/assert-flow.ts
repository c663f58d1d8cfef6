// The check both the peer tests and the trace-record tests make after a QEMU guest ran against
// dpdk-testpmd's vhost backend: the guest finished, its link came up, and frames went both ways.
import assert from 'node:assert/strict';
import type { FinalStats } from './dpdk.js';
import type { GuestResult } from './qemu.js';

export function assertGuestTestpmdFlow(r: GuestResult, fin: FinalStats, ctx: string): void {
  assert.ok(r.done, `guest ran to VIT-DONE${ctx}`);
  assert.equal(r.error, undefined, ctx);
  assert.ok(r.link, `guest link came up${ctx}`);
  assert.ok(r.stats && r.stats.txPackets > 0, `guest sent frames${ctx}`);
  assert.ok(r.stats && r.stats.rxPackets > 0, `guest received the swapped frames back${ctx}`);
  assert.ok((fin.accumulated?.rxPackets ?? 0) > 0, `testpmd received guest frames${ctx}`);
  assert.ok((fin.accumulated?.txPackets ?? 0) > 0, `testpmd sent frames to the guest${ctx}`);
}

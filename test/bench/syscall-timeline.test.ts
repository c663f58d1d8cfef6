// `guest-iommu.js --syscalls` reads `perf script` output of QEMU and a back-end; this is an
// excerpt recorded with it (fixtures/syscalls/README.md): QEMU's main loop answering misses
// with UPDATEs, then its vCPU sending three INVALIDATEs, each acked by serve's reader thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { readTimeline } from '../../bench/syscall-timeline.js';

const EXCERPT = readFileSync(fileURLToPath(new URL('../../../fixtures/syscalls/serve-strict-tx.perf-script.txt', import.meta.url)), 'utf8');
const SERVE = 29093;
const QEMU = 29104;

const meanUs = (h: { summary(): { meanUs: number } }): number => h.summary().meanUs;

test('a front-end thread\'s wait for each ack splits into the back-end woken, its handling and the thread woken again', () => {
  const t = readTimeline(EXCERPT, SERVE, [SERVE, QEMU]);
  const vcpu = t.frontEndWaits?.get('qemu-system-x86 29106');
  assert.ok(vcpu, `the vCPU thread's waits: ${[...(t.frontEndWaits?.keys() ?? [])].join(', ')}`);
  // By hand from the excerpt (µs after 48905.482000): sent 629 / 710 / 733, serve read 665 / 718 /
  // 737, its ack 674 / 720 / 738, the vCPU's read of it 685 / 725 / 743.
  assert.equal(vcpu.sentToAck.count, 3);
  assert.equal(vcpu.sentToRead.count, 3);
  assert.ok(Math.abs(meanUs(vcpu.sentToAck) - (56 + 15 + 10) / 3) < 0.01, `sent → ack ${meanUs(vcpu.sentToAck)}`);
  assert.ok(Math.abs(meanUs(vcpu.sentToRead) - (36 + 8 + 4) / 3) < 0.01, `sent → read ${meanUs(vcpu.sentToRead)}`);
  assert.ok(Math.abs(meanUs(vcpu.readToAck) - (9 + 2 + 1) / 3) < 0.01, `read → ack ${meanUs(vcpu.readToAck)}`);
  assert.ok(Math.abs(meanUs(vcpu.ackToResumed) - (11 + 5 + 5) / 3) < 0.01, `ack → resumed ${meanUs(vcpu.ackToResumed)}`);
});

test('the main loop\'s waits for its UPDATEs\' acks split the same way', () => {
  const t = readTimeline(EXCERPT, SERVE, [SERVE, QEMU]);
  const main = t.frontEndWaits?.get('qemu-system-x86 main');
  assert.ok(main, 'the main loop sent UPDATEs in the excerpt');
  // By hand (µs after 48905.482000): sent on fd 3 at 357 / 372 / 403 / 420 / 435, serve read
  // 361 / 376 / 408 / 423 / 439, its ack 362 / 377 / 409 / 425 / 440, the main loop's next read
  // 366 / 394 / 413 / 428 / 452.
  assert.equal(main.sentToAck.count, 5);
  assert.equal(main.sentToRead.count, 5);
  assert.ok(Math.abs(meanUs(main.sentToAck) - (9 + 22 + 10 + 8 + 17) / 5) < 0.01, `sent → ack ${meanUs(main.sentToAck)}`);
  assert.ok(Math.abs(meanUs(main.sentToRead) - (4 + 4 + 5 + 3 + 4) / 5) < 0.01, `sent → read ${meanUs(main.sentToRead)}`);
  assert.ok(Math.abs(meanUs(main.readToAck) - (1 + 1 + 1 + 2 + 1) / 5) < 0.01, `read → ack ${meanUs(main.readToAck)}`);
  assert.ok(Math.abs(meanUs(main.ackToResumed) - (4 + 17 + 4 + 3 + 12) / 5) < 0.01, `ack → resumed ${meanUs(main.ackToResumed)}`);
});

/**
 * The test front-end's side of live-migration dirty logging, as QEMU does it: a log in
 * shared memory (a memfd, LOG_SHMFD) with one bit per 4 KiB page of guest-physical memory
 * (bit p % 8 of byte p / 8), handed over with SET_LOG_BASE; then LOG_ALL in SET_FEATURES and
 * every ring's addresses again with VHOST_VRING_F_LOG and log_guest_addr = the used ring's
 * guest-physical address (QEMU's vhost_migration_log(): log resize, then vhost_dev_set_log()).
 * sync() reads and clears the bitmap as QEMU's migration bitmap sync does (atomic exchange
 * per word, so marks the back-end makes meanwhile are not lost) and counts the pages marked.
 */
import { closeFd, mapFd, memfdCreate, unmap } from '../../../src/sys/index.js';
import { LOG_PAGE, logBytesFor } from '../../../src/memory/dirty-log.js';
import { PAGE_4K } from './iommu.js';

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

export class FrontendDirtyLog {
  readonly memfd: number;
  /** Bytes of bitmap announced with SET_LOG_BASE (mmap_size). */
  readonly size: number;
  /** The bitmap as this process sees it. */
  readonly bits: Uint8Array;
  /** Pages counted by sync() so far. */
  pagesSynced = 0;
  private readonly words: Int32Array;
  private readonly mapping: ArrayBuffer;
  private closed = false;

  constructor(guestBytes: number) {
    this.size = logBytesFor(guestBytes);
    // The file (and our mapping) rounded up to a page; the log itself is `size` bytes at offset 0.
    const fileBytes = Math.ceil(this.size / PAGE_4K) * PAGE_4K;
    this.memfd = memfdCreate('vit-frontend-dirty-log', fileBytes);
    try {
      this.mapping = mapFd(this.memfd, 0, fileBytes, true);
    } catch (err) {
      closeFd(this.memfd);
      throw err;
    }
    this.bits = new Uint8Array(this.mapping, 0, this.size);
    this.words = new Int32Array(this.mapping, 0, this.size >> 2);
  }

  /** Whether the page holding guest-physical `gpa` is marked (no clearing). */
  marked(gpa: number): boolean {
    const page = Math.floor(gpa / LOG_PAGE);
    return (this.bits[page >> 3]! & (1 << (page & 7))) !== 0;
  }

  /** Reads and clears the bitmap; returns how many pages were marked since the last sync. */
  sync(): number {
    let n = 0;
    const w = this.words;
    for (let i = 0; i < w.length; i++) {
      if (w[i] !== 0) n += popcount32(Atomics.exchange(w, i, 0));
    }
    for (let b = w.length << 2; b < this.size; b++) {
      if (this.bits[b] !== 0) n += popcount32(Atomics.exchange(this.bits, b, 0));
    }
    this.pagesSynced += n;
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    unmap(this.mapping);
    closeFd(this.memfd);
  }
}

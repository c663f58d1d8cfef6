// Plain fd operations: eventfds, read/write/close, blocking poll for workers, and
// /proc-based introspection used by tests and diagnostics.
import { fstatSync, readdirSync, readlinkSync } from 'node:fs';
import { native } from './native.js';
import { checkBytes, checkFd, checkInt, windowStart, windowLength, systemError } from './errors.js';

/** eventfd(EFD_NONBLOCK|EFD_CLOEXEC). */
export function eventfdCreate(initial = 0): number {
  return native().eventfdCreate(checkInt('eventfdCreate initial', initial, 0, 0xffffffff));
}

/** Reads and resets the counter; 0 when it is already 0 (EAGAIN). Values above 2^53 lose precision. */
export function eventfdRead(fd: number): number {
  return native().eventfdRead(checkFd('eventfdRead fd', fd));
}

/** Adds value (default 1) to the counter. EAGAIN is thrown if it would overflow. */
export function eventfdWrite(fd: number, value = 1): void {
  checkFd('eventfdWrite fd', fd);
  native().eventfdWrite(fd, checkInt('eventfdWrite value', value, 1, Number.MAX_SAFE_INTEGER));
}

/** close(2): EBADF throws, EINTR is ignored (Linux frees the fd anyway). */
export function closeFd(fd: number): void {
  native().closeFd(checkFd('closeFd fd', fd));
}

/** read(2) into into[offset, offset+length): bytes read, 0 at EOF, -1 on EAGAIN. */
export function readFd(fd: number, into: Uint8Array, offset: number, length: number): number {
  checkFd('readFd fd', fd);
  checkBytes('readFd into', into);
  const start = windowStart('readFd', into, offset);
  const size = windowLength('readFd', into, start, length);
  if (size === 0) throw new RangeError('readFd length must be > 0 (0 bytes would read as EOF)');
  return native().readFd(fd, into, start, size);
}

/** write(2) from from[offset, offset+length): bytes written, -1 on EAGAIN. */
export function writeFd(fd: number, from: Uint8Array, offset: number, length: number): number {
  checkFd('writeFd fd', fd);
  checkBytes('writeFd from', from);
  const start = windowStart('writeFd', from, offset);
  const size = windowLength('writeFd', from, start, length);
  return native().writeFd(fd, from, start, size);
}

/** Most pieces one writevFd() takes after its head (Linux's IOV_MAX is 1024). */
export const WRITEV_MAX_PIECES = 1023;

/**
 * One writev(2) of head[0, headLength) followed by pieces[first, end) of a scatter list
 * (parallel arrays: piece i is pieces[i][offsets[i], offsets[i] + lengths[i])): bytes
 * written, -1 on EAGAIN. Each piece is checked against its array in the addon.
 */
export function writevFd(fd: number, head: Uint8Array, headLength: number, pieces: readonly Uint8Array[], offsets: Uint32Array, lengths: Uint32Array, first: number, end: number): number {
  checkFd('writevFd fd', fd);
  checkBytes('writevFd head', head);
  checkInt('writevFd headLength', headLength, 0, head.length);
  if (!(offsets instanceof Uint32Array) || !(lengths instanceof Uint32Array)) throw new TypeError('writevFd offsets and lengths must be Uint32Arrays');
  checkInt('writevFd end', end, 0, Math.min(pieces.length, offsets.length, lengths.length));
  checkInt('writevFd first', first, Math.max(0, end - WRITEV_MAX_PIECES), end);
  return native().writevFd(fd, head, headLength, pieces, offsets, lengths, first, end);
}

/**
 * BLOCKING poll(2) for POLLIN on fds[0..count); blocks the calling thread, so use it in worker
 * threads only. Sets ready[i] to 1 when fds[i] is readable, hung up or in error (the next read
 * tells which), else 0. Negative entries are ignored, as poll(2) does. timeoutMs -1 waits
 * forever. Returns how many are ready, 0 on timeout. Does not allocate per call.
 */
export function pollReadable(fds: Int32Array, count: number, timeoutMs: number, ready: Uint8Array): number {
  if (!(fds instanceof Int32Array)) throw new TypeError('pollReadable fds must be an Int32Array');
  checkBytes('pollReadable ready', ready);
  checkInt('pollReadable count', count, 0, fds.length);
  if (ready.length < count) throw new RangeError(`pollReadable ready has ${ready.length} slots, needs ${count}`);
  checkInt('pollReadable timeoutMs', timeoutMs, -1, 0x7fffffff);
  return native().pollReadable(fds, count, timeoutMs, ready);
}

/** Full (seq_cst) fence: orders a ring store before a later load, as event-idx checks need. */
export function memoryFence(): void {
  native().memoryFence();
}

/**
 * sched_yield(2): lets any other runnable thread on this CPU run first. A polling worker
 * with nothing to do calls it, so a thread woken onto its CPU (the control thread with an
 * IOTLB message, the front-end's) runs at once instead of after the worker's time slice.
 */
export function yieldCpu(): void {
  native().yieldCpu();
}

/**
 * Pins one thread of this process (a tid from /proc/self/task; 0: the calling thread) to
 * `cpus`. Threads it creates afterwards inherit the set.
 */
export function setThreadAffinity(tid: number, cpus: readonly number[]): void {
  checkInt('setThreadAffinity tid', tid, 0, 0x7fffffff);
  if (cpus.length === 0) throw new RangeError('setThreadAffinity needs at least one CPU');
  for (const cpu of cpus) checkInt('setThreadAffinity cpu', cpu, 0, 1023);
  native().setThreadAffinity(tid, [...cpus]);
}

export type FdKindName = 'memfd' | 'eventfd' | 'socket' | 'other';

/** What an fd refers to, from /proc/self/fd, plus its fstat size. Throws EBADF if not open. */
export function fdKind(fd: number): { kind: FdKindName; size: number } {
  checkFd('fdKind fd', fd);
  let target: string;
  try {
    target = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw systemError('readlink', 'EBADF', `fd ${fd} is not open`);
  }
  const kind: FdKindName = target.startsWith('/memfd:')
    ? 'memfd'
    : target === 'anon_inode:[eventfd]'
      ? 'eventfd'
      : target.startsWith('socket:[')
        ? 'socket'
        : 'other';
  return { kind, size: fstatSync(fd).size };
}

/** Open fds of this process (all threads share them). */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length - 1; // minus the fd readdir itself holds
}

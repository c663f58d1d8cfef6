// Unix stream sockets with SCM_RIGHTS fd passing (vhost-user's transport).
import { lstatSync, unlinkSync } from 'node:fs';
import { native } from './native.js';
import { checkBytes, checkFd, checkInt, checkString, windowStart, windowLength, systemError, type SystemError } from './errors.js';

/** sun_path is 108 bytes including the terminating NUL. */
/** sun_path holds 108 bytes with the terminating NUL. */
export const MAX_PATH_BYTES = 107;
/** vhost-user never sends more than 8 fds in one message (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_FDS = 8;

export interface Received {
  bytes: number;
  fds: number[];
}

/**
 * Binds and listens (SOCK_NONBLOCK|SOCK_CLOEXEC). A socket file left by an earlier run is
 * removed first; if something still accepts connections on it, EADDRINUSE is thrown instead.
 * A non-socket file at the path is never removed (bind then fails with EADDRINUSE).
 */
export function listenUnix(path: string, backlog = 64): number {
  checkString('listenUnix path', path, MAX_PATH_BYTES);
  checkInt('listenUnix backlog', backlog, 0, 0x7fffffff);
  removeStaleSocket(path);
  return native().listenUnix(path, backlog);
}

function removeStaleSocket(path: string): void {
  let isSocket = false;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there (or unreadable: let bind report it)
  }
  if (!isSocket) return;
  try {
    native().closeFd(native().connectUnix(path));
  } catch (error) {
    if ((error as SystemError).code !== 'ECONNREFUSED') return;
    try {
      unlinkSync(path);
    } catch {
      // lost a race with another cleaner; bind reports anything that matters
    }
    return;
  }
  throw systemError('bind', 'EADDRINUSE', `a live listener owns ${path}`);
}

/** Blocking connect, then O_NONBLOCK. Throws ENOENT / ECONNREFUSED etc. */
export function connectUnix(path: string): number {
  checkString('connectUnix path', path, MAX_PATH_BYTES);
  return native().connectUnix(path);
}

/** -1 when nothing is pending. The accepted fd is NONBLOCK|CLOEXEC. */
export function acceptUnix(listenFd: number): number {
  return native().acceptUnix(checkFd('acceptUnix fd', listenFd));
}

/** AF_UNIX SOCK_STREAM pair, both ends NONBLOCK|CLOEXEC. */
export function socketPair(): [number, number] {
  return native().socketPair();
}

const NO_FDS: readonly number[] = [];

/**
 * sendmsg(MSG_NOSIGNAL) with the fds as SCM_RIGHTS. Returns bytes sent (possibly fewer than
 * data.length: the fds travel with the first byte, so resend only the rest without fds),
 * or -1 on EAGAIN (nothing sent, fds not passed).
 */
export function sendMessage(fd: number, data: Uint8Array, fds: readonly number[] = NO_FDS): number {
  checkFd('sendMessage fd', fd);
  checkBytes('sendMessage data', data);
  if (!Array.isArray(fds)) throw new TypeError('sendMessage fds must be an array of fds');
  if (fds.length > MAX_FDS) {
    throw systemError('sendmsg', 'EINVAL', `${fds.length} fds in one message, at most ${MAX_FDS}`, RangeError);
  }
  for (const passed of fds) checkFd('sendMessage fds[]', passed);
  // A zero-length stream send transmits nothing, so its fds would be silently dropped.
  if (fds.length > 0 && data.length === 0) {
    throw systemError('sendmsg', 'EINVAL', 'fds need at least one data byte to travel with', RangeError);
  }
  return native().sendMessage(fd, data, 0, data.length, fds);
}

/** SCM_MAX_FD: the most fds one recvmsg can install (the addon's control buffer holds this many). */
const SCM_MAX_FD = 253;
/** What the addon's receiveMessage says besides the byte count: fd count, truncated flag, the fds (per thread). */
const receiveMeta = new Int32Array(2 + SCM_MAX_FD);

/**
 * recvmsg(MSG_CMSG_CLOEXEC) into into[offset, offset+length) with room for maxFds fds.
 * null on EAGAIN; bytes 0 means EOF. If the kernel had to drop fds (MSG_CTRUNC), every fd
 * that did arrive is closed and an Error with code 'ECTRUNC' (and .bytes, the data bytes
 * consumed) is thrown. maxFds exists for tests; the kernel rounds the room up, so a
 * slightly larger count may arrive.
 */
export function receiveMessage(
  fd: number,
  into: Uint8Array,
  offset?: number,
  length?: number,
  maxFds = MAX_FDS,
): Received | null {
  checkFd('receiveMessage fd', fd);
  checkBytes('receiveMessage into', into);
  const start = windowStart('receiveMessage', into, offset);
  const size = windowLength('receiveMessage', into, start, length);
  if (size === 0) throw new RangeError('receiveMessage length must be > 0 (0 bytes would read as EOF)');
  checkInt('receiveMessage maxFds', maxFds, 0, SCM_MAX_FD);
  const meta = receiveMeta;
  const bytes = native().receiveMessage(fd, into, start, size, maxFds, meta);
  if (bytes < 0) return null;
  const count = meta[0];
  const fds: number[] = [];
  for (let i = 0; i < count; i++) fds.push(meta[2 + i]);
  if (meta[1] !== 0) {
    for (const arrived of fds) native().closeFd(arrived);
    const error = systemError('recvmsg', 'ECTRUNC', `ancillary data truncated, ${count} received fds closed`);
    (error as SystemError & { bytes: number }).bytes = bytes;
    throw error;
  }
  return { bytes, fds };
}


/**
 * Paths from the command line checked before the work that needs them starts, so a bad one
 * is refused in one line naming the flag, the path and the cause, and a run is not lost at
 * its end (or a socket left behind) for a missing directory. Nothing here creates anything.
 */
import { lstatSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { closeFd, connectUnix, MAX_PATH_BYTES } from '../sys/index.js';

/** The problem with the directory `path` would go in, or null. */
function directoryProblem(flag: string, path: string): string | null {
  if (path === '') return `${flag}: the path is empty`;
  const dir = dirname(path);
  try {
    return statSync(dir).isDirectory() ? null : `${flag} ${path}: ${dir} is not a directory`;
  } catch {
    return `${flag} ${path}: directory ${dir} does not exist`;
  }
}

/** Why `path` (given as `flag`) cannot be written as a file, or null. */
export function outputPathProblem(flag: string, path: string): string | null {
  const dir = directoryProblem(flag, path);
  if (dir) return dir;
  try {
    if (statSync(path).isDirectory()) return `${flag} ${path}: is a directory`;
  } catch {
    // not there yet: it will be created
  }
  return null;
}

/** The problem with `path` as any Unix socket address, or null. */
export function socketAddressProblem(flag: string, path: string): string | null {
  const bytes = Buffer.byteLength(path);
  if (bytes === 0) return `${flag}: the path is empty`;
  if (bytes > MAX_PATH_BYTES) return `${flag} ${path}: ${bytes} bytes; a Unix socket path holds at most ${MAX_PATH_BYTES}`;
  return null;
}

/**
 * The problem with listening on `path` (given as `flag`), or null: a bad address or
 * directory, a file that is not a socket, or a socket another process serves (a stale one
 * is fine: listening replaces it).
 */
export function listenPathProblem(flag: string, path: string): string | null {
  const problem = socketAddressProblem(flag, path) ?? directoryProblem(flag, path);
  if (problem) return problem;
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return null; // nothing there yet
  }
  if (!isSocket) return `${flag} ${path}: exists and is not a socket (not replacing it)`;
  try {
    closeFd(connectUnix(path));
    return `${flag} ${path}: another process is listening on it`;
  } catch {
    return null;
  }
}

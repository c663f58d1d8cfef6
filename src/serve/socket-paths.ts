/**
 * serve's socket paths checked before anything listens, so a bad one is refused in one line
 * naming the flag, the path and the cause, and nothing is left behind: too long for a Unix
 * socket, a missing directory, a file that is not a socket, a socket another process serves,
 * or the same path twice.
 */
import { lstatSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { closeFd, connectUnix, MAX_PATH_BYTES } from '../sys/index.js';

/** The problem with `path` as any Unix socket address, or null. */
function addressProblem(flag: string, path: string): string | null {
  const bytes = Buffer.byteLength(path);
  if (bytes === 0) return `${flag}: the path is empty`;
  if (bytes > MAX_PATH_BYTES) return `${flag} ${path}: ${bytes} bytes; a Unix socket path holds at most ${MAX_PATH_BYTES}`;
  return null;
}

/** The problem with listening on `path` (given as `flag`), or null if there is none. */
export function listenPathProblem(flag: string, path: string): string | null {
  const address = addressProblem(flag, path);
  if (address) return address;
  const dir = dirname(path);
  try {
    if (!statSync(dir).isDirectory()) return `${flag} ${path}: ${dir} is not a directory`;
  } catch {
    return `${flag} ${path}: directory ${dir} does not exist`;
  }
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
    return null; // a stale socket: listening replaces it
  }
}

/** Every problem with serve's listening paths, one line each (empty when there is none). */
export function servePathProblems(sockets: readonly string[], control: string, client: boolean): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const path of sockets) {
    if (seen.has(path)) problems.push(`--socket ${path}: given twice`);
    seen.add(path);
    // With --client the path is the front-end's listening socket: only its length can be wrong here.
    const problem = client ? addressProblem('--socket', path) : listenPathProblem('--socket', path);
    if (problem) problems.push(problem);
  }
  if (seen.has(control)) problems.push(`--control ${control}: the same path as a --socket`);
  else {
    const problem = listenPathProblem('--control', control);
    if (problem) problems.push(problem);
  }
  return problems;
}

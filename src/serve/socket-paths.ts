/**
 * serve's listening paths checked together before anything listens (src/cli/paths.ts checks
 * each one): adds the same path given twice, and the control socket on a vhost socket.
 */
import { listenPathProblem, socketAddressProblem } from '../cli/paths.js';

/** Every problem with serve's listening paths, one line each (empty when there is none). */
export function servePathProblems(sockets: readonly string[], control: string, client: boolean): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const path of sockets) {
    if (seen.has(path)) problems.push(`--socket ${path}: given twice`);
    seen.add(path);
    // With --client the path is the front-end's listening socket: only its length can be wrong here.
    const problem = client ? socketAddressProblem('--socket', path) : listenPathProblem('--socket', path);
    if (problem) problems.push(problem);
  }
  if (seen.has(control)) problems.push(`--control ${control}: the same path as a --socket`);
  else {
    const problem = listenPathProblem('--control', control);
    if (problem) problems.push(problem);
  }
  return problems;
}

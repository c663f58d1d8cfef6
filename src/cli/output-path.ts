/**
 * An output file checked before the work that produces it starts, so a run is not lost at its
 * end to a missing directory: one line naming the flag, the path and the cause.
 */
import { statSync } from 'node:fs';
import { dirname } from 'node:path';

/** Why `path` (given as `flag`) cannot be written, or null. Never creates directories. */
export function outputPathProblem(flag: string, path: string): string | null {
  if (path === '') return `${flag}: the path is empty`;
  const dir = dirname(path);
  try {
    if (!statSync(dir).isDirectory()) return `${flag} ${path}: ${dir} is not a directory`;
  } catch {
    return `${flag} ${path}: directory ${dir} does not exist`;
  }
  try {
    if (statSync(path).isDirectory()) return `${flag} ${path}: is a directory`;
  } catch {
    // not there yet: it will be created
  }
  return null;
}

/** The benches' C helpers (bench/c/NAME.c), each compiled with `cc` once per process. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../test/peers/util.js';

const built = new Map<string, string>();

/**
 * The path of bench/c/NAME.c compiled into a temporary directory (`shared`: as a shared object
 * for LD_PRELOAD); throws with cc's reason when it cannot be built.
 */
export function cProgram(name: string, { shared = false } = {}): string {
  const key = shared ? `${name}.so` : name;
  const known = built.get(key);
  if (known) return known;
  const out = join(mkdtempSync(join(tmpdir(), `vit-${name}-`)), key);
  const flags = shared ? ['-shared', '-fPIC'] : [];
  const cc = spawnSync('cc', ['-O2', ...flags, '-o', out, join(repoRoot(), 'bench', 'c', `${name}.c`), ...(shared ? ['-ldl'] : [])], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cannot build bench/c/${name}.c: ${(cc.error?.message ?? cc.stderr).trim()}`);
  built.set(key, out);
  return out;
}

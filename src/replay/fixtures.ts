/** Where `bench` finds things: the package root, the bundled trace fixtures, strategy lists. */
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getStrategy, strategies } from '../iotlb/registry.js';
import type { StrategyDefinition } from '../iotlb/strategy.js';
import { TRACE_MAGIC, TraceFlags } from '../trace/format.js';

/** The directory holding this package's package.json (works from src/ and from dist/). */
export function packageRoot(from: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(from));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'vhost-iotlb') return dir;
      } catch {
        // not ours; keep going up
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the vhost-iotlb package root');
    dir = up;
  }
}

/** The top-level fixtures/traces/*.vhtrace under `root`, sorted by name (`npm run bench`'s set). */
export function fixtureTraces(root: string = packageRoot()): string[] {
  return tracesIn(join(root, 'fixtures', 'traces'));
}

function tracesIn(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.vhtrace')).sort().map((f) => join(dir, f));
}

/**
 * Every bundled trace `bench` runs without arguments: fixtures/traces/*.vhtrace and the
 * proxy recordings in fixtures/traces/recorded/ — real sessions first (the header's
 * SYNTHETIC flag is clear), then synthetic ones, each group by name. Real sessions lead
 * because choosing a strategy for real workloads is what the benchmark is for.
 */
export function bundledTraces(root: string = packageRoot()): string[] {
  const all = [...fixtureTraces(root), ...tracesIn(join(root, 'fixtures', 'traces', 'recorded'))];
  const real = all.filter((f) => !isSynthetic(f));
  return [...real, ...all.filter((f) => !real.includes(f))];
}

/** Whether a trace file's header has the SYNTHETIC flag; false if unreadable (its load reports why). */
function isSynthetic(path: string): boolean {
  const head = new Uint8Array(12);
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    if (readSync(fd, head, 0, head.length, 0) < head.length) return false;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (!TRACE_MAGIC.every((b, i) => head[i] === b)) return false;
  return ((head[10] | (head[11] << 8)) & TraceFlags.Synthetic) !== 0;
}

/**
 * Strategies from `--strategy` values: names separated by commas (repeatable), or `all`.
 * Throws the registry's error (which lists the valid names) for an unknown one.
 */
export function parseStrategies(values: readonly string[] | undefined): StrategyDefinition[] {
  const names = (values ?? ['all']).flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  if (names.length === 0 || names.includes('all')) return [...strategies];
  const out: StrategyDefinition[] = [];
  for (const name of names) {
    const def = getStrategy(name);
    if (!out.includes(def)) out.push(def);
  }
  return out;
}

/** Display name of a trace file: its base name without `.vhtrace`. */
export function traceName(path: string): string {
  const base = path.split(/[\\/]/).pop() ?? path;
  return base.endsWith('.vhtrace') ? base.slice(0, -'.vhtrace'.length) : base;
}

/** Where `bench` finds things: the package root, the bundled trace fixtures, strategy lists. */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getStrategy, strategies } from '../iotlb/registry.js';
import type { StrategyDefinition } from '../iotlb/strategy.js';

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

/** The bundled traces: every fixtures/traces/*.vhtrace under `root`, sorted by name. */
export function fixtureTraces(root: string = packageRoot()): string[] {
  const dir = join(root, 'fixtures', 'traces');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.vhtrace')).sort().map((f) => join(dir, f));
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

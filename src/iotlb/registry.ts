/**
 * Every IOTLB cache strategy, by name. Adding one = one file under strategies/ that
 * exports a StrategyDefinition, plus one line here.
 */
import type { StrategyDefinition } from './strategy.js';
import { dpdk } from './strategies/dpdk.js';
import { lru } from './strategies/lru.js';
import { interval } from './strategies/interval.js';
import { coalescing } from './strategies/coalescing.js';

export const strategies: readonly StrategyDefinition[] = Object.freeze([
  dpdk,
  lru,
  interval,
  coalescing,
]);

export function strategyNames(): string[] {
  return strategies.map((s) => s.name);
}

/** The strategy called `name`; throws an Error listing the valid names otherwise. */
export function getStrategy(name: string): StrategyDefinition {
  const found = strategies.find((s) => s.name === name);
  if (found === undefined) {
    throw new Error(`unknown IOTLB strategy "${name}"; valid strategies: ${strategyNames().join(', ')}`);
  }
  return found;
}

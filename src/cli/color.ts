/**
 * Colour decisions for what the commands print. chalk 5 honours FORCE_COLOR, --color/--no-color and
 * non-TTY streams, but not NO_COLOR (https://no-color.org), so that is added here:
 * FORCE_COLOR (explicit) wins, then NO_COLOR (non-empty) turns colour off, then chalk decides.
 */
import { Chalk, supportsColor, type ChalkInstance } from 'chalk';

export type ColorLevel = 0 | 1 | 2 | 3;

export function colorLevel(
  stream: { isTTY?: boolean } = process.stdout,
  env: NodeJS.ProcessEnv = process.env,
): ColorLevel {
  if ('FORCE_COLOR' in env) return supportsColor ? supportsColor.level : 0;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return 0;
  if (!stream.isTTY) return 0;
  return supportsColor ? supportsColor.level : 0;
}

/** A chalk instance for `stream` (default stdout), or a colourless one when `enabled` is false. */
export function makeChalk(enabled?: boolean, stream?: { isTTY?: boolean }): ChalkInstance {
  const level = enabled === false ? 0 : colorLevel(stream);
  return new Chalk({ level: enabled === true && level === 0 ? 1 : level });
}

/** The colourless chalk: what tests and JSON paths use. */
export const plain: ChalkInstance = new Chalk({ level: 0 });

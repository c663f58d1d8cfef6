/** Checks for bench options read with node:util parseArgs (which hands every value over as a string). */

/** The value of `--flag` as an integer of at least 1, or an error naming the flag. */
export function positiveInt(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag}: "${value}" is not a positive integer`);
  return n;
}

/** The value of `--flag` as a comma-separated list of the `allowed` names, or an error naming the flag. */
export function listOf<T extends string>(flag: string, value: string, allowed: readonly T[]): T[] {
  const items = value.split(',').map((v) => v.trim()).filter(Boolean);
  for (const item of items) if (!allowed.includes(item as T)) throw new Error(`--${flag}: "${item}" is not one of ${allowed.join(', ')}`);
  if (items.length === 0) throw new Error(`--${flag}: empty`);
  return items as T[];
}

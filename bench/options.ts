/** Checks for bench options read with node:util parseArgs (which hands every value over as a string). */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

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

/**
 * `--serve-bin NAME=PATH` (or a bare PATH, the column then named after its checkout:
 * /tmp/old/bin/run.js -> 'old'): a serve column run from another checkout's bin/run.js.
 */
export function serveBin(text: string | undefined): { name: string; bin: string } {
  if (!text) throw new Error('--serve-bin needs NAME=PATH (PATH: bin/run.js of another checkout)');
  const eq = text.indexOf('=');
  const bin = resolve(eq > 0 ? text.slice(eq + 1) : text);
  const name = eq > 0 ? text.slice(0, eq) : basename(dirname(dirname(bin)));
  if (existsSync(bin) && statSync(bin).isDirectory()) throw new Error(`--serve-bin ${text}: give the bin/run.js file, not a directory`);
  return { name, bin };
}

/** `--serve-variant 'NAME=--flag value'`: a serve column of this checkout with those flags. */
export function serveVariant(text: string | undefined): { name: string; args: string[] } {
  const eq = text?.indexOf('=') ?? -1;
  if (!text || eq <= 0) throw new Error("--serve-variant needs 'NAME=--flag value' (this checkout's serve with those flags)");
  return { name: text.slice(0, eq), args: text.slice(eq + 1).split(/\s+/).filter(Boolean) };
}

/**
 * What every bench entry does with its command line: `--help` answered from the script's
 * own header comment, a bad option reported in one line, and checks for option values
 * (node:util parseArgs hands every value over as a string).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * `-h` / `--help` anywhere on the command line: prints the running script's header comment
 * (its first block comment, which tsc keeps: usage, options, what it measures) and exits 0,
 * before anything starts. One text for the source and the help, so they cannot disagree.
 */
export function answerHelp(scriptUrl: string): void {
  if (!process.argv.slice(2).some((arg) => arg === '-h' || arg === '--help')) return;
  const header = /^\/\*\*([\s\S]*?)\*\//.exec(readFileSync(fileURLToPath(scriptUrl), 'utf8'));
  const text = header ? header[1]!.split('\n').map((line) => line.replace(/^\s*\* ?/, '')).join('\n').trim() : 'no usage text';
  console.log(text);
  process.exit(0);
}

/** For a bench whose settings are environment variables: any argument is a mistake, said in one line (exit 2). */
export function refuseArguments(bench: string): void {
  const args = process.argv.slice(2);
  optionsOrExit(bench, () => {
    if (args.length > 0) throw new Error(`takes no arguments (its settings are environment variables), got: ${args.join(' ')}`);
  });
}

/** Runs a bench's option parsing; a bad option ends the process with one line naming it (exit 2), not a stack. */
export function optionsOrExit<T>(bench: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    console.error(`${bench}: ${(err as Error).message} (--help lists the options)`);
    process.exit(2);
  }
}

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
 * `--serve-bin NAME=PATH` or `--proxy-bin NAME=PATH` (or a bare PATH, the column then named
 * after its checkout: /tmp/old/bin/run.js -> 'old'): a column run from another checkout's
 * bin/run.js (its serve, or its `trace record`).
 */
export function checkoutBin(text: string | undefined, flag = '--serve-bin'): { name: string; bin: string } {
  if (!text) throw new Error(`${flag} needs NAME=PATH (PATH: bin/run.js of another checkout)`);
  const eq = text.indexOf('=');
  const bin = resolve(eq > 0 ? text.slice(eq + 1) : text);
  const name = eq > 0 ? text.slice(0, eq) : basename(dirname(dirname(bin)));
  if (!existsSync(bin)) throw new Error(`${flag} ${text}: ${bin} does not exist`);
  if (statSync(bin).isDirectory()) throw new Error(`${flag} ${text}: give the bin/run.js file, not a directory`);
  return { name, bin };
}

/** `--serve-variant 'NAME=--flag value'`: a serve column of this checkout with those flags. */
export function serveVariant(text: string | undefined): { name: string; args: string[] } {
  const eq = text?.indexOf('=') ?? -1;
  if (!text || eq <= 0) throw new Error("--serve-variant needs 'NAME=--flag value' (this checkout's serve with those flags)");
  return { name: text.slice(0, eq), args: text.slice(eq + 1).split(/\s+/).filter(Boolean) };
}

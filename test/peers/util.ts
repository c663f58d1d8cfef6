// Shared plumbing for the real-peer helpers (qemu.ts, dpdk.ts): binary checks, line capture
// from child processes, and "wait until a line matches" with timeouts.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (works from both test/peers/*.ts and dist/test/peers/*.js). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'scripts'))) return dir;
    dir = resolve(dir, '..');
  }
  throw new Error('peers: cannot find the repository root from ' + fileURLToPath(import.meta.url));
}

/** Absolute path of an executable on PATH, or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

export class MissingPeerError extends Error {
  constructor(what: string, pkg: string) {
    super(
      `\n\n*** REAL PEER MISSING: ${what} not found. Install the Debian package '${pkg}' ` +
        `(apt-get install -y --no-install-recommends ${pkg}); .ci/run does this. ***\n`,
    );
    this.name = 'MissingPeerError';
  }
}

/** Returns the binary's path, or throws a loud MissingPeerError naming the package. */
export function requireBinary(name: string, pkg: string): string {
  const p = which(name);
  if (!p) throw new MissingPeerError(`'${name}'`, pkg);
  return p;
}

export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1bc|\x1b[78=>]/g;

interface Waiter {
  re: RegExp;
  from: number;
  resolve: (m: RegExpMatchArray) => void;
}

/**
 * Collects the lines a child writes (stdout and/or stderr), strips ANSI escapes and CRs,
 * and lets callers wait for a line matching a regex (searching lines from `from` on).
 */
export class LineLog {
  readonly lines: string[] = [];
  private partial = new Map<string, string>();
  private waiters = new Set<Waiter>();
  private closedReason: string | undefined;
  private closeListeners: Array<() => void> = [];
  /** Called for every complete line (e.g. for a parser). */
  onLine: ((line: string, stream: string) => void) | undefined;
  /** Optional echo (e.g. process.stderr.write) for debugging: set VIT_PEER_ECHO=1. */
  echoPrefix: string | undefined;
  private readonly t0 = Date.now();

  attach(stream: NodeJS.ReadableStream | null, name: string): void {
    if (!stream) return;
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => this.push(chunk, name));
    stream.on('end', () => {
      const rest = this.partial.get(name);
      if (rest) this.addLine(rest, name);
      this.partial.delete(name);
    });
  }

  push(chunk: string, name = 'out'): void {
    const text = (this.partial.get(name) ?? '') + chunk;
    const parts = text.split('\n');
    this.partial.set(name, parts.pop() ?? '');
    for (const p of parts) this.addLine(p, name);
  }

  private addLine(raw: string, stream: string): void {
    const line = raw.replace(ANSI, '').replace(/\r/g, '');
    this.lines.push(line);
    if (this.echoPrefix !== undefined) process.stderr.write(`${this.echoPrefix}+${((Date.now() - this.t0) / 1000).toFixed(2)}s ${line}\n`);
    this.onLine?.(line, stream);
    const idx = this.lines.length - 1;
    for (const w of [...this.waiters]) {
      if (idx < w.from) continue;
      const m = line.match(w.re);
      if (m) {
        this.waiters.delete(w);
        w.resolve(m);
      }
    }
  }

  /** Marks the source as finished: pending and future waits fail fast instead of timing out. */
  close(reason: string): void {
    for (const [name, rest] of this.partial) if (rest) this.addLine(rest, name);
    this.partial.clear();
    this.closedReason = reason;
    for (const l of this.closeListeners) l();
    this.closeListeners = [];
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  find(re: RegExp, from = 0): RegExpMatchArray | undefined {
    for (let i = from; i < this.lines.length; i++) {
      const m = this.lines[i]!.match(re);
      if (m) return m;
    }
    return undefined;
  }

  /** Resolves with the first line (index >= from) matching re; rejects on timeout or close. */
  waitFor(re: RegExp, timeoutMs: number, what: string, from = 0): Promise<RegExpMatchArray> {
    const hit = this.find(re, from);
    if (hit) return Promise.resolve(hit);
    if (this.closedReason !== undefined) {
      return Promise.reject(new Error(`${what}: ${re} never appeared (${this.closedReason})\n${this.tail()}`));
    }
    return new Promise((resolveP, rejectP) => {
      const w: Waiter = {
        re,
        from,
        resolve: (m) => {
          clearTimeout(timer);
          resolveP(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        rejectP(new TimeoutError(`${what}: timed out after ${timeoutMs} ms waiting for ${re}\n${this.tail()}`));
      }, timeoutMs);
      this.waiters.add(w);
      this.closeListeners.push(() => {
        if (!this.waiters.has(w)) return;
        this.waiters.delete(w);
        clearTimeout(timer);
        rejectP(new Error(`${what}: ${re} never appeared (${this.closedReason})\n${this.tail()}`));
      });
    });
  }

  tail(n = 40): string {
    return this.lines
      .slice(-n)
      .map((l) => '  | ' + l)
      .join('\n');
  }
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export function exitPromise(child: ChildProcess): Promise<Exit> {
  return new Promise((resolveP) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolveP({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolveP({ code, signal }));
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Sends `signal`, then SIGKILL if the process has not exited after graceMs. */
export async function terminate(child: ChildProcess, exited: Promise<Exit>, signal: NodeJS.Signals, graceMs: number): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) return exited;
  try {
    child.kill(signal);
  } catch {
    /* already gone */
  }
  const t = setTimeout(() => {
    try {
      child.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }, graceMs);
  const e = await exited;
  clearTimeout(t);
  return e;
}

/** Waits until a path exists (e.g. a unix socket a peer creates). */
export async function waitForPath(path: string, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new TimeoutError(`${what}: ${path} did not appear within ${timeoutMs} ms`);
    await sleep(50);
  }
}

let uniq = 0;
/** A name unique to this process and call, for file prefixes and temporary sockets. */
export function uniqueName(prefix: string): string {
  uniq += 1;
  return `${prefix}-${process.pid}-${uniq}-${Math.random().toString(36).slice(2, 8)}`;
}

const live = new Set<ChildProcess>();
let hooked = false;
/** SIGKILLs the child if this Node process exits while it still runs (a crashed test must not leak peers). */
export function killOnExit(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

/**
 * Spawns a peer process the way every helper here does: killed if the test process exits,
 * its stdout and stderr collected line by line (echoed with `[name] ` when VIT_PEER_ECHO is set).
 */
export function spawnLogged(argv: readonly string[], name: string, options: SpawnOptions = {}): { child: ChildProcess; log: LineLog; exited: Promise<Exit> } {
  const child = spawn(argv[0]!, argv.slice(1), { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(child);
  const log = new LineLog();
  if (process.env.VIT_PEER_ECHO) log.echoPrefix = `[${name}] `;
  log.attach(child.stdout, 'stdout');
  log.attach(child.stderr, 'stderr');
  return { child, log, exited: exitPromise(child) };
}

/** Runs the built CLI (bin/run.js) as a user would, with colour decided by `env` alone. */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));

export interface CliRun {
  stdout: string;
  stderr: string;
  status: number | null;
}

export function runCli(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string } = {}): CliRun {
  const env = { ...process.env };
  delete env.FORCE_COLOR;
  delete env.NO_COLOR;
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: opts.cwd, env: { ...env, ...opts.env }, encoding: 'utf8' });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

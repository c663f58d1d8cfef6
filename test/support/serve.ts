// Runs the real `vhost-iotlb serve` CLI as a child process for tests, and reads its state
// through the control socket, exactly as a user's `inspect --json` would.
import { type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlRequest } from '../../src/control/control-client.js';
import type { DeviceState } from '../../src/control/state.js';
import { LineLog, repoRoot, sleep, spawnLogged, terminate, type Exit } from '../peers/util.js';

export interface ServeProcess {
  child: ChildProcess;
  socket: string;
  control: string;
  dir: string;
  log: LineLog;
  state(params?: object): Promise<DeviceState>;
  stop(): Promise<{ exit: Exit; lines: string[] }>;
}

export interface StartServeOptions {
  socket?: string;
  dir?: string;
  /** argv that runs serve inside something, e.g. ['ip', 'netns', 'exec', NS] (must exec, so child.pid is serve's). */
  prefix?: string[];
  /** The CLI to run (default this checkout's bin/run.js), e.g. another checkout's, to compare builds. */
  bin?: string;
}

/**
 * Node flags for every serve a test or bench starts, from VIT_SERVE_NODE_ARGS (space-separated),
 * e.g. `--cpu-prof --cpu-prof-dir=DIR` or `--trace-turbo-inlining`: how to see inside serve
 * under a live benchmark (NODE_OPTIONS refuses --cpu-prof).
 */
function serveNodeFlags(): string[] {
  const flags = process.env.VIT_SERVE_NODE_ARGS?.trim();
  return flags ? flags.split(/\s+/) : [];
}

export async function startServe(args: string[], opts: StartServeOptions = {}): Promise<ServeProcess> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'vit-serve-'));
  const socket = opts.socket ?? join(dir, 'vhost.sock');
  const control = join(dir, 'control.sock');
  const argv = [process.execPath, ...serveNodeFlags(), opts.bin ?? join(repoRoot(), 'bin', 'run.js'), 'serve', '--socket', socket, '--control', control, ...args];
  if (opts.prefix) argv.unshift(...opts.prefix);
  const { child, log, exited } = spawnLogged(argv, 'serve');
  const deadline = Date.now() + 15_000;
  while (!existsSync(control)) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`serve did not open its control socket:\n${log.lines.join('\n')}`);
    }
    await sleep(50);
  }
  return {
    child, socket, control, dir, log,
    state: async (params = {}) => (await controlRequest(control, 'state', params)) as DeviceState,
    async stop() {
      const exit = await terminate(child, exited, 'SIGTERM', 10_000);
      return { exit, lines: log.lines };
    },
  };
}

/** Sum of a counter over the rings of one kind (rx = even indices, tx = odd). */
export function total(state: DeviceState, kind: 'rx' | 'tx', counter: 'packets' | 'bytes' | 'drops' | 'held' | 'missesSent' = 'packets'): number {
  return state.queues.filter((q) => q.kind === kind).reduce((sum, q) => sum + (q.counters?.[counter] ?? 0), 0);
}

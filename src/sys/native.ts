// Loads the vhost_sys addon (build/Release/vhost_sys.node). Lazy so that modules which
// only import types or pure helpers from src/sys still load where the addon is not built.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Raw addon surface. Arguments are validated by the wrappers, not here. */
export interface NativeBinding {
  readonly pageSize: number;
  listenUnix(path: string, backlog: number): number;
  connectUnix(path: string): number;
  acceptUnix(fd: number): number;
  socketPair(): [number, number];
  sendMessage(fd: number, data: Uint8Array, offset: number, length: number, fds: readonly number[]): number;
  receiveMessage(
    fd: number,
    into: Uint8Array,
    offset: number,
    length: number,
    maxFds: number,
    meta: Int32Array,
  ): number;
  mapFd(fd: number, offset: number, length: number, writable: boolean): ArrayBuffer;
  unmap(buffer: ArrayBuffer): void;
  memfdCreate(name: string, size: number): number;
  eventfdCreate(initial: number): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, value: number): void;
  closeFd(fd: number): void;
  readFd(fd: number, into: Uint8Array, offset: number, length: number): number;
  writeFd(fd: number, from: Uint8Array, offset: number, length: number): number;
  writevFd(fd: number, head: Uint8Array, headLength: number, pieces: readonly Uint8Array[], offsets: Uint32Array, lengths: Uint32Array, first: number, end: number): number;
  pollReadable(fds: Int32Array, count: number, timeoutMs: number, ready: Uint8Array): number;
  memoryFence(): void;
  yieldCpu(): void;
  setThreadAffinity(tid: number, cpus: number[]): void;
  openTap(name: string, vnetHdr: boolean, multiQueue: boolean): { fd: number; name: string };
  setTapOffload(fd: number, vnetHdrSize: number, offloadFlags: number): void;
  setInterfaceMtu(name: string, mtu: number): void;
  watchFd(fd: number, callback: (error?: Error) => void): number;
  unwatchFd(id: number): void;
}

let binding: NativeBinding | undefined;

/** Directory holding package.json, found by walking up (works from src/ and dist/src/). */
export function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`vhost_sys: no package.json above ${from}`);
  }
}

export function native(): NativeBinding {
  if (binding !== undefined) return binding;
  const root = packageRoot();
  const candidates = ['Release', 'Debug'].map((kind) => join(root, 'build', kind, 'vhost_sys.node'));
  const found = candidates.find((path) => existsSync(path));
  if (found === undefined) {
    throw new Error(`vhost_sys native addon is not built (looked for ${candidates[0]}); run \`npm rebuild\` or \`npx node-gyp rebuild\``);
  }
  binding = createRequire(import.meta.url)(found) as NativeBinding;
  return binding;
}

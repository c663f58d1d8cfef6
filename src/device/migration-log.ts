/**
 * The dirty-page log the front-end shares for a live migration (SET_LOG_BASE with
 * LOG_SHMFD: an fd, a size and an offset), checked before any worker maps it: a log that
 * does not fit its fd would SIGBUS the process on the first mark (the same reason
 * memory-table.ts checks regions), and one too small for guest memory would lose marks.
 * Workers log into it while VHOST_F_LOG_ALL is negotiated and a log is set.
 */
import { fdKind } from '../sys/index.js';
import { logBytesFor } from '../memory/dirty-log.js';
import type { DirtyLogConfig } from '../datapath/contract.js';
import type { QueuePairHost } from '../datapath/queue-pair-host.js';
import { DeviceError } from './errors.js';
import type { MemoryTable } from './memory-table.js';
import type { QueuePairs } from './queue-pairs.js';

/** Validates a log for guest memory ending at `guestEnd`; throws a DeviceError naming the problem. */
function checkLog(fd: number, size: bigint, offset: bigint, guestEnd: number): DirtyLogConfig {
  if (fd < 0) throw new DeviceError('SET_LOG_BASE: no fd (the log must be shared memory, LOG_SHMFD)');
  if (size === 0n) throw new DeviceError('SET_LOG_BASE: log size is 0');
  if (size > BigInt(Number.MAX_SAFE_INTEGER) || offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DeviceError(`SET_LOG_BASE: size 0x${size.toString(16)} or offset 0x${offset.toString(16)} is at or above 2^53`);
  }
  const config = { fd, size: Number(size), offset: Number(offset) };
  const need = logBytesFor(guestEnd);
  if (config.size < need) {
    throw new DeviceError(`SET_LOG_BASE: a ${config.size}-byte log cannot cover guest memory up to 0x${guestEnd.toString(16)} (${need} bytes needed)`);
  }
  let file: ReturnType<typeof fdKind>;
  try {
    file = fdKind(fd);
  } catch (err) {
    throw new DeviceError(`SET_LOG_BASE: fd ${fd}: ${(err as Error).message}`);
  }
  if (file.kind !== 'memfd' && file.kind !== 'other') throw new DeviceError(`SET_LOG_BASE: fd is a ${file.kind}, not shared memory`);
  const fileSize = file.size;
  if (config.offset + config.size > fileSize) {
    throw new DeviceError(`SET_LOG_BASE: log [0x${config.offset.toString(16)}, +0x${config.size.toString(16)}) lies beyond the end of its fd (${fileSize} bytes)`);
  }
  return config;
}

export class MigrationLog {
  /** SET_LOG_BASE's log, checked. */
  private current: DirtyLogConfig | null = null;
  /** What workers were last told to log into (null: nothing). */
  private loggingTo: DirtyLogConfig | null = null;
  /** SET_LOG_FD's eventfd, kept until replaced or the connection ends. */
  private logFd = -1;

  constructor(
    private readonly memory: MemoryTable,
    private readonly workers: QueuePairs,
    /** Whether VHOST_F_LOG_ALL is negotiated now. */
    private readonly logAll: () => boolean,
    private readonly close: (fd: number) => void,
    private readonly log: (level: string, text: string) => void,
  ) {}

  get config(): DirtyLogConfig | null {
    return this.current;
  }

  /** Pages are logged while LOG_ALL is negotiated and a log is set. */
  get logging(): boolean {
    return this.logAll() && this.current !== null;
  }

  /** SET_LOG_BASE: checks the new log, moves every worker onto it, then lets the old one go. */
  async set(fd: number, size: bigint, offset: bigint): Promise<void> {
    let config;
    try {
      config = checkLog(fd, size, offset, this.memory.guestEnd);
    } catch (err) {
      this.close(fd);
      throw err;
    }
    const previous = this.current;
    this.current = config;
    await this.apply();
    if (previous !== null) this.close(previous.fd);
  }

  setFd(fd: number): void {
    if (this.logFd >= 0) this.close(this.logFd);
    this.logFd = fd;
  }

  /** Tells every worker to log (or stop) when that changed; resolves once all have. */
  async apply(): Promise<void> {
    const target = this.logging ? this.current : null;
    if (target === this.loggingTo) return;
    this.loggingTo = target;
    for (const pair of this.workers.values()) await pair.setDirtyLog(target);
    this.log('info', target === null
      ? 'dirty-page logging off'
      : `dirty-page logging on: ${target.size}-byte log, writes into guest memory marked (migration)`);
  }

  /** A worker created mid-migration logs from its first write. */
  async seed(pair: QueuePairHost): Promise<void> {
    if (this.loggingTo !== null) await pair.setDirtyLog(this.loggingTo);
  }

  /** The connection ended (workers already finished): both fds are closed. */
  reset(): void {
    if (this.current !== null) this.close(this.current.fd);
    this.current = null;
    this.loggingTo = null;
    this.setFd(-1);
  }
}

/**
 * The dirty-page log the front-end shares for a live migration (SET_LOG_BASE with
 * LOG_SHMFD: an fd, a size and an offset), checked before any worker maps it: a log that
 * does not fit its fd would SIGBUS the process on the first mark (the same reason
 * memory-table.ts checks regions), and one too small for guest memory would lose marks.
 * Logging runs while VHOST_F_LOG_ALL is negotiated and a log is set (NetDevice).
 */
import { fdKind } from '../sys/index.js';
import { logBytesFor } from '../memory/dirty-log.js';
import type { DirtyLogConfig } from '../datapath/contract.js';
import { DeviceError } from './errors.js';

export class DirtyLogBase {
  private current: DirtyLogConfig | null = null;

  get config(): DirtyLogConfig | null {
    return this.current;
  }

  /**
   * Validates a new log for guest memory ending at `guestEnd`; returns the previous one (its fd
   * is the caller's to close once no worker maps it). Throws a DeviceError naming the problem.
   */
  replace(fd: number, size: bigint, offset: bigint, guestEnd: number): DirtyLogConfig | null {
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
    const previous = this.current;
    this.current = config;
    return previous;
  }

  /** Forgets the log; returns it (its fd is the caller's to close). */
  clear(): DirtyLogConfig | null {
    const previous = this.current;
    this.current = null;
    return previous;
  }
}

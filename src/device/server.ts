/**
 * Accepts front-ends on one vhost-user socket (or connects out to one, with --client) and runs
 * one Session at a time on a NetDevice. After a disconnect the device is reset and the next
 * front-end is served; in client mode we reconnect with backoff, so a restarted QEMU finds us.
 */
import { unlinkSync } from 'node:fs';
import { acceptUnix, closeFd, connectUnix, FdWatcher, listenUnix } from '../sys/index.js';
import type { TraceWriter } from '../trace/writer.js';
import { NetDevice, type DeviceOptions } from './device.js';
import { Session } from './session.js';

export interface ServerOptions extends DeviceOptions {
  socketPath: string;
  client: boolean;
  trace: TraceWriter | null;
}

const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 2000;

export class VhostUserServer {
  readonly device: NetDevice;
  private listenFd = -1;
  private listenWatcher: FdWatcher | null = null;
  private session: Session | null = null;
  private connections = 0;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private backoff = BACKOFF_MIN_MS;
  /** Describes the current peer for inspect. */
  peer: string | null = null;

  constructor(readonly options: ServerOptions) {
    this.device = new NetDevice(options);
  }

  get connected(): boolean {
    return this.session !== null;
  }

  get connectionCount(): number {
    return this.connections;
  }

  start(): void {
    if (this.options.client) {
      this.connectOut();
      return;
    }
    this.listenFd = listenUnix(this.options.socketPath);
    this.listenWatcher = new FdWatcher(this.listenFd, () => this.acceptPending());
    this.log('info', 'listening');
  }

  private log(level: string, text: string): void {
    this.options.log(level, text);
  }

  private acceptPending(): void {
    for (let fd = acceptUnix(this.listenFd); fd >= 0; fd = acceptUnix(this.listenFd)) {
      if (this.session !== null) {
        this.log('warn', `${this.options.socketPath}: refusing a second front-end while one is connected`);
        closeFd(fd);
        continue;
      }
      this.begin(fd, 'accepted front-end');
    }
  }

  private connectOut(): void {
    if (this.stopped) return;
    try {
      const fd = connectUnix(this.options.socketPath);
      this.backoff = BACKOFF_MIN_MS;
      this.begin(fd, 'connected to front-end');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (this.backoff === BACKOFF_MIN_MS) this.log('info', `waiting for a front-end (${code})`);
      this.retryTimer = setTimeout(() => this.connectOut(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    }
  }

  private begin(fd: number, how: string): void {
    const connection = ++this.connections;
    this.peer = `${how} #${connection}`;
    this.log('info', `${how} (connection ${connection})`);
    this.device.traceTarget = this.options.trace && this.options.traceTranslations ? { writer: this.options.trace, connection } : null;
    this.session = new Session(fd, this.device, {
      connection,
      trace: this.options.trace,
      log: (level, text) => this.log(level, text),
      onClosed: () => {
        this.session = null;
        this.peer = null;
        if (this.options.client && !this.stopped) this.retryTimer = setTimeout(() => this.connectOut(), BACKOFF_MIN_MS);
      },
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.listenWatcher?.stop();
    if (this.listenFd >= 0) {
      closeFd(this.listenFd);
      // The socket file is ours: a front-end must not find it and connect to nobody.
      try {
        unlinkSync(this.options.socketPath);
      } catch {
        // already gone
      }
    }
    this.listenFd = -1;
    const session = this.session;
    if (session) {
      session.close('server stopping');
      await session.done;
    }
  }
}

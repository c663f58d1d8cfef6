/**
 * The recording proxy behind `trace record`: a transparent vhost-user man-in-the-middle.
 *
 *   front-end ──(--listen)──▶ proxy ──(--connect)──▶ back-end
 *
 * Per accepted front-end connection the proxy connects to the back-end and hands both sockets
 * to its relay thread (relay-thread.ts), which relays every message, byte for byte and with its
 * fds, in both directions, and records each (relay.ts says how, back-end channel included).
 * This side accepts, keeps the list of connections, and adds the thread's records to the
 * writer in the order the thread wrote them. The proxy keeps accepting new front-ends.
 */
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker } from 'node:worker_threads';
import { FdWatcher, acceptUnix, closeFd, connectUnix, eventfdCreate, eventfdWrite, listenUnix } from '../sys/index.js';
import type { RelayCommand, RelayEvent, RelaySetup } from './relay-thread.js';
import type { TraceWriter } from './writer.js';

const THREAD_URL = new URL('./relay-thread.js', import.meta.url);

export interface ProxyOptions {
  /** Socket path the front-end connects to. */
  listen: string;
  /** Socket path the back-end listens on. */
  connect: string;
  /** Where messages are recorded (the caller opens and closes it). */
  writer: TraceWriter;
  /** One line per event (connections, errors). */
  log?: (line: string) => void;
  /** Close a connection whose output makes no progress for this long (default 10 s). */
  stallTimeoutMs?: number;
}

export interface ProxyEvents {
  connection: [id: number];
  close: [id: number, reason: string];
}

export class RecordingProxy extends EventEmitter<ProxyEvents> {
  readonly writer: TraceWriter;
  readonly stallTimeoutMs: number;
  private listenFd = -1;
  private watcher: FdWatcher | null = null;
  private nextId = 0;
  /** Ids of the connections being relayed (the relay thread owns their sockets). */
  readonly connections = new Set<number>();
  private readonly logLine: (line: string) => void;
  private thread: Worker | null = null;
  private readonly inbox = new MessageChannel();
  private wakeFd = -1;
  private nextToken = 0;
  private readonly flushes = new Map<number, () => void>();
  private stopped: Promise<void> | null = null;
  /** Messages recorded so far (those the relay thread has handed over). */
  recorded = 0;

  constructor(readonly options: ProxyOptions) {
    super();
    this.writer = options.writer;
    this.stallTimeoutMs = options.stallTimeoutMs ?? 10_000;
    this.logLine = options.log ?? (() => {});
  }

  log(line: string): void {
    this.logLine(line);
  }

  /** Binds the listening socket, starts the relay thread and starts accepting. */
  start(): void {
    if (this.listenFd >= 0 || this.thread) throw new Error('proxy already started');
    this.listenFd = listenUnix(this.options.listen);
    this.wakeFd = eventfdCreate();
    const setup: RelaySetup = { inbox: this.inbox.port2, wakeFd: this.wakeFd, stallTimeoutMs: this.stallTimeoutMs, startHr: this.writer.startHr };
    const thread = new Worker(fileURLToPath(THREAD_URL), { workerData: setup, transferList: [this.inbox.port2], name: 'trace-relay' });
    this.thread = thread;
    let exited!: () => void;
    const exit = new Promise<void>((resolve) => (exited = resolve));
    thread.on('message', (event: RelayEvent) => this.onEvent(event));
    thread.on('error', (err) => this.log(`relay thread failed: ${err.stack ?? err}`));
    thread.on('exit', () => {
      this.thread = null;
      for (const id of [...this.connections]) this.closed(id, 'the relay thread exited', 0);
      for (const done of this.flushes.values()) done();
      this.flushes.clear();
      exited();
    });
    this.stopped = exit;
    this.watcher = new FdWatcher(this.listenFd, (error) => {
      if (error) this.log(`listening socket: ${error.message}`);
      else this.acceptAll();
    });
    this.log(`listening on ${this.options.listen}, back-end ${this.options.connect}`);
  }

  private command(command: RelayCommand): boolean {
    if (!this.thread) return false;
    this.inbox.port1.postMessage(command);
    eventfdWrite(this.wakeFd, 1);
    return true;
  }

  private onEvent(event: RelayEvent): void {
    switch (event.type) {
      case 'records':
        if (!this.writer.isClosed) this.writer.appendEncoded(event.bytes, event.records);
        this.recorded += event.records;
        break;
      case 'closed':
        this.closed(event.id, event.reason, event.messages);
        break;
      case 'log':
        this.log(event.line);
        break;
      case 'flushed':
        this.flushes.get(event.token)?.();
        this.flushes.delete(event.token);
        break;
    }
  }

  private acceptAll(): void {
    for (;;) {
      let front: number;
      try {
        front = acceptUnix(this.listenFd);
      } catch (err) {
        this.log(`accept failed: ${(err as Error).message}`);
        return;
      }
      if (front < 0) return;
      let back: number;
      try {
        back = connectUnix(this.options.connect);
      } catch (err) {
        this.log(`front-end refused: cannot connect to back-end ${this.options.connect}: ${(err as Error).message}`);
        closeFd(front);
        continue;
      }
      const id = this.nextId++;
      if (!this.command({ type: 'connection', id, front, back })) {
        this.log('front-end refused: the relay thread is not running');
        closeFd(front);
        closeFd(back);
        continue;
      }
      this.connections.add(id);
      this.log(`connection ${id}: front-end accepted, back-end connected`);
      this.emit('connection', id);
    }
  }

  private closed(id: number, reason: string, messages: number): void {
    if (!this.connections.delete(id)) return;
    this.log(`connection ${id}: closed after ${messages} messages: ${reason}`);
    this.emit('close', id, reason);
  }

  /** Resolves once every message relayed so far is in the writer (not necessarily in the file). */
  flush(): Promise<void> {
    const token = this.nextToken++;
    return new Promise<void>((resolve) => {
      this.flushes.set(token, resolve);
      if (!this.command({ type: 'flush', token })) {
        this.flushes.delete(token);
        resolve();
      }
    });
  }

  /** Stops accepting, closes every connection, hands over the last records; the writer stays open. */
  async close(): Promise<void> {
    this.watcher?.stop();
    this.watcher = null;
    if (this.listenFd >= 0) {
      closeFd(this.listenFd);
      this.listenFd = -1;
      try {
        unlinkSync(this.options.listen);
      } catch {
        // already gone
      }
    }
    this.command({ type: 'shutdown' });
    await this.stopped;
    this.inbox.port1.close();
    if (this.wakeFd >= 0) closeFd(this.wakeFd);
    this.wakeFd = -1;
  }
}

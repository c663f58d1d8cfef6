/**
 * The recording proxy behind `trace record`: a transparent vhost-user man-in-the-middle.
 *
 *   front-end ──(--listen)──▶ proxy ──(--connect)──▶ back-end
 *
 * Per accepted front-end connection the proxy connects to the back-end and relays every
 * message, byte for byte and with its fds, in both directions, recording each in the trace.
 * MessageFramer cuts the streams so one record is always one whole message. Passed fds are
 * forwarded and then the proxy's own copies are closed.
 *
 * SET_BACKEND_REQ_FD: the proxy keeps the front-end's back-end-channel socket, hands the
 * back-end one end of its own socketpair instead, and relays (and records, as channel
 * 'backend') what flows between the two.
 *
 * Sending never busy-waits: on EAGAIN the rest of that direction is queued, reading from the
 * side that feeds it is paused (so at most one socket buffer plus the queue is held), and a
 * timer retries with back-off (1 ms doubling to 50 ms). A direction that makes no progress
 * for `stallTimeoutMs` closes the connection. A disconnect, a socket error or a stream the
 * framer refuses (a header announcing more than MAX_PAYLOAD) closes that connection: both
 * sockets and every fd the proxy still holds. The proxy keeps accepting new front-ends.
 */
import { EventEmitter } from 'node:events';
import { unlinkSync } from 'node:fs';
import { FrontendRequest, MessageFramer, ProtocolError, REPLY_FLAG, decodeHeader, type Frame } from '../protocol/index.js';
import { FdWatcher, acceptUnix, closeFd, connectUnix, fdKind, listenUnix, receiveMessage, sendMessage, socketPair } from '../sys/index.js';
import type { PassedFd, TraceChannel, TraceDirection } from './records.js';
import type { TraceWriter } from './writer.js';

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

interface Outgoing {
  bytes: Uint8Array;
  offset: number;
  /** Not yet sent; closed once they are (or when the connection closes). */
  fds: number[];
}

interface Route {
  to: Endpoint;
  channel: TraceChannel;
  direction: TraceDirection;
}

class Endpoint {
  watcher: FdWatcher | null = null;
  readonly framer = new MessageFramer();
  readonly queue: Outgoing[] = [];
  route: Route | null = null;
  /** The endpoint whose messages are written to this one (paused while this one is backed up). */
  source: Endpoint | null = null;
  closed = false;
  paused = false;
  retryTimer: NodeJS.Timeout | null = null;
  retryDelay = 1;
  /**
   * When the current backlog last moved: set when a send makes progress or when a backlog
   * starts, cleared once the queue is empty. The stall timeout counts from here, so a
   * connection that was idle for a while is not closed at its first EAGAIN.
   */
  lastProgress = 0;
  constructor(readonly fd: number, readonly label: string) {}
}

const RECEIVE_BUFFER = new Uint8Array(64 * 1024);
/** Receives per readable callback before yielding to the loop (fairness between connections). */
const READS_PER_WAKEUP = 16;

function safeClose(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed: nothing to release
  }
}

function describeFds(fds: readonly number[]): PassedFd[] {
  return fds.map((fd) => {
    try {
      return fdKind(fd);
    } catch {
      return { kind: 'other' as const, size: 0 };
    }
  });
}

export class ProxyConnection {
  readonly front: Endpoint;
  readonly back: Endpoint;
  chanFront: Endpoint | null = null;
  chanBack: Endpoint | null = null;
  closed = false;
  messages = 0;

  constructor(readonly proxy: RecordingProxy, readonly id: number, frontFd: number, backFd: number) {
    this.front = new Endpoint(frontFd, 'front-end');
    this.back = new Endpoint(backFd, 'back-end');
    this.link(this.front, this.back, 'frontend', 'to-backend');
    this.link(this.back, this.front, 'frontend', 'to-frontend');
    this.watch(this.front);
    this.watch(this.back);
  }

  private link(from: Endpoint, to: Endpoint, channel: TraceChannel, direction: TraceDirection): void {
    from.route = { to, channel, direction };
    to.source = from;
  }

  private watch(ep: Endpoint): void {
    if (ep.closed || ep.watcher) return;
    ep.paused = false;
    ep.watcher = new FdWatcher(ep.fd, (error) => {
      if (error) this.fail(ep, `poll error on ${ep.label}: ${error.message}`);
      else this.readable(ep);
    });
  }

  private pause(ep: Endpoint): void {
    if (!ep.watcher) return;
    ep.watcher.stop();
    ep.watcher = null;
    ep.paused = true;
  }

  private isChannel(ep: Endpoint): boolean {
    return ep === this.chanFront || ep === this.chanBack;
  }

  /** A problem on `ep`: the back-end channel closes alone, anything else closes the connection. */
  private fail(ep: Endpoint, reason: string): void {
    if (this.isChannel(ep)) this.closeChannel(reason);
    else this.close(reason);
  }

  private readable(ep: Endpoint): void {
    for (let i = 0; i < READS_PER_WAKEUP && !ep.closed && !ep.paused; i++) {
      let got;
      try {
        got = receiveMessage(ep.fd, RECEIVE_BUFFER);
      } catch (err) {
        this.fail(ep, `receive from ${ep.label} failed: ${(err as Error).message}`);
        return;
      }
      if (got === null) return;
      if (got.bytes === 0) {
        for (const fd of got.fds) safeClose(fd);
        this.eof(ep);
        return;
      }
      try {
        ep.framer.push(RECEIVE_BUFFER.subarray(0, got.bytes), got.fds);
      } catch (err) {
        if (err instanceof ProtocolError) {
          this.fail(ep, `garbage from ${ep.label}: ${err.message}`);
          return;
        }
        throw err;
      }
      for (let frame = ep.framer.next(); frame; frame = ep.framer.next()) {
        if (ep.closed) {
          for (const fd of frame.fds) safeClose(fd);
          return;
        }
        this.forward(ep, frame);
      }
      // A read that did not fill the buffer took what the socket held: another would return
      // EAGAIN (a syscall on every hop of every round trip); the watcher calls again if more came.
      if (got.bytes < RECEIVE_BUFFER.length) return;
    }
  }

  private eof(ep: Endpoint): void {
    // Deliver what is still queued towards the peer if it goes out at once, then close.
    const peer = ep.route?.to;
    if (peer && !peer.closed) this.flush(peer, true);
    const pending = ep.framer.bufferedBytes;
    const why = `${ep.label} disconnected${pending ? ` (${pending} bytes of an incomplete message dropped)` : ''}`;
    this.fail(ep, why);
  }

  private forward(from: Endpoint, frame: Frame): void {
    const route = from.route!;
    let { bytes, fds } = frame;
    const kinds = describeFds(fds);
    const header = decodeHeader(bytes);
    if (
      from === this.front && route.channel === 'frontend' && header.request === FrontendRequest.SET_BACKEND_REQ_FD &&
      (header.flags & REPLY_FLAG) === 0 && fds.length === 1
    ) {
      fds = [this.openChannel(fds[0]!)];
    }
    this.messages++;
    this.proxy.record({ timeNs: this.proxy.writer.elapsedNs(), connection: this.id, channel: route.channel, direction: route.direction, bytes, fds: kinds });
    this.send(route.to, bytes, fds);
  }

  /** Splices the back-end channel; returns the fd to give the back-end instead of `frontEndFd`. */
  private openChannel(frontEndFd: number): number {
    if (this.chanFront) this.closeChannel('replaced by a new SET_BACKEND_REQ_FD');
    const [ours, theirs] = socketPair();
    this.chanFront = new Endpoint(frontEndFd, 'front-end back-end-channel');
    this.chanBack = new Endpoint(ours, 'back-end back-end-channel');
    this.link(this.chanBack, this.chanFront, 'backend', 'to-frontend');
    this.link(this.chanFront, this.chanBack, 'backend', 'to-backend');
    this.watch(this.chanFront);
    this.watch(this.chanBack);
    return theirs;
  }

  private send(to: Endpoint, bytes: Uint8Array, fds: number[]): void {
    if (to.closed) {
      for (const fd of fds) safeClose(fd);
      return;
    }
    to.queue.push({ bytes, offset: 0, fds });
    if (to.queue.length === 1) this.flush(to, false);
  }

  /** Sends what is queued for `to`. `once`: no retry scheduling (used just before closing). */
  private flush(to: Endpoint, once: boolean): void {
    while (to.queue.length > 0 && !to.closed) {
      const item = to.queue[0]!;
      let sent: number;
      try {
        sent = sendMessage(to.fd, item.offset === 0 ? item.bytes : item.bytes.subarray(item.offset), item.fds);
      } catch (err) {
        if (!once) this.fail(to, `send to ${to.label} failed: ${(err as Error).message}`);
        return;
      }
      if (sent < 0) {
        if (once) return;
        this.backedUp(to);
        return;
      }
      for (const fd of item.fds) safeClose(fd); // they travelled with the first byte
      item.fds = [];
      item.offset += sent;
      to.lastProgress = Date.now();
      to.retryDelay = 1;
      if (item.offset >= item.bytes.length) to.queue.shift();
    }
    if (to.closed) return;
    if (to.queue.length === 0) to.lastProgress = 0; // idle: the next backlog starts its own stall clock
    if (to.retryTimer) {
      clearTimeout(to.retryTimer);
      to.retryTimer = null;
    }
    if (to.source && to.source.paused && !to.source.closed) {
      this.watch(to.source);
      this.readable(to.source); // frames may already be buffered in its framer
    }
  }

  private backedUp(to: Endpoint): void {
    if (to.source) this.pause(to.source);
    if (to.retryTimer) return;
    if (to.lastProgress === 0) to.lastProgress = Date.now();
    const stall = this.proxy.stallTimeoutMs;
    to.retryTimer = setTimeout(() => {
      to.retryTimer = null;
      if (to.closed) return;
      if (Date.now() - to.lastProgress > stall) {
        this.fail(to, `${to.label} accepted nothing for ${stall} ms`);
        return;
      }
      to.retryDelay = Math.min(to.retryDelay * 2, 50);
      this.flush(to, false);
    }, to.retryDelay);
  }

  private closeEndpoint(ep: Endpoint | null): void {
    if (!ep || ep.closed) return;
    ep.closed = true;
    ep.watcher?.stop();
    ep.watcher = null;
    if (ep.retryTimer) clearTimeout(ep.retryTimer);
    ep.retryTimer = null;
    for (const item of ep.queue) for (const fd of item.fds) safeClose(fd);
    ep.queue.length = 0;
    for (const fd of ep.framer.takeFds()) safeClose(fd);
    safeClose(ep.fd);
  }

  closeChannel(reason: string): void {
    if (!this.chanFront && !this.chanBack) return;
    this.closeEndpoint(this.chanFront);
    this.closeEndpoint(this.chanBack);
    this.chanFront = this.chanBack = null;
    this.proxy.log(`connection ${this.id}: back-end channel closed: ${reason}`);
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeChannel(reason);
    this.closeEndpoint(this.front);
    this.closeEndpoint(this.back);
    this.proxy.connectionClosed(this, reason);
  }
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
  readonly connections = new Map<number, ProxyConnection>();
  private readonly logLine: (line: string) => void;
  /** Messages recorded so far. */
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

  /** Binds the listening socket and starts accepting. */
  start(): void {
    if (this.listenFd >= 0) throw new Error('proxy already started');
    this.listenFd = listenUnix(this.options.listen);
    this.watcher = new FdWatcher(this.listenFd, (error) => {
      if (error) this.log(`listening socket: ${error.message}`);
      else this.acceptAll();
    });
    this.log(`listening on ${this.options.listen}, back-end ${this.options.connect}`);
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
        safeClose(front);
        continue;
      }
      const id = this.nextId++;
      this.connections.set(id, new ProxyConnection(this, id, front, back));
      this.log(`connection ${id}: front-end accepted, back-end connected`);
      this.emit('connection', id);
    }
  }

  record(record: Parameters<TraceWriter['writeMessage']>[0]): void {
    if (this.writer.isClosed) return;
    this.writer.writeMessage(record);
    this.recorded++;
  }

  connectionClosed(conn: ProxyConnection, reason: string): void {
    this.connections.delete(conn.id);
    this.log(`connection ${conn.id}: closed after ${conn.messages} messages: ${reason}`);
    this.emit('close', conn.id, reason);
  }

  /** Stops accepting, closes every connection and the listening socket (the writer stays open). */
  close(): void {
    for (const conn of [...this.connections.values()]) conn.close('proxy shutting down');
    this.watcher?.stop();
    this.watcher = null;
    if (this.listenFd >= 0) {
      safeClose(this.listenFd);
      this.listenFd = -1;
      try {
        unlinkSync(this.options.listen);
      } catch {
        // already gone
      }
    }
  }
}

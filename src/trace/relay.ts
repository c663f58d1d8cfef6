/**
 * The relay behind `trace record`: every message of a front-end ↔ back-end connection passed
 * on whole, with its fds, and recorded. It runs in its own thread (relay-thread.ts) and blocks
 * in poll(2) as the smallest C relay does: Node's event loop would add a libuv round and an
 * N-API callback scope (~4 µs here) to every hop of every IOTLB round trip.
 *
 * MessageFramer cuts the streams so one record is always one whole message. Passed fds are
 * forwarded and then the relay's own copies are closed.
 *
 * SET_BACKEND_REQ_FD: the relay keeps the front-end's back-end-channel socket, hands the
 * back-end one end of its own socketpair instead, and relays (and records, as channel
 * 'backend') what flows between the two.
 *
 * Sending never busy-waits: on EAGAIN the rest of that direction is queued, the side that
 * feeds it leaves the poll set (so at most one socket buffer plus the queue is held), and the
 * send is retried with back-off (1 ms doubling to 50 ms). A direction that makes no progress
 * for `stallTimeoutMs` closes the connection. A disconnect, a socket error or a stream the
 * framer refuses (a header announcing more than MAX_PAYLOAD) closes that connection: both
 * sockets and every fd the relay still holds. Other connections go on.
 */
import { FrontendRequest, MessageFramer, ProtocolError, REPLY_FLAG, decodeHeader, type Frame } from '../protocol/index.js';
import { closeFd, fdKind, pollReadable, receiveMessage, sendMessage, socketPair } from '../sys/index.js';
import type { PassedFd, TraceChannel, TraceDirection } from './records.js';

/** Where the relay reports: records, closed connections, log lines. */
export interface RelaySink {
  /** One message relayed (called before it is sent on). */
  record(connection: number, channel: TraceChannel, direction: TraceDirection, bytes: Uint8Array, fds: PassedFd[]): void;
  closed(id: number, reason: string, messages: number): void;
  log(line: string): void;
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
  readonly framer = new MessageFramer();
  readonly queue: Outgoing[] = [];
  route: Route | null = null;
  /** The endpoint whose messages are written to this one (left out of the poll set while this one is backed up). */
  source: Endpoint | null = null;
  closed = false;
  paused = false;
  /** performance.now() of the next send retry; 0: none due. */
  retryAt = 0;
  retryDelay = 1;
  /**
   * When the current backlog last moved: set when a send makes progress or when a backlog
   * starts, cleared once the queue is empty. The stall timeout counts from here, so a
   * connection that was idle for a while is not closed at its first EAGAIN.
   */
  lastProgress = 0;
  constructor(readonly fd: number, readonly label: string, readonly connection: RelayConnection) {}
}

const RECEIVE_BUFFER = new Uint8Array(64 * 1024);
/** Receives per readable endpoint per poll round (fairness between connections). */
const READS_PER_ROUND = 16;
/** poll(2) waits at most this long, so a terminating thread gets back to JavaScript. */
const MAX_WAIT_MS = 100;

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

const NO_FDS: PassedFd[] = [];

/** A fault of ours (a throwing sink, a bug) ends that connection, its fds closed, not the others or the thread. */
function faulted(conn: RelayConnection, err: unknown): void {
  conn.close(`relay error: ${(err as Error).stack ?? err}`);
}

class RelayConnection {
  readonly front: Endpoint;
  readonly back: Endpoint;
  chanFront: Endpoint | null = null;
  chanBack: Endpoint | null = null;
  closed = false;
  messages = 0;

  constructor(private readonly relay: Relay, readonly id: number, frontFd: number, backFd: number) {
    this.front = new Endpoint(frontFd, 'front-end', this);
    this.back = new Endpoint(backFd, 'back-end', this);
    this.link(this.front, this.back, 'frontend', 'to-backend');
    this.link(this.back, this.front, 'frontend', 'to-frontend');
  }

  private link(from: Endpoint, to: Endpoint, channel: TraceChannel, direction: TraceDirection): void {
    from.route = { to, channel, direction };
    to.source = from;
  }

  private isChannel(ep: Endpoint): boolean {
    return ep === this.chanFront || ep === this.chanBack;
  }

  /** A problem on `ep`: the back-end channel closes alone, anything else closes the connection. */
  private fail(ep: Endpoint, reason: string): void {
    if (this.isChannel(ep)) this.closeChannel(reason);
    else this.close(reason);
  }

  readable(ep: Endpoint): void {
    for (let i = 0; i < READS_PER_ROUND && !ep.closed && !ep.paused; i++) {
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
        ep.framer.pushView(RECEIVE_BUFFER.subarray(0, got.bytes), got.fds);
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
      // EAGAIN (a syscall on every hop of every round trip); poll says when more came.
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
    const { bytes } = frame;
    let { fds } = frame;
    const kinds = fds.length === 0 ? NO_FDS : describeFds(fds);
    if (from === this.front && fds.length === 1) {
      const header = decodeHeader(bytes);
      if (header.request === FrontendRequest.SET_BACKEND_REQ_FD && (header.flags & REPLY_FLAG) === 0) {
        fds = [this.openChannel(fds[0]!)];
      }
    }
    this.messages++;
    this.relay.sink.record(this.id, route.channel, route.direction, bytes, kinds);
    this.send(route.to, bytes, fds);
  }

  /** Splices the back-end channel; returns the fd to give the back-end instead of `frontEndFd`. */
  private openChannel(frontEndFd: number): number {
    if (this.chanFront) this.closeChannel('replaced by a new SET_BACKEND_REQ_FD');
    const [ours, theirs] = socketPair();
    this.chanFront = new Endpoint(frontEndFd, 'front-end back-end-channel', this);
    this.chanBack = new Endpoint(ours, 'back-end back-end-channel', this);
    this.link(this.chanBack, this.chanFront, 'backend', 'to-frontend');
    this.link(this.chanFront, this.chanBack, 'backend', 'to-backend');
    this.relay.changed();
    return theirs;
  }

  /**
   * Sends a message on, straight from where it was read when nothing is queued before it;
   * whatever must wait is copied (the receive buffer is reused by the next read).
   */
  private send(to: Endpoint, bytes: Uint8Array, fds: number[]): void {
    if (to.closed) {
      for (const fd of fds) safeClose(fd);
      return;
    }
    if (to.queue.length > 0) {
      to.queue.push({ bytes: bytes.slice(), offset: 0, fds });
      return;
    }
    let sent: number;
    try {
      sent = sendMessage(to.fd, bytes, fds);
    } catch (err) {
      for (const fd of fds) safeClose(fd);
      this.fail(to, `send to ${to.label} failed: ${(err as Error).message}`);
      return;
    }
    if (sent === bytes.length) {
      for (const fd of fds) safeClose(fd); // they travelled with the first byte
      return;
    }
    if (sent > 0) {
      for (const fd of fds) safeClose(fd);
      to.queue.push({ bytes: bytes.slice(sent), offset: 0, fds: [] });
      to.lastProgress = performance.now();
    } else {
      to.queue.push({ bytes: bytes.slice(), offset: 0, fds });
    }
    this.backedUp(to);
  }

  /** Sends what is queued for `to`. `once`: no retry scheduling (used just before closing). */
  flush(to: Endpoint, once: boolean): void {
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
        if (!once) this.backedUp(to);
        return;
      }
      for (const fd of item.fds) safeClose(fd); // they travelled with the first byte
      item.fds = [];
      item.offset += sent;
      to.lastProgress = performance.now();
      to.retryDelay = 1;
      if (item.offset >= item.bytes.length) to.queue.shift();
    }
    if (to.closed) return;
    if (to.queue.length === 0) to.lastProgress = 0; // idle: the next backlog starts its own stall clock
    this.clearRetry(to);
    const source = to.source;
    if (source && source.paused && !source.closed) {
      source.paused = false;
      this.relay.changed();
      this.readable(source); // frames may already be buffered in its framer
    }
  }

  private backedUp(to: Endpoint): void {
    if (to.source && !to.source.paused) {
      to.source.paused = true;
      this.relay.changed();
    }
    if (to.retryAt !== 0) return;
    if (to.lastProgress === 0) to.lastProgress = performance.now();
    to.retryAt = performance.now() + to.retryDelay;
    this.relay.backlogs++;
  }

  private clearRetry(ep: Endpoint): void {
    if (ep.retryAt === 0) return;
    ep.retryAt = 0;
    this.relay.backlogs--;
  }

  /** A retry of `to`'s backlog is due. */
  retry(to: Endpoint): void {
    this.clearRetry(to);
    if (to.closed) return;
    const stall = this.relay.stallTimeoutMs;
    if (performance.now() - to.lastProgress > stall) {
      this.fail(to, `${to.label} accepted nothing for ${stall} ms`);
      return;
    }
    to.retryDelay = Math.min(to.retryDelay * 2, 50);
    this.flush(to, false);
  }

  /** Its endpoints (the back-end channel's are null until SET_BACKEND_REQ_FD). */
  endpoints(): Array<Endpoint | null> {
    return [this.front, this.back, this.chanFront, this.chanBack];
  }

  /** The earliest send retry due on this connection (performance.now() time), 0 if none. */
  nextRetry(): number {
    let at = 0;
    for (const ep of this.endpoints()) {
      if (ep && ep.retryAt !== 0 && (at === 0 || ep.retryAt < at)) at = ep.retryAt;
    }
    return at;
  }

  /** Retries every backlog that is due. */
  retryDue(now: number): void {
    for (const ep of this.endpoints()) {
      if (ep && ep.retryAt !== 0 && ep.retryAt <= now && !ep.closed && !this.closed) this.retry(ep);
    }
  }

  private closeEndpoint(ep: Endpoint | null): void {
    if (!ep || ep.closed) return;
    ep.closed = true;
    this.clearRetry(ep);
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
    this.relay.changed();
    this.relay.sink.log(`connection ${this.id}: back-end channel closed: ${reason}`);
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    // Every fd first: the reports below go through the sink, which may be what failed.
    this.closeEndpoint(this.front);
    this.closeEndpoint(this.back);
    this.closeChannel(reason);
    this.relay.connectionClosed(this, reason);
  }
}

/** Every connection of one proxy, and the poll loop that serves them. */
export class Relay {
  private connections: RelayConnection[] = [];
  private pollFds = new Int32Array(16);
  private ready = new Uint8Array(16);
  /** Endpoint of each poll slot after the first (the wake fd). */
  private polled: Endpoint[] = [];
  private pollCount = 0;
  private dirty = true;
  /** Endpoints with a send retry scheduled. */
  backlogs = 0;

  /** `wakeFd`: readable when the owner has something for the relay (poll returns for it). */
  constructor(readonly sink: RelaySink, readonly stallTimeoutMs: number, private readonly wakeFd: number) {}

  get size(): number {
    return this.connections.length;
  }

  /** Relays between `frontFd` and `backFd` from now on (the relay owns both). */
  add(id: number, frontFd: number, backFd: number): void {
    this.connections.push(new RelayConnection(this, id, frontFd, backFd));
    this.dirty = true;
  }

  /** Closes every connection; each one's fds are closed even when reporting another's close throws. */
  closeAll(reason: string): void {
    let failure: unknown = null;
    for (const conn of [...this.connections]) {
      try {
        conn.close(reason);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== null) throw failure;
  }

  /** An endpoint joined or left the poll set. */
  changed(): void {
    this.dirty = true;
  }

  connectionClosed(conn: RelayConnection, reason: string): void {
    this.connections = this.connections.filter((c) => c !== conn);
    this.dirty = true;
    this.sink.closed(conn.id, reason, conn.messages);
  }

  /**
   * One round: blocks in poll(2) until an endpoint or the wake fd is readable, a send retry is
   * due or `MAX_WAIT_MS` passed; serves what is ready. True when the wake fd is readable.
   */
  poll(): boolean {
    if (this.dirty) this.rebuild();
    // Backlogs are rare (a peer that stops reading): only then are connections looked through.
    let nextRetry = 0;
    if (this.backlogs > 0) {
      for (const conn of this.connections) {
        const at = conn.nextRetry();
        if (at !== 0 && (nextRetry === 0 || at < nextRetry)) nextRetry = at;
      }
    }
    const timeout = nextRetry === 0 ? MAX_WAIT_MS : Math.min(MAX_WAIT_MS, Math.max(0, Math.ceil(nextRetry - performance.now())));
    const n = pollReadable(this.pollFds, this.pollCount, timeout, this.ready);
    const woken = n > 0 && this.ready[0] === 1;
    if (n > (woken ? 1 : 0)) {
      for (let i = 1; i < this.pollCount; i++) {
        if (this.ready[i] !== 1) continue;
        const ep = this.polled[i - 1]!;
        if (ep.closed || ep.paused) continue;
        try {
          ep.connection.readable(ep);
        } catch (err) {
          faulted(ep.connection, err);
        }
      }
    }
    if (nextRetry !== 0) {
      const now = performance.now();
      if (now >= nextRetry) {
        for (const conn of [...this.connections]) {
          try {
            conn.retryDue(now);
          } catch (err) {
            faulted(conn, err);
          }
        }
      }
    }
    return woken;
  }

  private rebuild(): void {
    this.dirty = false;
    this.polled = [];
    for (const conn of this.connections) {
      for (const ep of conn.endpoints()) if (ep && !ep.closed && !ep.paused) this.polled.push(ep);
    }
    this.pollCount = this.polled.length + 1;
    if (this.pollFds.length < this.pollCount) {
      this.pollFds = new Int32Array(this.pollCount * 2);
      this.ready = new Uint8Array(this.pollCount * 2);
    }
    this.pollFds[0] = this.wakeFd;
    for (let i = 0; i < this.polled.length; i++) this.pollFds[i + 1] = this.polled[i]!.fd;
  }
}

/**
 * The socket side of the test front-end: one vhost-user connection (main socket) plus the
 * back-end channel (a socketpair whose far end travels with SET_BACKEND_REQ_FD).
 *
 * Synchronous on purpose: a front-end that waits for a reply blocks in poll(2) on both
 * sockets, exactly as QEMU's process_message_reply() blocks on its socket. While it waits,
 * back-end requests (IOTLB misses) are read and queued, never interleaved with the pending
 * request: the caller handles them afterwards (nextBackendRequest()). The data path polls
 * the back-end channel with pollBackend(), one non-blocking recvmsg.
 */
import {
  decodeMessage, encodeMessage, FrontendRequest, MessageFramer, requestInfo, requestName,
  type Body, type VhostMessage,
} from '../../../src/protocol/index.js';
import { closeFd, connectUnix, pollReadable, receiveMessage, sendMessage, socketPair, type SystemError } from '../../../src/sys/index.js';

const RECEIVE_BUFFER = 64 * 1024;

export class VhostUserError extends Error {
  constructor(message: string, readonly request?: number, readonly ack?: bigint) {
    super(message);
    this.name = 'VhostUserError';
  }
}

/** Tries connect() until the back-end listens (or the deadline passes). */
export async function connectWhenListening(path: string, timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return connectUnix(path);
    } catch (err) {
      const code = (err as SystemError).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

export class VhostUserConnection {
  /** Our end of the back-end channel, -1 until openBackendChannel(). */
  backendFd = -1;
  /** Set once REPLY_ACK is negotiated: every request then asks for an ack. */
  replyAck = false;
  /** Default wait for a reply. */
  timeoutMs = 10_000;
  /** Every request sent, by name, in order (tests check the negotiation sequence). */
  readonly sent: string[] = [];
  /** Record `sent` (off in benchmarks: the data path sends INVALIDATEs per packet). */
  recordSent = true;
  private readonly framer = new MessageFramer();
  private readonly backendFramer = new MessageFramer();
  private readonly buf = new Uint8Array(RECEIVE_BUFFER);
  private readonly replies: VhostMessage[] = [];
  private readonly backendQueue: VhostMessage[] = [];
  private readonly pollFds = new Int32Array(2);
  private readonly pollReady = new Uint8Array(2);
  private closed = false;

  constructor(readonly fd: number) {}

  static async connect(path: string, timeoutMs?: number): Promise<VhostUserConnection> {
    return new VhostUserConnection(await connectWhenListening(path, timeoutMs));
  }

  /** Creates the back-end channel; returns the fd to pass with SET_BACKEND_REQ_FD (close it after). */
  openBackendChannel(): number {
    const [ours, theirs] = socketPair();
    this.backendFd = ours;
    return theirs;
  }

  /** Sends one message; `fds` travel with it. Waits (poll) if the socket buffer is full. */
  send(request: number, body: Body, opts: { needsReply?: boolean; fds?: number[]; channel?: 'frontend' | 'backend'; isReply?: boolean } = {}): void {
    const channel = opts.channel ?? 'frontend';
    const bytes = encodeMessage({ channel, request, body, needsReply: opts.needsReply ?? false, isReply: opts.isReply ?? false });
    const fd = channel === 'frontend' ? this.fd : this.backendFd;
    if (this.recordSent && channel === 'frontend' && !opts.isReply) this.sent.push(requestName('frontend', request));
    let off = 0;
    let fds = opts.fds ?? [];
    const deadline = Date.now() + this.timeoutMs;
    while (off < bytes.length) {
      const n = sendMessage(fd, off === 0 ? bytes : bytes.subarray(off), fds);
      if (n < 0) {
        if (Date.now() > deadline) throw new VhostUserError(`send ${requestName(channel, request)}: socket stays full`);
        this.waitReadable(1); // let the peer drain; also picks up its messages meanwhile
        continue;
      }
      off += n;
      fds = [];
    }
  }

  /**
   * Sends a request and returns its reply body (GET_*), or, for other requests with
   * REPLY_ACK, waits for the ack and throws VhostUserError on a non-zero one.
   */
  request(request: number, body: Body = { kind: 'none' }, fds: number[] = []): Body | null {
    const info = requestInfo('frontend', request);
    const always = info?.alwaysReplies === true && request !== FrontendRequest.IOTLB_MSG;
    const ack = !always && this.replyAck;
    this.send(request, body, { needsReply: ack, fds });
    if (!always && !ack) return null;
    const reply = this.waitReply(request);
    if (ack) {
      const value = reply.body.kind === 'u64' ? reply.body.value : -1n;
      if (value !== 0n) {
        throw new VhostUserError(`${requestName('frontend', request)} refused by the back-end (ack ${value})`, request, value);
      }
    }
    return reply.body;
  }

  /** Sends several requests back to back with NEED_REPLY, then collects every ack (pipelined). */
  requestMany(request: number, bodies: Body[]): void {
    for (const body of bodies) this.send(request, body, { needsReply: this.replyAck });
    if (!this.replyAck) return;
    for (let i = 0; i < bodies.length; i++) {
      const reply = this.waitReply(request);
      if (reply.body.kind !== 'u64' || reply.body.value !== 0n) {
        throw new VhostUserError(`${requestName('frontend', request)} refused by the back-end`, request);
      }
    }
  }

  /** Blocks until the reply to `request` arrives; back-end requests arriving meanwhile are queued. */
  waitReply(request: number, timeoutMs = this.timeoutMs): VhostMessage {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.pumpMain();
      const reply = this.replies.shift();
      if (reply !== undefined) {
        if (reply.request !== request) {
          throw new VhostUserError(`expected the reply to ${requestName('frontend', request)}, got one to ${reply.name}`);
        }
        return reply;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new VhostUserError(`no reply to ${requestName('frontend', request)} within ${timeoutMs} ms`, request);
      this.waitReadable(Math.min(left, 100));
    }
  }

  /** poll(2) on the main socket and the back-end channel; reads what arrived. */
  waitReadable(timeoutMs: number): void {
    this.pollFds[0] = this.fd;
    let n = 1;
    if (this.backendFd >= 0) this.pollFds[n++] = this.backendFd;
    if (pollReadable(this.pollFds, n, timeoutMs, this.pollReady) > 0) {
      if (this.pollReady[0] !== 0) this.pumpMain();
      if (n > 1 && this.pollReady[1] !== 0) this.pollBackend();
    }
  }

  private pumpMain(): void {
    for (;;) {
      const got = receiveMessage(this.fd, this.buf);
      if (got === null) return;
      if (got.bytes === 0) {
        for (const fd of got.fds) closeFd(fd);
        throw new VhostUserError('the back-end closed the connection');
      }
      this.framer.push(this.buf.subarray(0, got.bytes), got.fds);
      for (let f = this.framer.next(); f !== null; f = this.framer.next()) {
        const msg = decodeMessage('frontend', f.bytes, f.fds);
        if (!msg.isReply) throw new VhostUserError(`the back-end sent a request (${msg.name}) on the main socket`);
        this.replies.push(msg);
      }
    }
  }

  /** Reads whatever the back-end channel holds (non-blocking); returns how many requests are queued. */
  pollBackend(): number {
    if (this.backendFd < 0) return 0;
    for (;;) {
      const got = receiveMessage(this.backendFd, this.buf);
      if (got === null) break;
      if (got.bytes === 0) {
        for (const fd of got.fds) closeFd(fd);
        break; // the back-end closed its end; the main socket reports the disconnect
      }
      this.backendFramer.push(this.buf.subarray(0, got.bytes), got.fds);
      for (let f = this.backendFramer.next(); f !== null; f = this.backendFramer.next()) {
        this.backendQueue.push(decodeMessage('backend', f.bytes, f.fds));
      }
    }
    return this.backendQueue.length;
  }

  /** The next queued back-end request, or undefined. */
  nextBackendRequest(): VhostMessage | undefined {
    return this.backendQueue.shift();
  }

  /** Puts requests taken with nextBackendRequest() back at the head of the queue, in order (tests). */
  requeueBackend(requests: VhostMessage[]): void {
    this.backendQueue.unshift(...requests);
  }

  get backendPending(): number {
    return this.backendQueue.length;
  }

  /** Answers a back-end request that asked for a reply (REPLY_ACK on the back-end channel). */
  replyBackend(msg: VhostMessage, value: bigint): void {
    if (msg.needsReply) this.send(msg.request, { kind: 'u64', value }, { channel: 'backend', isReply: true });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeFd(this.fd);
    if (this.backendFd >= 0) closeFd(this.backendFd);
    this.backendFd = -1;
  }
}

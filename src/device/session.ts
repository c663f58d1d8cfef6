/**
 * One front-end connection: reads the socket, frames and decodes messages, runs them through
 * the handler table one at a time (handlers may wait for workers), and owns the one reply path.
 * Whatever goes wrong with this connection ends at most this connection.
 */
import {
  decodeHeader, decodeMessage, decodePlainIotlb, encodeMessage, FrontendRequest, IOTLB_FRAME_SIZE, IotlbType, MessageFramer, NEED_REPLY_FLAG, plainIotlbRequest,
  ProtocolError, requestInfo, requestName, ProtocolFeature, type Body, type Frame, type VhostMessage,
} from '../protocol/index.js';
import { closeFd, fdKind, FdWatcher, receiveMessage, sendMessage } from '../sys/index.js';
import type { TraceWriter } from '../trace/writer.js';
import type { NetDevice } from './device.js';
import { DeviceError } from './errors.js';
import { handlerFor, type HandlerContext } from './handlers.js';

const RECEIVE_BUFFER = 64 * 1024;
const ACK: Body = { kind: 'u64', value: 0n };
/**
 * Messages read ahead of the handler. Beyond this the socket is not read until the queue
 * drains, so a peer flooding fd-carrying messages while a handler waits for a worker makes us
 * hold at most this many messages' fds (CVE-2022-0669 class), not whatever the kernel buffered.
 */
const MAX_QUEUED = 16;

export interface SessionOptions {
  connection: number;
  trace: TraceWriter | null;
  log(level: string, text: string): void;
  onClosed(reason: string): void;
}

export class Session {
  private readonly framer = new MessageFramer();
  private readonly receiveBuffer = new Uint8Array(RECEIVE_BUFFER);
  private readonly receiveView = new DataView(this.receiveBuffer.buffer);
  private watcher: FdWatcher | null = null;
  /** Frames read ahead of the handler, with when they were read (for the IOTLB ack round trips). */
  private readonly queue: Array<{ frame: Frame; receivedAt: number }> = [];
  private processing = false;
  /** Set while a queue-pair worker reads the socket (lendIfIdle): settles when it is back. */
  private lent: Promise<unknown> | null = null;
  /** The handler in flight: the device is reset only after it settled (see close()). */
  private inFlight: Promise<void> = Promise.resolve();
  private closed = false;
  /** Resolves when the connection has closed and the device has been reset. */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(private readonly fd: number, readonly device: NetDevice, private readonly options: SessionOptions) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.watch();
  }

  private watch(): void {
    this.watcher = new FdWatcher(this.fd, (error) => (error ? this.close(`socket error: ${error.message}`) : this.onReadable()));
  }

  private onReadable(): void {
    try {
      for (;;) {
        if (this.queue.length >= MAX_QUEUED) {
          // Backpressure: stop watching (the poll is level-triggered) until processQueue drains.
          this.watcher?.stop();
          this.watcher = null;
          break;
        }
        const received = receiveMessage(this.fd, this.receiveBuffer);
        if (received === null) break;
        if (received.bytes === 0) {
          for (const fd of received.fds) closeFd(fd);
          this.close('front-end disconnected');
          return;
        }
        const now = performance.now();
        // The common case, one plain IOTLB request per read with nothing queued: handled
        // straight from the receive buffer (no framer copy, queue entry or promise).
        if (received.bytes === IOTLB_FRAME_SIZE && received.fds.length === 0 && this.idle && this.handleInPlace(now)) break; // a short read: the socket is empty
        this.enqueue(this.receiveBuffer.subarray(0, received.bytes), received.fds, now);
        // A read that did not fill the buffer took what the socket held: reading again would
        // only return EAGAIN (a syscall on every IOTLB round trip); if more arrived since, the
        // level-triggered watcher calls again.
        if (received.bytes < this.receiveBuffer.length) break;
      }
    } catch (err) {
      // Framing errors (a size over MAX_PAYLOAD, truncated ancillary data) leave the stream unreadable.
      this.close(`unreadable stream: ${(err as Error).message}`);
      return;
    }
    if (this.queue.length > 0) void this.processQueue();
    else if (!this.processing && !this.closed) this.lendIfIdle();
  }

  /** Nothing read ahead, nothing in flight, nothing recorded: a request may be handled where it lies. */
  private get idle(): boolean {
    return this.queue.length === 0 && !this.processing && this.framer.bufferedBytes === 0 && this.options.trace === null;
  }

  /**
   * handlePlainIotlb on the receive buffer itself; false when the bytes are not a plain IOTLB
   * request (the framer and handler take them). A request that must wait for a worker holds
   * the queue like any handler in flight.
   */
  private handleInPlace(receivedAt: number): boolean {
    const done = this.handlePlainIotlb(this.receiveBuffer, this.receiveView, receivedAt);
    if (done === false) return false;
    if (done !== true) {
      this.processing = true;
      this.inFlight = done.finally(() => {
        this.processing = false;
        void this.processQueue();
      });
    }
    return true;
  }

  private async processQueue(): Promise<void> {
    if (this.processing) return;
    this.processing = true;
    try {
      while (!this.closed && this.queue.length > 0) {
        const { frame, receivedAt } = this.queue.shift()!;
        const plain = frame.fds.length === 0 ? this.handlePlainIotlb(frame.bytes, undefined, receivedAt) : false;
        if (plain === true) continue;
        this.inFlight = plain === false ? this.handle(frame, receivedAt) : plain;
        await this.inFlight;
      }
    } catch (err) {
      // handle() catches everything; should that ever change, end this connection, not the process.
      this.close(`internal error: ${(err as Error).message}`);
    } finally {
      this.processing = false;
      if (!this.closed && !this.lendIfIdle() && this.watcher === null) this.watch();
    }
  }

  /**
   * With nothing read ahead and nothing in flight, lends the socket to the queue-pair worker:
   * it then reads and acks IOTLB requests itself, without a hop through this thread, and
   * gives the socket back at the first message it does not take (datapath/iotlb-fast-path.ts).
   * False when the device cannot lend it now (NetDevice.socketLendable).
   */
  private lendIfIdle(): boolean {
    if (this.queue.length > 0 || this.framer.bufferedBytes > 0 || this.options.trace !== null || !this.device.socketLendable) return false;
    // Stopped before the worker is told: from here only the worker reads the socket.
    this.watcher?.stop();
    this.watcher = null;
    this.lent = this.device.lendSocket(this.fd).then(({ reason, fatal, readAhead }) => {
      this.lent = null;
      if (this.closed || fatal) {
        for (const fd of readAhead?.fds ?? []) closeFd(fd);
        if (!this.closed) this.close(reason);
        return;
      }
      // What the reader took off the socket but did not handle comes first, as if read now.
      if (readAhead && !this.takeReadAhead(readAhead.bytes, readAhead.fds)) return;
      this.watch();
      this.onReadable();
    });
    return true;
  }

  /** Frames bytes (and fds) read off the socket elsewhere; false if they broke the stream (closed). */
  private takeReadAhead(bytes: Uint8Array, fds: number[]): boolean {
    try {
      this.enqueue(bytes, fds, performance.now());
    } catch (err) {
      this.close(`unreadable stream: ${(err as Error).message}`);
      return false;
    }
    return true;
  }

  /** Feeds bytes read off the socket to the framer and queues every message they complete; throws what the framer refuses. */
  private enqueue(bytes: Uint8Array, fds: number[], receivedAt: number): void {
    this.framer.push(bytes, fds);
    for (let frame = this.framer.next(); frame !== null; frame = this.framer.next()) this.queue.push({ frame, receivedAt });
  }

  private trace(bytes: Uint8Array, fds: readonly number[], direction: 'to-backend' | 'to-frontend'): void {
    const trace = this.options.trace;
    if (trace === null) return;
    trace.writeMessage({
      timeNs: trace.elapsedNs(), connection: this.options.connection, channel: 'frontend', direction,
      bytes, fds: fds.map((fd) => fdKind(fd)),
    });
  }

  private readonly plainRequest = plainIotlbRequest();

  /**
   * A plain IOTLB UPDATE or INVALIDATE (protocol/plain-iotlb.ts), applied and acked without
   * the general decoder, handler table or a promise: one arrives for every guest DMA map and
   * unmap while this thread reads the socket. True when done; a promise when a worker must be
   * waited for (its ring full, or a burst in flight at an INVALIDATE); false when the frame is
   * anything else, for handle().
   */
  private handlePlainIotlb(bytes: Uint8Array, view: DataView | undefined, receivedAt: number): boolean | Promise<void> {
    const req = this.plainRequest;
    if (!this.device.iommu || !decodePlainIotlb(bytes, req, view)) return false;
    this.trace(bytes.subarray(0, IOTLB_FRAME_SIZE), [], 'to-backend');
    const { iotlbType, needsReply } = req;
    try {
      const pending = iotlbType === IotlbType.UPDATE
        ? this.device.iotlbUpdate(req.iova, req.size, req.uaddr, req.perm)
        : this.device.iotlbInvalidate(req.iova, req.size);
      if (pending === undefined) {
        this.ackPlain(iotlbType, needsReply, receivedAt);
        return true;
      }
      return pending.then(() => this.ackPlain(iotlbType, needsReply, receivedAt), (err: Error) => this.failPlain(err, needsReply));
    } catch (err) {
      this.failPlain(err as Error, needsReply);
      return true;
    }
  }

  private ackPlain(iotlbType: number, needsReply: boolean, receivedAt: number): void {
    if (needsReply) this.reply(FrontendRequest.IOTLB_MSG, ACK);
    this.device.iotlbAcked(iotlbType, (performance.now() - receivedAt) * 1000);
  }

  private failPlain(err: Error, needsReply: boolean): void {
    this.fail(err, null, { request: FrontendRequest.IOTLB_MSG, flags: needsReply ? NEED_REPLY_FLAG : 0 });
  }

  private async handle(frame: Frame, receivedAt: number): Promise<void> {
    this.trace(frame.bytes, frame.fds, 'to-backend');
    const taken = new Set<number>();
    let msg: VhostMessage | null = null;
    let header: { request: number; flags: number } | null = null;
    try {
      header = decodeHeader(frame.bytes);
      msg = decodeMessage('frontend', frame.bytes, frame.fds);
      if (msg.isReply) throw new DeviceError(`${msg.name}: a reply arrived where a request was expected`);
      const handler = handlerFor(msg.request);
      if (handler === undefined) throw new DeviceError(`${msg.name}: unknown request`);
      const message = msg;
      const ctx: HandlerContext = {
        takeFd: (i) => {
          if (i >= message.fds.length) throw new DeviceError(`${message.name}: expected an fd at position ${i}`);
          taken.add(i);
          return message.fds[i];
        },
      };
      const replyBody = await handler(this.device, msg, ctx);
      if (replyBody) this.reply(msg.request, replyBody);
      else if (this.wantsAck(msg.request, msg.needsReply)) this.reply(msg.request, ACK);
      if (msg.body.kind === 'iotlb') this.device.iotlbAcked(msg.body.iotlbType, (performance.now() - receivedAt) * 1000);
    } catch (err) {
      this.fail(err as Error, msg, header);
    } finally {
      // Fds nobody took are closed here: a request that may carry none cannot leak one to us.
      frame.fds.forEach((fd, i) => {
        if (!taken.has(i)) this.device.closeQuietly(fd);
      });
    }
  }

  private get replyAck(): boolean {
    return this.device.hasProtocol(ProtocolFeature.REPLY_ACK);
  }

  /**
   * NEED_REPLY asks for a u64 ack once REPLY_ACK is negotiated. IOTLB_MSG is acked whenever
   * asked (the spec: "the back-end has to acknowledge the request"; QEMU always sets
   * NEED_REPLY on it and waits, as DPDK answers it), so its ack does not depend on REPLY_ACK.
   */
  private wantsAck(request: number, needsReply: boolean): boolean {
    return needsReply && (this.replyAck || request === FrontendRequest.IOTLB_MSG);
  }

  /** The spec's answer to a failed request: a non-zero REPLY_ACK if one was asked for. */
  private fail(err: Error, msg: VhostMessage | null, header: { request: number; flags: number } | null): void {
    const what = msg?.name ?? (header ? requestName('frontend', header.request) : 'message');
    const detail = err instanceof ProtocolError ? `${err.message} (field ${err.field})` : err.message;
    this.options.log('warn', `connection ${this.options.connection}: ${what} refused: ${detail}`);
    if (!(err instanceof DeviceError) && !(err instanceof ProtocolError)) {
      this.options.log('error', err.stack ?? String(err));
    }
    const request = msg?.request ?? header?.request;
    if (request === undefined) return;
    const needsReply = msg?.needsReply ?? ((header!.flags & NEED_REPLY_FLAG) !== 0);
    const info = requestInfo('frontend', request);
    if (this.wantsAck(request, needsReply)) {
      this.reply(request, { kind: 'u64', value: 1n });
    } else if (info?.alwaysReplies) {
      // Some always-replying requests have a reply that says "failed" (an ack u64, an empty
      // inflight area, an empty config): send it and keep the session — a hostile or confused
      // GET_INFLIGHT_FD / IOTLB_MSG / SET_LOG_BASE must not cost the connection. A GET_* that
      // cannot be answered leaves the front-end waiting forever: end the session instead.
      const failure = failureReply(request, msg);
      if (failure === null) this.close(`cannot answer ${what}: ${detail}`);
      else this.reply(request, failure);
    }
  }

  /** Encoded success acks (u64 0) by request: one is sent for every IOTLB UPDATE and INVALIDATE. */
  private readonly acks = new Map<number, Uint8Array>();

  private reply(request: number, body: Body): void {
    if (this.closed) return;
    let bytes: Uint8Array;
    if (body.kind === 'u64' && body.value === 0n) {
      let ack = this.acks.get(request);
      if (ack === undefined) this.acks.set(request, (ack = encodeMessage({ channel: 'frontend', request, isReply: true, body })));
      bytes = ack;
    } else {
      bytes = encodeMessage({ channel: 'frontend', request, isReply: true, body });
    }
    this.trace(bytes, [], 'to-frontend');
    // Replies are a few dozen bytes into an idle socket; a full send buffer means a stuck peer.
    // A peer that shut down its read side makes sendmsg fail with EPIPE: that ends this
    // connection, and must not throw (out of fail(), it became an unhandled rejection that
    // killed the whole process).
    let sent: number;
    try {
      sent = sendMessage(this.fd, bytes);
    } catch (err) {
      this.close(`could not send the ${requestName('frontend', request)} reply: ${(err as Error).message}`);
      return;
    }
    if (sent !== bytes.length) this.close(`could not send the ${requestName('frontend', request)} reply`);
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.stop();
    this.watcher = null;
    for (const { frame } of this.queue.splice(0)) for (const fd of frame.fds) this.device.closeQuietly(fd);
    // Fds of a message that never became whole (EOF or a framing error mid-message) are still
    // in the framer: close them too, or every such disconnect leaks up to MAX_FDS fds.
    for (const fd of this.framer.takeFds()) this.device.closeQuietly(fd);
    if (this.lent === null) {
      this.device.closeQuietly(this.fd);
    } else {
      // The worker may be reading it: the fd is closed (and its number reused) only once it is back.
      this.device.reclaimSocket();
      void this.lent.then(() => this.device.closeQuietly(this.fd));
    }
    this.options.log('info', `connection ${this.options.connection} closed: ${reason}`);
    // Reset only once the handler in flight has settled: resetting under it let its
    // continuation start a queue-pair worker after the reset, which then outlived the session
    // with the old connection's configuration.
    void this.inFlight.catch(() => undefined).then(() => this.device.reset()).finally(() => {
      this.options.onClosed(reason);
      this.resolveDone();
    });
  }
}

/**
 * The reply that reports failure for a request that always replies, or null if its reply
 * cannot say so (GET_FEATURES, GET_VRING_BASE, ...: their reply is a value, not a status).
 */
function failureReply(request: number, msg: VhostMessage | null): Body | null {
  switch (request) {
    case FrontendRequest.IOTLB_MSG:
    case FrontendRequest.SET_LOG_BASE:
    case FrontendRequest.POSTCOPY_END:
    case FrontendRequest.SET_DEVICE_STATE_FD:
    case FrontendRequest.CHECK_DEVICE_STATE:
    case FrontendRequest.GET_SHARED_OBJECT:
      return { kind: 'u64', value: 1n }; // non-zero: failed (and no fd)
    case FrontendRequest.GET_INFLIGHT_FD: {
      // mmap_size 0 and no fd: "no inflight area"; QEMU then carries on without one.
      const req = msg?.body.kind === 'inflight' ? msg.body : null;
      return { kind: 'inflight', mmapSize: 0n, mmapOffset: 0n, numQueues: req?.numQueues ?? 0, queueSize: req?.queueSize ?? 0 };
    }
    case FrontendRequest.GET_CONFIG:
      return { kind: 'none' }; // an empty payload is the spec's error reply
    default:
      return null;
  }
}

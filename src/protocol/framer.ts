/**
 * Stream framing for a SOCK_STREAM socket: bytes arrive in arbitrary pieces, fds arrive
 * with whichever recvmsg carried them. Complete messages are cut out as soon as they are
 * whole; a header claiming more than MAX_PAYLOAD is refused at once so a hostile peer
 * cannot make us buffer without bound.
 */
import { ProtocolError } from './errors.js';
import { HEADER_SIZE, decodeHeader } from './header.js';
import { MAX_FDS, MAX_PAYLOAD } from './bodies.js';

export interface Frame {
  bytes: Uint8Array;
  fds: number[];
}

interface FdBatch {
  /** Stream offset of the last byte of the chunk the fds came with. */
  at: number;
  fds: number[];
}

export class MessageFramer {
  private buf = new Uint8Array(256);
  private start = 0; // first unframed byte in buf
  private end = 0; // one past the last byte in buf
  private consumed = 0; // stream offset of buf[start]
  private readonly fdBatches: FdBatch[] = [];
  private readonly ready: Frame[] = [];
  private readyBytes = 0;
  private failure: ProtocolError | null = null;

  /**
   * Adds a chunk. fds belong to the message containing the chunk's LAST byte: Linux's
   * unix_stream_read_generic() merges several queued sends into one recvmsg but stops right
   * after the first send that carried fds, so the fds always came with the chunk's tail
   * (seen with DPDK virtio-user: SET_PROTOCOL_FEATURES and SET_VRING_CALL + fd in one read).
   */
  push(chunk: Uint8Array, fds: number[] = []): void {
    if (this.failure) throw this.failure;
    if (fds.length > 0) this.fdBatches.push({ at: this.consumed + (this.end - this.start) + Math.max(0, chunk.length - 1), fds: [...fds] });
    this.append(chunk);
    try {
      this.cutFrom(this.buf, this.start, this.end, true);
      this.checkPendingFds();
    } catch (err) {
      if (err instanceof ProtocolError) this.failure = err;
      throw err;
    }
  }

  /**
   * push() without copies, for a caller that reads into one buffer over and over: while the
   * framer holds no partial message, the whole messages at the front of `chunk` come back from
   * next() as views into it, valid until `chunk` is written again (take them all before that).
   * Only an incomplete tail is copied in.
   */
  pushView(chunk: Uint8Array, fds: number[] = []): void {
    if (this.failure) throw this.failure;
    if (this.end !== this.start) {
      this.push(chunk, fds);
      return;
    }
    if (fds.length > 0) this.fdBatches.push({ at: this.consumed + Math.max(0, chunk.length - 1), fds: [...fds] });
    try {
      const taken = this.cutFrom(chunk, 0, chunk.length, false);
      if (taken < chunk.length) this.append(chunk.subarray(taken));
      this.checkPendingFds();
    } catch (err) {
      if (err instanceof ProtocolError) this.failure = err;
      throw err;
    }
  }

  /** The next complete message, or null if none is whole yet. */
  next(): Frame | null {
    const frame = this.ready.shift() ?? null;
    if (frame) this.readyBytes -= frame.bytes.length;
    return frame;
  }

  /** Bytes received but not yet returned by next(). */
  get bufferedBytes(): number {
    return this.readyBytes + (this.end - this.start);
  }

  /**
   * Every fd not yet handed out by next() — including those of complete messages still
   * queued — and forgets them: after a protocol error the caller closes these.
   */
  takeFds(): number[] {
    const fds = [...this.ready.flatMap((f) => f.fds), ...this.fdBatches.flatMap((b) => b.fds)];
    this.ready.forEach((f) => (f.fds = []));
    this.fdBatches.length = 0;
    return fds;
  }

  private append(chunk: Uint8Array): void {
    const used = this.end - this.start;
    if (this.end + chunk.length > this.buf.length) {
      // Compact first; grow only if the live bytes really need more room.
      const need = used + chunk.length;
      if (need > this.buf.length) {
        const grown = new Uint8Array(Math.max(need, this.buf.length * 2));
        grown.set(this.buf.subarray(this.start, this.end), 0);
        this.buf = grown;
      } else {
        this.buf.copyWithin(0, this.start, this.end);
      }
      this.start = 0;
      this.end = used;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /**
   * Hardening: every batch still queued belongs to the one incomplete message. Without this
   * bound a peer sending a message one byte (and 8 fds) at a time makes us hold thousands
   * of fds before the message is whole and decodeMessage gets to refuse it (fd exhaustion,
   * the CVE-2022-0669 class). No message may carry more than MAX_FDS.
   */
  private checkPendingFds(): void {
    let pending = 0;
    for (const batch of this.fdBatches) pending += batch.fds.length;
    if (pending > MAX_FDS) {
      throw new ProtocolError('FD_COUNT', 'fds', pending, `${pending} fds arrived for one incomplete message, at most ${MAX_FDS} allowed`);
    }
  }

  /**
   * Queues the whole messages in source[from, to) (copies or views of `source`) with their fds;
   * returns how many bytes they took. The stream offset of source[from] is this.consumed. From
   * the framer's own buffer, each message is consumed as it is queued (so a refused header
   * after some leaves the count of buffered bytes right).
   */
  private cutFrom(source: Uint8Array, from: number, to: number, copy: boolean): number {
    let at = from;
    while (to - at >= HEADER_SIZE) {
      const { size } = decodeHeader(source, at);
      if (size > MAX_PAYLOAD) {
        throw new ProtocolError('PAYLOAD_TOO_LARGE', 'size', size, `header announces ${size} payload bytes, limit ${MAX_PAYLOAD}`);
      }
      const total = HEADER_SIZE + size;
      if (to - at < total) break;
      const bytes = copy ? source.slice(at, at + total) : source.subarray(at, at + total);
      const endOffset = this.consumed + total;
      const fds: number[] = [];
      while (this.fdBatches.length > 0 && this.fdBatches[0]!.at < endOffset) fds.push(...this.fdBatches.shift()!.fds);
      this.ready.push({ bytes, fds });
      this.readyBytes += total;
      at += total;
      this.consumed = endOffset;
      if (source === this.buf) this.start = at;
    }
    return at - from;
  }
}

/**
 * Streaming trace writer. Records are encoded straight into one preallocated buffer that is
 * written out (one write(2)) when it fills, on flush() and on close(). Writes are synchronous
 * so a signal handler can flush and close without awaiting, and so record order is exactly
 * call order.
 *
 * The translation fast path (`translation(...)`) takes plain numbers and allocates nothing:
 * `serve` can emit millions of them.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import {
  FD_ENTRY_SIZE, MAX_ACCESS, MAX_FDS, MAX_MESSAGE_BYTES, MESSAGE_FIXED_SIZE, RECORD_HEADER_SIZE,
  RecordType, TRANSLATION_BODY_SIZE, TRANSLATION_RECORD_SIZE, TranslationResultCode, channelCode,
  directionCode, encodeFileHeader, fdKindCode, messageBodyLength,
} from './format.js';
import type { MessageRecord, TraceRecord, TranslationRecord } from './records.js';

export interface TraceWriterOptions {
  /** File header flags (TraceFlags). */
  flags?: number;
  /** Wall-clock start, ns since the epoch. Default: now. Pass 0n for reproducible output. */
  startTimeNs?: bigint;
  /** process.hrtime.bigint() of time zero. Default: now. */
  startHr?: bigint;
  /** Write buffer size in bytes (default 1 MiB, minimum 128 KiB + a record). */
  bufferSize?: number;
}

interface Sink {
  /** `bytes` holds `records` whole records (after the file header, for the first write to a file). */
  write(bytes: Uint8Array, records: number): void;
  close(): void;
}

class FileSink implements Sink {
  private fd: number;
  constructor(path: string) {
    this.fd = openSync(path, 'w', 0o644);
  }
  write(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.length) off += writeSync(this.fd, bytes, off, bytes.length - off);
  }
  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/** Records for another thread's writer: each flush is a copy, handed on with its record count. */
class ChunkSink implements Sink {
  constructor(private readonly onChunk: (bytes: Uint8Array, records: number) => void) {}
  write(bytes: Uint8Array, records: number): void {
    this.onChunk(bytes.slice(), records);
  }
  close(): void {}
}

class MemorySink implements Sink {
  readonly chunks: Uint8Array[] = [];
  write(bytes: Uint8Array): void {
    this.chunks.push(bytes.slice());
  }
  close(): void {}
  bytes(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

const TWO32 = 4294967296;
const RESULT_CODE: Record<string, number> = TranslationResultCode;

export class TraceWriter {
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  private pos = 0;
  private closed = false;
  /** process.hrtime.bigint() of time zero (the same clock in every thread of the process). */
  readonly startHr: bigint;
  /** process.hrtime of time zero in ns, as a number (exact below ~104 days of uptime). */
  readonly startHrNs: number;
  /** Records written so far (messages + translations). */
  records = 0;
  /** Bytes handed to the sink so far (excluding what is still buffered). */
  bytesFlushed = 0;
  /** Records handed to the sink so far. */
  private recordsFlushed = 0;
  readonly startTimeNs: bigint;

  private constructor(private readonly sink: Sink, options: TraceWriterOptions, fileHeader = true) {
    const size = Math.max(options.bufferSize ?? 1024 * 1024, 256 * 1024);
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.startHr = options.startHr ?? process.hrtime.bigint();
    this.startHrNs = Number(this.startHr);
    this.startTimeNs = options.startTimeNs ?? BigInt(Date.now()) * 1_000_000n;
    if (!fileHeader) return;
    const header = encodeFileHeader({ flags: options.flags ?? 0, startTimeNs: this.startTimeNs });
    this.buf.set(header, 0);
    this.pos = header.length;
  }

  /** Creates (truncates) `path` and writes the file header. */
  static open(path: string, options: TraceWriterOptions = {}): TraceWriter {
    const writer = new TraceWriter(new FileSink(path), options);
    writer.flush(); // the header goes out now: even a trace cut short is recognisable
    return writer;
  }

  /** A writer that keeps the trace in memory; get it with bytes() after close(). */
  static inMemory(options: TraceWriterOptions = {}): TraceWriter {
    return new TraceWriter(new MemorySink(), options);
  }

  /**
   * Records only, no file header, for a writer in another thread: each flush hands `onChunk` a
   * copy of what is buffered and how many records it holds; that writer takes them with
   * appendEncoded(). Times count from `startHr`, the other writer's.
   */
  static detached(startHr: bigint, onChunk: (bytes: Uint8Array, records: number) => void, options: TraceWriterOptions = {}): TraceWriter {
    return new TraceWriter(new ChunkSink(onChunk), { ...options, startHr }, false);
  }

  /** Adds `records` records encoded by a detached writer, in the order given. */
  appendEncoded(bytes: Uint8Array, records: number): void {
    if (bytes.length > this.buf.length) {
      this.flush();
      this.sink.write(bytes, records);
      this.bytesFlushed += bytes.length;
      this.records += records;
      this.recordsFlushed = this.records;
      return;
    }
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
    this.records += records;
  }

  /** The whole trace, for in-memory writers (flushes first). */
  bytes(): Uint8Array {
    if (!(this.sink instanceof MemorySink)) throw new Error('bytes() is only available on in-memory trace writers');
    if (!this.closed) this.flush();
    return this.sink.bytes();
  }

  /** Nanoseconds since this writer was opened (monotonic), as a bigint for records. */
  elapsedNs(): bigint {
    return process.hrtime.bigint() - this.startHr;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private ensure(bytes: number): void {
    if (this.closed) throw new Error('trace writer is closed');
    if (this.pos + bytes > this.buf.length) this.flush();
  }

  private recordHeader(type: number, length: number): void {
    const v = this.view;
    v.setUint16(this.pos, type, true);
    v.setUint16(this.pos + 2, 0, true);
    v.setUint32(this.pos + 4, length, true);
    this.pos += RECORD_HEADER_SIZE;
  }

  private u64(at: number, value: number): void {
    const lo = value % TWO32;
    this.view.setUint32(at, lo, true);
    this.view.setUint32(at + 4, (value - lo) / TWO32, true);
  }

  writeMessage(record: Omit<MessageRecord, 'type'> & { type?: 'message' }): void {
    const { bytes, fds } = record;
    if (bytes.length > MAX_MESSAGE_BYTES) {
      throw new RangeError(`message of ${bytes.length} bytes is over the trace limit of ${MAX_MESSAGE_BYTES}`);
    }
    if (fds.length > MAX_FDS) throw new RangeError(`${fds.length} fds is over the trace limit of ${MAX_FDS}`);
    const length = messageBodyLength(fds.length, bytes.length);
    this.ensure(RECORD_HEADER_SIZE + length);
    this.recordHeader(RecordType.Message, length);
    const v = this.view;
    let p = this.pos;
    v.setBigUint64(p, record.timeNs, true);
    v.setUint32(p + 8, record.connection, true);
    v.setUint8(p + 12, channelCode(record.channel));
    v.setUint8(p + 13, directionCode(record.direction));
    v.setUint8(p + 14, fds.length);
    p += MESSAGE_FIXED_SIZE;
    for (const fd of fds) {
      v.setUint8(p, fdKindCode(fd.kind));
      this.u64(p + 1, fd.size);
      p += FD_ENTRY_SIZE;
    }
    v.setUint32(p, bytes.length, true);
    p += 4;
    this.buf.set(bytes, p);
    this.pos = p + bytes.length;
    this.records++;
  }

  writeTranslation(record: Omit<TranslationRecord, 'type'> & { type?: 'translation' }): void {
    const code = RESULT_CODE[record.result];
    if (code === undefined) throw new RangeError(`unknown translation result ${String(record.result)}`);
    this.ensure(TRANSLATION_RECORD_SIZE);
    this.recordHeader(RecordType.Translation, TRANSLATION_BODY_SIZE);
    const v = this.view;
    const p = this.pos;
    v.setBigUint64(p, record.timeNs, true);
    v.setUint32(p + 8, record.connection, true);
    v.setUint16(p + 12, record.queue, true);
    v.setBigUint64(p + 14, record.iova, true);
    v.setUint32(p + 22, record.length, true);
    v.setUint8(p + 26, record.access & MAX_ACCESS);
    v.setUint8(p + 27, code);
    this.pos = p + TRANSLATION_BODY_SIZE;
    this.records++;
  }

  /**
   * Fast path for the datapath: all numbers, no allocation. `timeNs` and `iova` must be
   * non-negative integers below 2^53; `result` is a TranslationResultCode value.
   */
  translation(timeNs: number, connection: number, queue: number, iova: number, length: number, access: number, result: number): void {
    if (this.pos + TRANSLATION_RECORD_SIZE > this.buf.length) this.ensure(TRANSLATION_RECORD_SIZE);
    else if (this.closed) throw new Error('trace writer is closed');
    const v = this.view;
    let p = this.pos;
    v.setUint32(p, RecordType.Translation, true); // type u16 + reserved u16 (0)
    v.setUint32(p + 4, TRANSLATION_BODY_SIZE, true);
    p += RECORD_HEADER_SIZE;
    this.u64(p, timeNs);
    v.setUint32(p + 8, connection, true);
    v.setUint16(p + 12, queue, true);
    this.u64(p + 14, iova);
    v.setUint32(p + 22, length, true);
    v.setUint8(p + 26, access & MAX_ACCESS);
    v.setUint8(p + 27, result & 3);
    this.pos = p + TRANSLATION_BODY_SIZE;
    this.records++;
  }

  write(record: TraceRecord): void {
    if (record.type === 'message') this.writeMessage(record);
    else this.writeTranslation(record);
  }

  /** Hands everything buffered to the file. */
  flush(): void {
    if (this.pos === 0) return;
    this.sink.write(this.buf.subarray(0, this.pos), this.records - this.recordsFlushed);
    this.bytesFlushed += this.pos;
    this.recordsFlushed = this.records;
    this.pos = 0;
  }

  /** Flushes and closes the file. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.sink.close();
  }
}

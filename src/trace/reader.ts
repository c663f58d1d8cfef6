/**
 * Trace readers: `parseTrace(bytes)` walks an in-memory trace synchronously, `readTrace(path)`
 * streams a file in chunks. Both validate everything and throw TraceFormatError naming the
 * byte offset of the problem. Records already yielded before an error stay valid, so a
 * trace cut short by a crash still decodes up to the damage.
 */
import { open } from 'node:fs/promises';
import {
  CHANNEL_CODES, DIRECTION_CODES, FD_ENTRY_SIZE, FD_KIND_CODES, FILE_HEADER_SIZE, MAX_ACCESS,
  MAX_FDS, MAX_FILE_HEADER_SIZE, MAX_MESSAGE_BYTES, MAX_RECORD_LENGTH, MESSAGE_FIXED_SIZE,
  RECORD_HEADER_SIZE, RECORD_TYPE_ANCILLARY, RESULT_CODES, RecordType, TRACE_MAGIC, TRACE_VERSION,
  TRANSLATION_BODY_SIZE, TraceFormatError, messageBodyLength, type TraceHeader,
} from './format.js';
import type { MessageRecord, PassedFd, TraceRecord, TranslationRecord } from './records.js';

export interface ParseOptions {
  /** Name used in error messages (default "<buffer>" for parseTrace, the path for readTrace). */
  source?: string;
  /** Called once with the file header before the first record. */
  onHeader?: (header: TraceHeader) => void;
  /** Called for every skipped ancillary record of an unknown type. */
  onSkipped?: (type: number, offset: number, length: number) => void;
}

const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Validates the file header at the start of `bytes`. `final` says no more bytes will come
 * (so a short buffer is a truncation rather than "need more").
 * Returns null if more bytes are needed.
 */
function tryParseHeader(bytes: Uint8Array, source: string, final: boolean): TraceHeader | null {
  const have = bytes.length;
  const magicHave = Math.min(have, TRACE_MAGIC.length);
  for (let i = 0; i < magicHave; i++) {
    if (bytes[i] !== TRACE_MAGIC[i]) {
      throw new TraceFormatError(source, 0, 'bad magic',
        `expected 5648494f54524300 ("VHIOTRC\\0"), found ${hex(bytes.subarray(0, TRACE_MAGIC.length))}`);
    }
  }
  if (have < FILE_HEADER_SIZE) {
    if (!final) return null;
    throw new TraceFormatError(source, 0, 'truncated header', `need ${FILE_HEADER_SIZE} bytes, have ${have}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(8, true);
  if (version !== TRACE_VERSION) {
    throw new TraceFormatError(source, 8, 'unsupported version', `${version} (this reader knows version ${TRACE_VERSION})`);
  }
  const flags = view.getUint16(10, true);
  const headerSize = view.getUint32(12, true);
  if (headerSize < FILE_HEADER_SIZE || headerSize > MAX_FILE_HEADER_SIZE) {
    throw new TraceFormatError(source, 12, 'bad header size',
      `${headerSize} (must be ${FILE_HEADER_SIZE}..${MAX_FILE_HEADER_SIZE})`);
  }
  if (have < headerSize) {
    if (!final) return null;
    throw new TraceFormatError(source, 0, 'truncated header', `need ${headerSize} bytes, have ${have}`);
  }
  return { version, flags, headerSize, startTimeNs: view.getBigUint64(16, true) };
}

type Step =
  | { kind: 'record'; record: TraceRecord; size: number }
  | { kind: 'skip'; size: number }
  | { kind: 'need'; need: number };

/**
 * Parses one record starting at `pos` (absolute file offset `abs`). Never reads past `end`.
 * Returns 'need' with the total bytes the record needs if it is not all there yet.
 */
function parseRecord(
  bytes: Uint8Array, view: DataView, pos: number, end: number, abs: number, options: ParseOptions, source: string,
): Step {
  const have = end - pos;
  if (have < RECORD_HEADER_SIZE) return { kind: 'need', need: RECORD_HEADER_SIZE };
  const type = view.getUint16(pos, true);
  const reserved = view.getUint16(pos + 2, true);
  const length = view.getUint32(pos + 4, true);
  if (reserved !== 0) {
    throw new TraceFormatError(source, abs + 2, 'bad record header', `reserved field is 0x${reserved.toString(16)}, must be 0`);
  }
  if (length > MAX_RECORD_LENGTH) {
    throw new TraceFormatError(source, abs + 4, 'oversized record', `length ${length} exceeds ${MAX_RECORD_LENGTH}`);
  }
  const known = type === RecordType.Message || type === RecordType.Translation;
  if (!known && (type & RECORD_TYPE_ANCILLARY) === 0) {
    throw new TraceFormatError(source, abs, 'unknown record type', `0x${type.toString(16).padStart(4, '0')}`);
  }
  const size = RECORD_HEADER_SIZE + length;
  if (have < size) return { kind: 'need', need: size };
  const body = pos + RECORD_HEADER_SIZE;
  const bodyAbs = abs + RECORD_HEADER_SIZE;
  if (!known) {
    options.onSkipped?.(type, abs, length);
    return { kind: 'skip', size };
  }
  if (type === RecordType.Translation) {
    if (length !== TRANSLATION_BODY_SIZE) {
      throw new TraceFormatError(source, abs + 4, 'record length mismatch',
        `translation record must be ${TRANSLATION_BODY_SIZE} bytes, record says ${length}`);
    }
    const access = view.getUint8(body + 26);
    if (access > MAX_ACCESS) throw new TraceFormatError(source, bodyAbs + 26, 'unknown access bits', `${access}`);
    const resultCode = view.getUint8(body + 27);
    const result = RESULT_CODES[resultCode];
    if (result === undefined) throw new TraceFormatError(source, bodyAbs + 27, 'unknown translation result', `${resultCode}`);
    const record: TranslationRecord = {
      type: 'translation',
      timeNs: view.getBigUint64(body, true),
      connection: view.getUint32(body + 8, true),
      queue: view.getUint16(body + 12, true),
      iova: view.getBigUint64(body + 14, true),
      length: view.getUint32(body + 22, true),
      access,
      result,
    };
    return { kind: 'record', record, size };
  }
  // Message record.
  if (length < messageBodyLength(0, 0)) {
    throw new TraceFormatError(source, abs + 4, 'record length mismatch',
      `message record needs at least ${messageBodyLength(0, 0)} bytes, record says ${length}`);
  }
  const channelCode = view.getUint8(body + 12);
  const channel = CHANNEL_CODES[channelCode];
  if (channel === undefined) throw new TraceFormatError(source, bodyAbs + 12, 'unknown channel', `${channelCode}`);
  const directionCode = view.getUint8(body + 13);
  const direction = DIRECTION_CODES[directionCode];
  if (direction === undefined) throw new TraceFormatError(source, bodyAbs + 13, 'unknown direction', `${directionCode}`);
  const fdCount = view.getUint8(body + 14);
  if (fdCount > MAX_FDS) throw new TraceFormatError(source, bodyAbs + 14, 'oversized fd count', `${fdCount} exceeds ${MAX_FDS}`);
  if (length < messageBodyLength(fdCount, 0)) {
    throw new TraceFormatError(source, abs + 4, 'record length mismatch',
      `message record with ${fdCount} fds needs at least ${messageBodyLength(fdCount, 0)} bytes, record says ${length}`);
  }
  const fds: PassedFd[] = [];
  let p = body + MESSAGE_FIXED_SIZE;
  for (let i = 0; i < fdCount; i++, p += FD_ENTRY_SIZE) {
    const kindCode = view.getUint8(p);
    const kind = FD_KIND_CODES[kindCode];
    if (kind === undefined) throw new TraceFormatError(source, abs + (p - pos), 'unknown fd kind', `${kindCode}`);
    const fdSize = view.getBigUint64(p + 1, true);
    if (fdSize > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new TraceFormatError(source, abs + (p - pos) + 1, 'oversized fd size', `${fdSize}`);
    }
    fds.push({ kind, size: Number(fdSize) });
  }
  const byteLength = view.getUint32(p, true);
  if (byteLength > MAX_MESSAGE_BYTES) {
    throw new TraceFormatError(source, abs + (p - pos), 'oversized message', `${byteLength} bytes exceeds ${MAX_MESSAGE_BYTES}`);
  }
  const expected = messageBodyLength(fdCount, byteLength);
  if (expected !== length) {
    throw new TraceFormatError(source, abs + 4, 'record length mismatch',
      `message record with ${fdCount} fds and ${byteLength} message bytes is ${expected} bytes, record says ${length}`);
  }
  p += 4;
  const record: MessageRecord = {
    type: 'message',
    timeNs: view.getBigUint64(body, true),
    connection: view.getUint32(body + 8, true),
    channel,
    direction,
    bytes: new Uint8Array(bytes.subarray(p, p + byteLength)), // a copy, and a plain Uint8Array even if given a Buffer
    fds,
  };
  return { kind: 'record', record, size };
}

function truncation(source: string, abs: number, need: number, have: number): TraceFormatError {
  return need === RECORD_HEADER_SIZE
    ? new TraceFormatError(source, abs, 'truncated record header', `need ${need} bytes, have ${have}`)
    : new TraceFormatError(source, abs, 'truncated record', `need ${need} bytes, have ${have}`);
}

/** Walks an in-memory trace, yielding each record; throws TraceFormatError at the first problem. */
export function* parseTrace(bytes: Uint8Array, options: ParseOptions = {}): Generator<TraceRecord, void, undefined> {
  const source = options.source ?? '<buffer>';
  const header = tryParseHeader(bytes, source, true)!;
  options.onHeader?.(header);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = header.headerSize;
  while (pos < bytes.length) {
    const step = parseRecord(bytes, view, pos, bytes.length, pos, options, source);
    if (step.kind === 'need') throw truncation(source, pos, step.need, bytes.length - pos);
    pos += step.size;
    if (step.kind === 'record') yield step.record;
  }
}

/** Parses a whole in-memory trace into a header and an array of records. */
export function parseTraceAll(bytes: Uint8Array, source?: string): { header: TraceHeader; records: TraceRecord[] } {
  let header: TraceHeader | undefined;
  const records = [...parseTrace(bytes, { source, onHeader: (h) => { header = h; } })];
  return { header: header!, records };
}

export interface ReadOptions extends ParseOptions {
  /** Bytes asked of the file per read (default 256 KiB). */
  chunkSize?: number;
}

/**
 * Streams the records of a trace file. Memory use is bounded by the chunk size plus one
 * record (at most MAX_RECORD_LENGTH), whatever the file size.
 */
export async function* readTrace(path: string, options: ReadOptions = {}): AsyncGenerator<TraceRecord, void, undefined> {
  const source = options.source ?? path;
  const chunkSize = Math.max(options.chunkSize ?? 256 * 1024, 64);
  const handle = await open(path, 'r');
  try {
    let buf = new Uint8Array(Math.max(chunkSize, FILE_HEADER_SIZE) * 2);
    let start = 0; // first unparsed byte in buf
    let end = 0; // end of valid data in buf
    let abs = 0; // file offset of buf[start]
    let eof = false;
    let need = FILE_HEADER_SIZE;

    const fill = async (): Promise<void> => {
      // Compact, grow to fit `need`, then read at least one chunk (or to EOF).
      if (start > 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const want = Math.max(need, end + chunkSize);
      if (buf.length < want) {
        const bigger = new Uint8Array(Math.max(want, buf.length * 2));
        bigger.set(buf.subarray(0, end));
        buf = bigger;
      }
      while (!eof && end < need) {
        const { bytesRead } = await handle.read(buf, end, buf.length - end, null);
        if (bytesRead === 0) eof = true;
        end += bytesRead;
      }
    };

    // Header (may declare more than FILE_HEADER_SIZE bytes).
    let header: TraceHeader | null = null;
    for (;;) {
      await fill();
      header = tryParseHeader(buf.subarray(0, end), source, eof);
      if (header) break;
      need = Math.max(need + 1, end + 1);
    }
    options.onHeader?.(header);
    start = header.headerSize;
    abs = header.headerSize;

    for (;;) {
      const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      while (start < end) {
        const step = parseRecord(buf, view, start, end, abs, options, source);
        if (step.kind === 'need') {
          need = step.need;
          break;
        }
        start += step.size;
        abs += step.size;
        if (step.kind === 'record') yield step.record;
      }
      if (start >= end) need = RECORD_HEADER_SIZE;
      if (eof) {
        if (start < end) throw truncation(source, abs, need, end - start);
        return;
      }
      await fill();
      if (eof && start === end) return;
    }
  } finally {
    await handle.close();
  }
}

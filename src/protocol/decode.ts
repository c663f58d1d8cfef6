/**
 * Whole-message decoding: header checks, payload shape for the request and direction,
 * and the fd count that shape implies. Pure: fds are only counted, never closed — the
 * caller owns them and closes them when this throws.
 */
import { ProtocolError } from './errors.js';
import { HEADER_SIZE, RESERVED_FLAGS, VERSION, decodeHeader, isReply, needsReply, versionOf } from './header.js';
import { MAX_FDS, MAX_PAYLOAD, readBody, type Body } from './bodies.js';
import { describeShapes, fdRange, requestInfo, requestName, shapeFits, type Channel } from './requests.js';

export interface VhostMessage {
  channel: Channel;
  request: number;
  name: string;
  flags: number;
  isReply: boolean;
  needsReply: boolean;
  body: Body;
  fds: number[];
}

function checkFlags(flags: number): void {
  if (versionOf(flags) !== VERSION) {
    throw new ProtocolError('BAD_VERSION', 'flags', flags, `version ${versionOf(flags)} in flags 0x${flags.toString(16)}, expected ${VERSION}`);
  }
  if ((flags & RESERVED_FLAGS) !== 0) {
    throw new ProtocolError('BAD_FLAGS', 'flags', flags, `reserved bits set in flags 0x${flags.toString(16)}`);
  }
  if (isReply(flags) && needsReply(flags)) {
    throw new ProtocolError('BAD_FLAGS', 'flags', flags, 'a reply cannot itself ask for a reply');
  }
}

/** `bytes` is the header plus exactly header.size payload bytes; `fds` came with it. */
export function decodeMessage(channel: Channel, bytes: Uint8Array, fds: number[] = []): VhostMessage {
  const { request, flags, size } = decodeHeader(bytes);
  checkFlags(flags);
  if (size > MAX_PAYLOAD) {
    throw new ProtocolError('PAYLOAD_TOO_LARGE', 'size', size, `payload of ${size} bytes exceeds ${MAX_PAYLOAD}`);
  }
  if (bytes.length < HEADER_SIZE + size) {
    throw new ProtocolError('TRUNCATED', 'payload', bytes.length - HEADER_SIZE,
      `header promises ${size} payload bytes, got ${bytes.length - HEADER_SIZE}`);
  }
  if (bytes.length > HEADER_SIZE + size) {
    throw new ProtocolError('TRAILING_BYTES', 'size', size,
      `header promises ${size} payload bytes, got ${bytes.length - HEADER_SIZE}`);
  }
  if (fds.length > MAX_FDS) {
    throw new ProtocolError('FD_COUNT', 'fds', fds.length, `${fds.length} fds exceed the limit of ${MAX_FDS}`);
  }

  const reply = isReply(flags);
  const name = requestName(channel, request);
  const payload = new DataView(bytes.buffer, bytes.byteOffset + HEADER_SIZE, size);
  const info = requestInfo(channel, request);
  let body: Body;
  if (!info) {
    // Unknown numbers are not an error by themselves: the device decides whether to refuse them.
    body = readBody('raw', payload);
  } else {
    const shapes = reply ? info.reply : info.request;
    const shape = shapes.find((sh) => shapeFits(sh, size));
    if (!shape) {
      throw new ProtocolError('BAD_SIZE', 'size', size,
        `${name}${reply ? ' reply' : ''} payload must be ${describeShapes(shapes)} bytes, got ${size}`);
    }
    body = readBody(shape.kind, payload);
  }

  const [min, max] = fdRange(channel, request, reply, body, MAX_FDS);
  if (fds.length < min || fds.length > max) {
    const want = min === max ? `${min}` : `${min}-${max}`;
    throw new ProtocolError('FD_COUNT', 'fds', fds.length,
      `${name}${reply ? ' reply' : ''} carries ${want} fd(s), got ${fds.length}`);
  }

  return { channel, request, name, flags, isReply: reply, needsReply: needsReply(flags), body, fds: [...fds] };
}

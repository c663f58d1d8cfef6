/**
 * Message encoding. Refuses bodies the request cannot carry so that a device bug shows up
 * as an exception here rather than as a confused front-end.
 */
import { ProtocolError } from './errors.js';
import { HEADER_SIZE, NEED_REPLY_FLAG, REPLY_FLAG, VERSION, VERSION_MASK, writeHeader } from './header.js';
import { MAX_PAYLOAD, bodySize, writeBody, type Body } from './bodies.js';
import { requestInfo, requestName, shapeFits, type Channel } from './requests.js';

export interface OutgoingMessage {
  channel: Channel;
  request: number;
  /** Extra flag bits; the version is always forced to 1. */
  flags?: number;
  isReply?: boolean;
  needsReply?: boolean;
  body: Body;
}

function flagsOf(msg: OutgoingMessage): number {
  let flags = ((msg.flags ?? 0) & ~VERSION_MASK) | VERSION;
  if (msg.isReply !== undefined) flags = msg.isReply ? flags | REPLY_FLAG : flags & ~REPLY_FLAG;
  if (msg.needsReply !== undefined) flags = msg.needsReply ? flags | NEED_REPLY_FLAG : flags & ~NEED_REPLY_FLAG;
  return flags >>> 0;
}

/** Header + payload bytes; decodeMessage(channel, encodeMessage(m)) gives m back. */
export function encodeMessage(msg: OutgoingMessage): Uint8Array {
  const flags = flagsOf(msg);
  const reply = (flags & REPLY_FLAG) !== 0;
  if (reply && (flags & NEED_REPLY_FLAG) !== 0) {
    throw new ProtocolError('BAD_FLAGS', 'flags', flags, 'a reply cannot itself ask for a reply');
  }
  const size = bodySize(msg.body);
  const info = requestInfo(msg.channel, msg.request);
  if (info) {
    const shapes = reply ? info.reply : info.request;
    if (!shapes.some((sh) => sh.kind === msg.body.kind && shapeFits(sh, size))) {
      throw new ProtocolError('BAD_BODY', 'body', msg.body.kind,
        `${requestName(msg.channel, msg.request)}${reply ? ' reply' : ''} cannot carry a ${msg.body.kind} body of ${size} bytes`);
    }
  }
  if (size > MAX_PAYLOAD) {
    throw new ProtocolError('PAYLOAD_TOO_LARGE', 'size', size, `payload of ${size} bytes exceeds ${MAX_PAYLOAD}`);
  }
  const out = new Uint8Array(HEADER_SIZE + size);
  writeHeader(new DataView(out.buffer), { request: msg.request, flags, size });
  writeBody(msg.body, new DataView(out.buffer, HEADER_SIZE, size));
  return out;
}

/**
 * The 12-byte vhost-user header: u32 request, u32 flags, u32 size.
 * The spec says "native byte order"; every host we run on (x86-64, arm64) is little endian,
 * so the codec fixes little endian rather than depending on the machine.
 */
import { ProtocolError } from './errors.js';

export const HEADER_SIZE = 12;
/** Protocol version carried in flags bits 0-1; the only version that exists. */
export const VERSION = 0x1;
export const VERSION_MASK = 0x3;
export const REPLY_FLAG = 0x4;
export const NEED_REPLY_FLAG = 0x8;
/** Every bit above NEED_REPLY is reserved; rust-vmm rejects them and so do we. */
export const RESERVED_FLAGS = ~0xf >>> 0;

export interface Header {
  request: number;
  flags: number;
  size: number;
}

/** Reads the raw header fields without judging them (the framer needs the size before validation). */
export function decodeHeader(bytes: Uint8Array, offset = 0): Header {
  if (bytes.length - offset < HEADER_SIZE) {
    throw new ProtocolError('TRUNCATED', 'header', bytes.length - offset,
      `header needs ${HEADER_SIZE} bytes, got ${Math.max(0, bytes.length - offset)}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_SIZE);
  return {
    request: view.getUint32(0, true),
    flags: view.getUint32(4, true),
    size: view.getUint32(8, true),
  };
}

export function writeHeader(view: DataView, header: Header): void {
  view.setUint32(0, header.request >>> 0, true);
  view.setUint32(4, header.flags >>> 0, true);
  view.setUint32(8, header.size >>> 0, true);
}

export function isReply(flags: number): boolean {
  return (flags & REPLY_FLAG) !== 0;
}

export function needsReply(flags: number): boolean {
  return (flags & NEED_REPLY_FLAG) !== 0;
}

export function versionOf(flags: number): number {
  return flags & VERSION_MASK;
}

/** Builds a flags word; callers say what they mean instead of or-ing bits. */
export function makeFlags(opts: { isReply?: boolean; needsReply?: boolean } = {}): number {
  return VERSION | (opts.isReply ? REPLY_FLAG : 0) | (opts.needsReply ? NEED_REPLY_FLAG : 0);
}

/** Flags of every reply: QEMU rejects replies whose flags are anything but VERSION|REPLY. */
export function replyFlags(): number {
  return VERSION | REPLY_FLAG;
}

/**
 * A whole front-end IOTLB_MSG request (UPDATE or INVALIDATE) decoded in place, without
 * allocation: the queue-pair worker reads these off the socket itself (datapath/
 * iotlb-fast-path.ts), one per guest DMA map and unmap.
 *
 * Only the plain case is accepted: flags VERSION (+ NEED_REPLY), a 32-byte payload, an
 * UPDATE with a size, RO/WO/RW and every value below 2^53 with no wrap, or an INVALIDATE of
 * any range, clamped below 2^53 as the IOTLB_MSG handler clamps it (a lazy Linux guest's
 * flush arrives from QEMU 8.0 on as [0xfef00000, 2^64), one per flush: sending those to the
 * main thread cost a hand-back of the socket each). Whatever else — a malformed message,
 * another request — is not judged here: it goes to the full decoder and handler on the
 * main thread, which refuse it exactly as they always do. Taking only what the handler
 * applies the same way keeps the two paths from disagreeing
 * (test/protocol/plain-iotlb.test.ts).
 */
import { IotlbPerm, IotlbType, FIXED_SIZES } from './bodies.js';
import { HEADER_SIZE, NEED_REPLY_FLAG, VERSION } from './header.js';
import { FrontendRequest } from './requests.js';

/** Header plus the fixed IOTLB payload. */
export const IOTLB_FRAME_SIZE = HEADER_SIZE + FIXED_SIZES.iotlb!;

const LIMIT = 2 ** 53;
/** High words at or above this make a u64 >= 2^53. */
const HIGH_LIMIT = 2 ** 21;

export interface PlainIotlbRequest {
  iotlbType: number;
  iova: number;
  /** For an INVALIDATE, at least 1 (the handler widens an empty one to one byte). */
  size: number;
  uaddr: number;
  perm: number;
  needsReply: boolean;
}

export function plainIotlbRequest(): PlainIotlbRequest {
  return { iotlbType: 0, iova: 0, size: 0, uaddr: 0, perm: 0, needsReply: false };
}

/** A u64 below 2^53 as a number, or -1. */
function u53(view: DataView, at: number): number {
  const high = view.getUint32(at + 4, true);
  return high >= HIGH_LIMIT ? -1 : high * 2 ** 32 + view.getUint32(at, true);
}

/**
 * An INVALIDATE of [iova, iova + size) in u64s (either may be -1: 2^53 or more) as the
 * handler applies it: start below 2^53, end at most 2^53 (the sum taken without wrap), at
 * least one byte. Clamping only widens what is dropped.
 */
function clampInvalidate(out: PlainIotlbRequest, iova: number, size: number): void {
  const start = iova < 0 ? LIMIT - 1 : iova;
  // Two values below 2^53 add up exactly below it, and round to 2^53 or more above it.
  const end = iova < 0 || size < 0 || iova + size >= LIMIT ? LIMIT : iova + size;
  out.iova = start;
  out.size = Math.max(1, end - start);
}

/**
 * Decodes `bytes` (at least IOTLB_FRAME_SIZE long; only that many are read) into `out`;
 * false when it is not a plain IOTLB UPDATE or INVALIDATE request (see above).
 */
export function decodePlainIotlb(bytes: Uint8Array, out: PlainIotlbRequest, view = new DataView(bytes.buffer, bytes.byteOffset)): boolean {
  if (bytes.length < IOTLB_FRAME_SIZE) return false;
  if (view.getUint32(0, true) !== FrontendRequest.IOTLB_MSG) return false;
  const flags = view.getUint32(4, true);
  if ((flags & ~NEED_REPLY_FLAG) !== VERSION) return false;
  if (view.getUint32(8, true) !== FIXED_SIZES.iotlb) return false;
  const p = HEADER_SIZE;
  const iova = u53(view, p);
  const size = u53(view, p + 8);
  const uaddr = u53(view, p + 16);
  const perm = view.getUint8(p + 24);
  const iotlbType = view.getUint8(p + 25);
  if (perm > IotlbPerm.RW) return false;
  if (iotlbType === IotlbType.UPDATE) {
    if (iova < 0 || size <= 0 || uaddr < 0 || iova + size > LIMIT || uaddr + size > LIMIT || perm === IotlbPerm.NONE) return false;
    out.iova = iova;
    out.size = size;
    out.uaddr = uaddr;
  } else if (iotlbType === IotlbType.INVALIDATE) {
    clampInvalidate(out, iova, size);
    out.uaddr = 0;
  } else {
    return false;
  }
  out.iotlbType = iotlbType;
  out.perm = perm;
  out.needsReply = (flags & NEED_REPLY_FLAG) !== 0;
  return true;
}

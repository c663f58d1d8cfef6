/**
 * Test frames with known contents: each frame carries its sequence number and a payload
 * derived from it, so a frame that comes back can be checked byte for byte without
 * keeping a copy (and a frame that comes back twice, or from the wrong place, is seen).
 */

export const FRAME_DST = Uint8Array.of(0x02, 0x00, 0x00, 0x00, 0x00, 0x01);
export const FRAME_SRC = Uint8Array.of(0x02, 0x00, 0x00, 0x00, 0x00, 0x02);
/** IEEE 802 local experimental ethertype. */
export const FRAME_ETHERTYPE = 0x88b5;
export const MIN_TEST_FRAME = 20;

/** Payload byte i (counted from the start of the frame) of frame `seq`. */
export function payloadByte(seq: number, i: number): number {
  return (seq * 131 + i * 7 + (i >>> 8) * 13) & 0xff;
}

/** Writes frame `seq` of `len` bytes at out[off..]: dst, src, ethertype, u32 seq, payload. */
export function writeFrame(out: Uint8Array, off: number, seq: number, len: number): void {
  if (len < MIN_TEST_FRAME) throw new Error(`test frames are at least ${MIN_TEST_FRAME} bytes`);
  out.set(FRAME_DST, off);
  out.set(FRAME_SRC, off + 6);
  out[off + 12] = FRAME_ETHERTYPE >>> 8;
  out[off + 13] = FRAME_ETHERTYPE & 0xff;
  out[off + 14] = seq & 0xff;
  out[off + 15] = (seq >>> 8) & 0xff;
  out[off + 16] = (seq >>> 16) & 0xff;
  out[off + 17] = (seq >>> 24) & 0xff;
  for (let i = 18; i < len; i++) out[off + i] = payloadByte(seq, i);
}

/** A test frame's length for `seq`: spread over [min, max] so sizes vary. */
export function frameLength(seq: number, min = 60, max = 1514): number {
  return min + ((seq * 2654435761) >>> 0) % (max - min + 1);
}

/** Sequence number of a frame (at bytes 14..17). */
export function frameSeq(b: Uint8Array, off: number): number {
  return (b[off + 14] | (b[off + 15] << 8) | (b[off + 16] << 16) | (b[off + 17] << 24)) >>> 0;
}

/**
 * Checks a looped-back frame: MACs swapped, ethertype, seq and payload intact.
 * Returns null when it is right, else what is wrong.
 */
export function checkLoopedFrame(b: Uint8Array, off: number, len: number, seq: number, expectedLen: number): string | null {
  if (len !== expectedLen) return `frame ${seq}: length ${len}, expected ${expectedLen}`;
  for (let i = 0; i < 6; i++) {
    if (b[off + i] !== FRAME_SRC[i]) return `frame ${seq}: destination MAC byte ${i} is ${b[off + i]}, expected the sent source MAC`;
    if (b[off + 6 + i] !== FRAME_DST[i]) return `frame ${seq}: source MAC byte ${i} is ${b[off + 6 + i]}, expected the sent destination MAC`;
  }
  if (b[off + 12] !== FRAME_ETHERTYPE >>> 8 || b[off + 13] !== (FRAME_ETHERTYPE & 0xff)) return `frame ${seq}: ethertype changed`;
  const got = frameSeq(b, off);
  if (got !== (seq >>> 0)) return `frame ${seq}: carries sequence ${got}`;
  for (let i = 18; i < len; i++) {
    if (b[off + i] !== payloadByte(seq, i)) return `frame ${seq}: payload byte ${i} is ${b[off + i]}, expected ${payloadByte(seq, i)}`;
  }
  return null;
}

import { writeFd } from '../sys/index.js';
import { TAP_HEADER_LENGTH } from './tap.js';

/**
 * The frame a back-end sends on a guest's behalf after it moved (vhost-user SEND_RARP, which
 * QEMU issues after a migration when the guest cannot announce itself): a broadcast RARP
 * "reverse request" from the guest's MAC, as QEMU's own announce and DPDK's vhost build it,
 * so switches learn where that MAC lives now.
 */

/** Ethernet minimum without FCS: 14-byte header + 28-byte RARP body, zero-padded. */
export const RARP_FRAME_LENGTH = 60;
const ETHERTYPE_RARP = 0x8035;
const RARP_REQUEST_REVERSE = 3;

/** The MAC in a SEND_RARP payload: its first six bytes in memory order (little-endian u64). */
export function macOfRarpPayload(value: bigint): Uint8Array {
  const mac = new Uint8Array(6);
  for (let i = 0; i < 6; i++) mac[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return mac;
}

export function rarpFrame(mac: Uint8Array): Uint8Array {
  const f = new Uint8Array(RARP_FRAME_LENGTH);
  const v = new DataView(f.buffer);
  f.fill(0xff, 0, 6); // broadcast
  f.set(mac, 6);
  v.setUint16(12, ETHERTYPE_RARP);
  v.setUint16(14, 1); // hardware: Ethernet
  v.setUint16(16, 0x0800); // protocol: IPv4
  f[18] = 6;
  f[19] = 4;
  v.setUint16(20, RARP_REQUEST_REVERSE);
  f.set(mac, 22); // sender hardware address; sender IP 0
  f.set(mac, 32); // target hardware address; target IP 0
  return f;
}

/** Writes the RARP for the MAC of a SEND_RARP payload into a tap, behind a zero vnet header. */
export function announceOnTap(tapFd: number, payload: bigint): void {
  const frame = new Uint8Array(TAP_HEADER_LENGTH + RARP_FRAME_LENGTH);
  frame.set(rarpFrame(macOfRarpPayload(payload)), TAP_HEADER_LENGTH);
  writeFd(tapFd, frame, 0, frame.length);
}

// The RARP a back-end sends for a guest that moved (src/net/announce.ts): byte for byte what
// QEMU's own announce puts on the wire.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { macOfRarpPayload, RARP_FRAME_LENGTH, rarpFrame } from '../../src/net/announce.js';

it('SEND_RARP payload to MAC, and the broadcast RARP reverse request from it', () => {
  const mac = macOfRarpPayload(0x0000_5634_1200_5452n);
  assert.deepEqual([...mac], [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
  const f = rarpFrame(mac);
  assert.equal(f.length, RARP_FRAME_LENGTH);
  const hex = Buffer.from(f).toString('hex');
  assert.equal(hex.slice(0, 28), 'ffffffffffff' + '525400123456' + '8035', 'broadcast from the guest, ethertype RARP');
  assert.equal(hex.slice(28, 44), '0001' + '0800' + '06' + '04' + '0003', 'Ethernet/IPv4, reverse request');
  assert.equal(hex.slice(44, 84), '525400123456' + '00000000' + '525400123456' + '00000000', 'sender and target: the guest, no IP');
  assert.deepEqual([...f.subarray(42)], new Array(18).fill(0), 'zero padding to 60 bytes');
});

// Payload builders: each returns the wire bytes (assembled with Bytes) and the body the
// decoder should produce for them.
import type { Body, MemoryRegion } from '../../src/protocol/index.js';
import { b } from './bytes.js';

export type Payload = [Uint8Array, Body];

export const region = (i: number): MemoryRegion => ({
  guestAddr: 0x1000_0000n * BigInt(i),
  size: 0x4000_0000n + BigInt(i),
  userAddr: 0x7f00_0000_0000n + BigInt(i) * 0x1000_0000n,
  mmapOffset: BigInt(i) * 0x1000n,
});

const regionBytes = (r: MemoryRegion) => b().u64(r.guestAddr).u64(r.size).u64(r.userAddr).u64(r.mmapOffset).build();

export const P = {
  none: (): Payload => [new Uint8Array(0), { kind: 'none' }],
  u64: (value: bigint): Payload => [b().u64(value).build(), { kind: 'u64', value }],
  state: (index: number, num: number): Payload => [b().u32(index).u32(num).build(), { kind: 'vringState', index, num }],
  addr: (): Payload => [
    b().u32(1).u32(1).u64(0x1000n).u64(0x3000n).u64(0x2000n).u64(0xdead_0000n).build(),
    { kind: 'vringAddr', index: 1, flags: 1, descUser: 0x1000n, usedUser: 0x3000n, availUser: 0x2000n, logGuest: 0xdead_0000n },
  ],
  memTable: (n: number): Payload => {
    const regions = Array.from({ length: n }, (_, i) => region(i + 1));
    const bytes = b().u32(n).u32(0);
    regions.forEach((r) => bytes.raw(regionBytes(r)));
    return [bytes.build(), { kind: 'memTable', regions }];
  },
  memRegion: (i: number): Payload => [b().u64(0n).raw(regionBytes(region(i))).build(), { kind: 'memRegion', region: region(i) }],
  log: (): Payload => [b().u64(0x2_0000n).u64(0x100n).build(), { kind: 'log', size: 0x2_0000n, offset: 0x100n }],
  iotlb: (iotlbType: number, perm: number): Payload => [
    b().u64(0xfeed_0000n).u64(0x1000n).u64(0x7f12_3400_0000n).u8(perm).u8(iotlbType).pad(6).build(),
    { kind: 'iotlb', iova: 0xfeed_0000n, size: 0x1000n, userAddr: 0x7f12_3400_0000n, perm, iotlbType },
  ],
  config: (size: number, flags = 0): Payload => {
    const payload = Uint8Array.from({ length: size }, (_, i) => (i * 7 + 3) & 0xff);
    return [b().u32(0).u32(size).u32(flags).raw(payload).build(), { kind: 'config', offset: 0, size, flags, payload }];
  },
  area: (u64: bigint): Payload => [
    b().u64(u64).u64(4096n).u64(0x3000n).build(),
    { kind: 'vringArea', u64, size: 4096n, offset: 0x3000n },
  ],
  inflight: (mmapSize: bigint): Payload => [
    b().u64(mmapSize).u64(0n).u16(2).u16(256).pad(4).build(),
    { kind: 'inflight', mmapSize, mmapOffset: 0n, numQueues: 2, queueSize: 256 },
  ],
  status: (value: number): Payload => [b().u64(BigInt(value)).build(), { kind: 'status', value }],
  uuid: (): Payload => {
    const uuid = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
    return [uuid.slice(), { kind: 'sharedObject', uuid }];
  },
  deviceState: (direction: number, phase: number): Payload => [
    b().u32(direction).u32(phase).build(),
    { kind: 'deviceState', direction, phase },
  ],
  raw: (length: number): Payload => {
    const bytes = Uint8Array.from({ length }, (_, i) => (i * 13) & 0xff);
    return [bytes.slice(), { kind: 'raw', bytes }];
  },
};

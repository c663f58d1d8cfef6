import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import {
  GuestPhysicalSpace, UserAddressSpace, IotlbAddressSpace, MAP_FAULT, MAP_MISS,
  FAULT_DENIED, FAULT_UNMAPPED, ACCESS_READ, ACCESS_WRITE,
} from '../../src/memory/address-space.js';
import { StubIotlb } from '../virtqueue/helpers.js';

function region(guestAddr: number, userAddr: number, size: number) {
  return { guestAddr, userAddr, size, mmapOffset: 0, bytes: new Uint8Array(size) };
}

test('addRegion validates size, overlap and 2^53 overflow, naming the field', () => {
  const m = new GuestMemory();
  assert.throws(() => m.addRegion(region(0, 0x1000, 0)), /size must be > 0/);
  m.addRegion(region(0x10000, 0x7000_0000, 0x1000));
  assert.throws(() => m.addRegion(region(0x10800, 0x8000_0000, 0x1000)), /guestAddr range .* overlaps/);
  assert.throws(() => m.addRegion(region(0x20000, 0x7000_0800, 0x1000)), /userAddr range .* overlaps/);
  assert.throws(() => m.addRegion({ ...region(2 ** 53 - 0x800, 0x9000_0000, 0x1000) }), /guestAddr\+size .* overflows 2\^53/);
  assert.throws(() => m.addRegion({ ...region(0x30000, 2 ** 53 - 0x800, 0x1000) }), /userAddr\+size .* overflows 2\^53/);
  assert.throws(() => m.addRegion({ guestAddr: 2 ** 53, userAddr: 0, size: 1, mmapOffset: 0, bytes: new Uint8Array(1) }), /guestAddr .* 2\^53/);
  assert.throws(() => m.addRegion({ guestAddr: -1, userAddr: 0, size: 1, mmapOffset: 0, bytes: new Uint8Array(1) }), /guestAddr must be a non-negative integer/);
  assert.throws(() => m.addRegion({ guestAddr: 0x40000, userAddr: 0xa000_0000, size: 0x1000, mmapOffset: 0, bytes: new Uint8Array(10) }), /bytes holds 10 bytes/);
  assert.equal(m.count, 1);
});

test('region count is bounded', () => {
  const m = new GuestMemory(3);
  for (let i = 0; i < 3; i++) m.addRegion(region(i * 0x1000, 0x100000 + i * 0x1000, 0x1000));
  assert.throws(() => m.addRegion(region(0x10000, 0x200000, 0x1000)), /too many memory regions/);
});

test('findGuest/findUser with many regions (binary search) and removeRegion', () => {
  const m = new GuestMemory();
  for (let i = 19; i >= 0; i--) m.addRegion(region(i * 0x2000, 0x900000 - i * 0x2000, 0x1000));
  for (let i = 0; i < 20; i++) {
    assert.equal(m.findGuest(i * 0x2000 + 0xfff)?.guestAddr, i * 0x2000);
    assert.equal(m.findGuest(i * 0x2000 + 0x1000), null);
    assert.equal(m.findUser(0x900000 - i * 0x2000 + 5)?.guestAddr, i * 0x2000);
  }
  assert.equal(m.userToGuest(0x900000 - 0x2000 + 0x10), 0x2010);
  assert.equal(m.removeRegion({ guestAddr: 0x2000, size: 0x999 }), null);
  assert.equal(m.removeRegion({ guestAddr: 0x2000, size: 0x1000 })?.guestAddr, 0x2000);
  assert.equal(m.findGuest(0x2000), null);
  assert.equal(m.count, 19);
});

test('GuestPhysicalSpace: clamps to region end, faults outside, forgets removed regions', () => {
  const m = new GuestMemory();
  const a = m.addRegion(region(0x10000, 0x7000_0000, 0x1000));
  const b = m.addRegion(region(0x11000, 0x5000_0000, 0x1000));
  const s = new GuestPhysicalSpace(m);
  assert.equal(s.map(0x10ff0, 0x40, ACCESS_READ), 0x10);
  assert.equal(s.bytes, a.bytes);
  assert.equal(s.offset, 0xff0);
  assert.equal(s.map(0x11000, 0x40, ACCESS_WRITE), 0x40);
  assert.equal(s.bytes, b.bytes);
  assert.equal(s.offset, 0);
  assert.equal(s.map(0x12000, 1, ACCESS_READ), MAP_FAULT);
  assert.equal(s.faultKind, FAULT_UNMAPPED);
  // Last-hit cache must not survive removal.
  assert.equal(s.map(0x11010, 4, ACCESS_READ), 4);
  m.removeRegion({ guestAddr: 0x11000, size: 0x1000 });
  assert.equal(s.map(0x11010, 4, ACCESS_READ), MAP_FAULT);
});

test('UserAddressSpace translates front-end virtual addresses', () => {
  const m = new GuestMemory();
  const a = m.addRegion(region(0x10000, 0x7000_0000, 0x1000));
  const s = new UserAddressSpace(m);
  assert.equal(s.map(0x7000_0100, 0x1000, ACCESS_READ), 0xf00);
  assert.equal(s.bytes, a.bytes);
  assert.equal(s.offset, 0x100);
  assert.equal(s.map(0x10100, 1, ACCESS_READ), MAP_FAULT);
});

test('IotlbAddressSpace: miss, denied, uaddr outside memory, clamps to entry and region', () => {
  const m = new GuestMemory();
  const a = m.addRegion(region(0x10000, 0x7000_0000, 0x2000));
  const tlb = new StubIotlb();
  const s = new IotlbAddressSpace(tlb, m);
  assert.equal(s.map(0xabc000, 16, ACCESS_READ), MAP_MISS);
  assert.equal(s.missAddr, 0xabc000);
  tlb.insert({ iova: 0xabc000, size: 0x1000, uaddr: 0x7000_1800, perm: ACCESS_READ });
  assert.equal(s.map(0xabc010, 16, ACCESS_READ), 16);
  assert.equal(s.bytes, a.bytes);
  assert.equal(s.offset, 0x1810);
  // Entry extends past the region end: clamp to the region.
  assert.equal(s.map(0xabc700, 0x200, ACCESS_READ), 0x100);
  assert.equal(s.map(0xabc000, 16, ACCESS_WRITE), MAP_FAULT);
  assert.equal(s.faultKind, FAULT_DENIED);
  // Past the region, inside the entry: not guest memory.
  assert.equal(s.map(0xabc900, 16, ACCESS_READ), MAP_FAULT);
  assert.equal(s.faultKind, FAULT_UNMAPPED);
  tlb.insert({ iova: 0x5000, size: 0x1000, uaddr: 0x1234_0000, perm: 3 });
  assert.equal(s.map(0x5000, 1, ACCESS_READ), MAP_FAULT);
});

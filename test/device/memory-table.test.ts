// The control path's memory table (src/device/memory-table.ts) on ADD_MEM_REG / REM_MEM_REG as
// QEMU sends them with several queue pairs: one vhost device per pair on one connection, each
// adding and removing every region itself.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { MemoryTable } from '../../src/device/memory-table.js';
import { DeviceError } from '../../src/device/errors.js';
import { closeFd, memfdCreate } from '../../src/sys/index.js';

const openFds = (): number => readdirSync('/proc/self/fd').length;

it('the same region added twice is one mapping with two users: its second fd closed, removed only by the second REM', () => {
  const before = openFds();
  const table = new MemoryTable(8);
  const mem = memfdCreate('mt-test', 0x200000);
  const region = { guestAddr: 0n, size: 0x200000n, userAddr: 0x7f0000000000n, mmapOffset: 0n };
  assert.equal(table.add(region, mem), true, 'the first add changes the table');
  assert.equal(table.add(region, memfdCreate('mt-test-2', 0x200000)), false, 'the same region again changes nothing');
  assert.equal(table.regions.length, 1);
  assert.equal(openFds(), before + 1, 'the second fd was closed at once');
  // Same addresses, another offset: a different region, which overlaps the first.
  const other = memfdCreate('mt-test-3', 0x201000);
  assert.throws(() => table.add({ ...region, mmapOffset: 0x1000n }, other), (e: Error) => e instanceof DeviceError && /overlaps/.test(e.message));
  assert.equal(table.remove(region), false, 'one user left');
  assert.equal(table.regions.length, 1);
  assert.equal(table.remove(region), true);
  assert.equal(table.regions.length, 0);
  assert.throws(() => table.remove(region), /no region at guest 0x0/);
  closeFd(other); // a refused add leaves the fd to its caller (the handler closes it)
  assert.equal(openFds(), before, 'every fd the table took is closed');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { closeFd, fdKind, mapFd, memfdCreate, pageSize, unmap } from '../../src/sys/index.js';

function mappingsOf(name: string): number {
  return readFileSync('/proc/self/maps', 'utf8').split('\n').filter((line) => line.includes(`/memfd:${name}`)).length;
}

test('unmap detaches the buffer, and a second unmap is harmless', () => {
  const fd = memfdCreate('vit-unmap', 3 * pageSize());
  assert.deepEqual(fdKind(fd), { kind: 'memfd', size: 3 * pageSize() });
  const buffer = mapFd(fd, pageSize(), 2 * pageSize());
  const view = new Uint8Array(buffer);
  view[0] = 1;
  assert.equal(mappingsOf('vit-unmap'), 1);
  unmap(buffer);
  assert.equal(buffer.byteLength, 0);
  assert.equal(view.length, 0, 'views see the detach too');
  assert.equal(view[0], undefined);
  assert.equal(mappingsOf('vit-unmap'), 0);
  unmap(buffer);
  assert.throws(() => unmap(new ArrayBuffer(8)), TypeError);
  closeFd(fd);
});

test('mapFd validates offset, length and fd', () => {
  const fd = memfdCreate('vit-args', pageSize());
  assert.throws(() => mapFd(fd, 100, 10), (error: Error) => error instanceof RangeError && /page size/.test(error.message));
  assert.throws(() => mapFd(fd, 0, 0), RangeError);
  assert.throws(() => mapFd(fd, -4096, 10), RangeError);
  assert.throws(() => mapFd(fd, 0, 2 ** 53), RangeError);
  assert.throws(() => mapFd(fd, 0, 1.5), RangeError);
  assert.throws(() => mapFd('3' as unknown as number, 0, 10), TypeError);
  const readOnly = new Uint8Array(mapFd(fd, 0, pageSize(), false));
  assert.equal(readOnly[0], 0);
  unmap(readOnly.buffer as ArrayBuffer);
  closeFd(fd);
  assert.throws(() => mapFd(fd, 0, 10), { code: 'EBADF', syscall: 'mmap' });
});

test('a mapping that is never unmapped is released when its buffer is collected', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const fd = memfdCreate('vit-gc', pageSize());
  (() => {
    new Uint8Array(mapFd(fd, 0, pageSize()))[0] = 9;
  })();
  assert.equal(mappingsOf('vit-gc'), 1);
  for (let i = 0; i < 20 && mappingsOf('vit-gc') > 0; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.equal(mappingsOf('vit-gc'), 0);
  const check = new Uint8Array(mapFd(fd, 0, pageSize()));
  assert.equal(check[0], 9, 'writes went to the shared file');
  unmap(check.buffer as ArrayBuffer);
  closeFd(fd);
});

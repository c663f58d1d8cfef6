// Shared memory: memfd creation and mmap of fds as external ArrayBuffers.
import { constants as bufferConstants } from 'node:buffer';
import { types } from 'node:util';
import { native } from './native.js';
import { checkFd, checkSize, checkString } from './errors.js';

/** The kernel's page size; mapFd offsets must be multiples of it. */
export function pageSize(): number {
  return native().pageSize;
}

/**
 * mmap(MAP_SHARED) of fd[offset, offset+length) as an external ArrayBuffer. The mapping is
 * released by unmap() or, failing that, when the buffer is garbage collected.
 * A read-only mapping (writable=false) must never be written through: that is a SIGSEGV.
 * Map in the thread that uses the memory; do not transfer the buffer to a worker.
 * Node 20 caps external ArrayBuffers at buffer.constants.MAX_LENGTH (4 GiB); larger maps throw.
 */
export function mapFd(fd: number, offset: number, length: number, writable = true): ArrayBuffer {
  checkFd('mapFd fd', fd);
  checkSize('mapFd offset', offset);
  checkSize('mapFd length', length);
  if (typeof writable !== 'boolean') throw new TypeError('mapFd writable must be a boolean');
  const page = native().pageSize;
  if (offset % page !== 0) throw new RangeError(`mapFd offset ${offset} is not a multiple of the page size (${page})`);
  if (length === 0) throw new RangeError('mapFd length must be greater than 0');
  if (length > bufferConstants.MAX_LENGTH) {
    throw new RangeError(`mapFd length ${length} exceeds this Node's ArrayBuffer limit (${bufferConstants.MAX_LENGTH})`);
  }
  return native().mapFd(fd, offset, length, writable);
}

/**
 * munmap now and detach the buffer (byteLength becomes 0, so views cannot reach freed
 * memory). Idempotent. Throws TypeError for a live buffer that mapFd did not create.
 */
export function unmap(buffer: ArrayBuffer): void {
  if (!types.isArrayBuffer(buffer)) throw new TypeError('unmap expects the ArrayBuffer returned by mapFd');
  native().unmap(buffer);
}

/** memfd_create(MFD_CLOEXEC) sized with ftruncate. */
export function memfdCreate(name: string, size: number): number {
  checkString('memfdCreate name', name, 249);
  checkSize('memfdCreate size', size);
  return native().memfdCreate(name, size);
}

// Error construction and argument checks shared by the src/sys wrappers. The addon
// throws errno errors itself; these cover errors raised before any syscall.
import { constants } from 'node:os';

export interface SystemError extends Error {
  code: string;
  errno?: number;
  syscall: string;
}

/** Node-style error; errno is positive, and omitted for codes that are not errnos (ECTRUNC). */
export function systemError(syscall: string, code: string, detail: string, base: ErrorConstructor = Error): SystemError {
  const error = new base(`${syscall}: ${detail} (${code})`) as SystemError;
  error.code = code;
  const errno = (constants.errno as Record<string, number | undefined>)[code];
  if (errno !== undefined) error.errno = errno;
  error.syscall = syscall;
  return error;
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** `what` and `part` name the argument in the error ("readFd" + " offset"): joined only when it throws. */
export function checkInt(what: string, value: unknown, min: number, max: number, part = ''): number {
  if (typeof value !== 'number') throw new TypeError(`${what}${part} must be a number, got ${typeof value}`);
  if (!Number.isInteger(value)) throw new RangeError(`${what}${part} must be an integer, got ${value}`);
  if (value < min || value > max) throw new RangeError(`${what}${part} must be in [${min}, ${max}], got ${value}`);
  return value;
}

export function checkFd(what: string, value: unknown): number {
  return checkInt(what, value, 0, 0x7fffffff);
}

export function checkSize(what: string, value: unknown): number {
  return checkInt(what, value, 0, MAX_SAFE);
}

export function checkBytes(what: string, value: unknown): Uint8Array {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  return value;
}

/**
 * The start of a [offset, offset+length) window of `view`: `offset`, or 0 if undefined. Start
 * and length are checked in two calls so that the wrappers on the data path (a tap read or
 * write per frame) build no string and no array when the window is valid.
 */
export function windowStart(what: string, view: Uint8Array, offset: unknown): number {
  return offset === undefined ? 0 : checkInt(what, offset, 0, view.length, ' offset');
}

/** The window's length from `start`: `length`, or the rest of `view` if undefined. */
export function windowLength(what: string, view: Uint8Array, start: number, length: unknown): number {
  return length === undefined ? view.length - start : checkInt(what, length, 0, view.length - start, ' length');
}

export function checkString(what: string, value: unknown, maxBytes: number): string {
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string`);
  if (value.includes('\0')) throw new TypeError(`${what} must not contain NUL`);
  const bytes = Buffer.byteLength(value);
  if (bytes > maxBytes) throw new RangeError(`${what} is ${bytes} bytes, at most ${maxBytes} allowed`);
  return value;
}

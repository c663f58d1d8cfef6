import { ADDRESS_LIMIT } from '../iotlb/address.js';

/**
 * The one error type device handlers throw: a semantic error in one request, answered with a
 * REPLY_ACK failure while the session goes on (session.ts ends a connection itself when its
 * stream breaks or a request cannot be answered).
 */
export class DeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeviceError';
  }
}

/** Converts a 64-bit protocol field to a number, refusing values the data path cannot represent. */
export function toSafeNumber(value: bigint, field: string): number {
  if (value < 0n || value >= BigInt(ADDRESS_LIMIT)) {
    throw new DeviceError(`${field} 0x${value.toString(16)} is beyond 2^53, which this backend does not map`);
  }
  return Number(value);
}

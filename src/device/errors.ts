/**
 * The one error type device handlers throw. `fatal` says whether the connection can go on:
 * a semantic error in one request is answered (REPLY_ACK failure) and the session continues;
 * a broken stream or an unanswerable request ends the connection, never the process.
 */
export class DeviceError extends Error {
  constructor(message: string, readonly fatal = false) {
    super(message);
    this.name = 'DeviceError';
  }
}

/** Largest address or size the data path handles as a plain number (see src/iotlb/strategy.ts). */
export const MAX_SAFE_ADDRESS = 2 ** 53;

/** Converts a 64-bit protocol field to a number, refusing values the data path cannot represent. */
export function toSafeNumber(value: bigint, field: string): number {
  if (value < 0n || value >= BigInt(MAX_SAFE_ADDRESS)) {
    throw new DeviceError(`${field} 0x${value.toString(16)} is beyond 2^53, which this backend does not map`);
  }
  return Number(value);
}

/**
 * The one error type the codec throws. Callers branch on `code` and report `field`/`value`,
 * so every malformed-input path names what was wrong instead of only saying so in prose.
 */
export type ProtocolErrorCode =
  | 'TRUNCATED' // fewer bytes than the header or its size field promises
  | 'TRAILING_BYTES' // more bytes than the header's size field accounts for
  | 'BAD_VERSION' // flags bits 0-1 are not 0x1
  | 'BAD_FLAGS' // reserved flag bits set, or NEED_REPLY on a reply
  | 'PAYLOAD_TOO_LARGE' // size field above MAX_PAYLOAD
  | 'BAD_SIZE' // payload size does not fit the request's payload type
  | 'TOO_MANY_REGIONS' // memory table nregions above 8
  | 'BAD_CONFIG_SIZE' // config space access larger than 256 bytes
  | 'BAD_VALUE' // a field holds a value its type cannot have
  | 'FD_COUNT' // ancillary fds do not match what the request carries
  | 'BAD_BODY'; // encode: body kind not valid for this request

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  /** The header/body field at fault, e.g. 'flags', 'size', 'nregions', 'fds', 'config.size'. */
  readonly field: string;
  readonly value: unknown;

  constructor(code: ProtocolErrorCode, field: string, value: unknown, message: string) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.field = field;
    this.value = value;
  }
}

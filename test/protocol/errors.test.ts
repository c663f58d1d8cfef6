// One test per class of malformed input; each checks the error's code and field.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BackendRequest as B, FrontendRequest as F, MAX_PAYLOAD, ProtocolError, decodeHeader, decodeMessage,
  encodeMessage, type Channel,
} from '../../src/protocol/index.js';
import { b, frame } from './bytes.js';
import { P } from './fixtures.js';

function throwsProtocol(fn: () => unknown, code: string, field: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ProtocolError, `expected ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.field, field, err.message);
    return true;
  });
}

const decode = (bytes: Uint8Array, fds: number[] = [], channel: Channel = 'frontend') => () => decodeMessage(channel, bytes, fds);

describe('malformed messages', () => {
  it('bad version', () => {
    throwsProtocol(decode(frame(F.GET_FEATURES, 0x2, new Uint8Array(0))), 'BAD_VERSION', 'flags');
    throwsProtocol(decode(frame(F.GET_FEATURES, 0x0, new Uint8Array(0))), 'BAD_VERSION', 'flags');
  });

  it('reserved flag bits', () => {
    throwsProtocol(decode(frame(F.GET_FEATURES, 0x11, new Uint8Array(0))), 'BAD_FLAGS', 'flags');
  });

  it('a reply that asks for a reply', () => {
    throwsProtocol(decode(frame(F.GET_FEATURES, 0xd, P.u64(1n)[0])), 'BAD_FLAGS', 'flags');
    throwsProtocol(() => encodeMessage({ channel: 'frontend', request: F.GET_FEATURES, isReply: true, needsReply: true, body: P.u64(1n)[1] }), 'BAD_FLAGS', 'flags');
  });

  it('payload too small for the request', () => {
    throwsProtocol(decode(frame(F.SET_FEATURES, 1, b().u32(1).build())), 'BAD_SIZE', 'size');
    throwsProtocol(decode(frame(F.SET_VRING_ADDR, 1, P.addr()[0].subarray(0, 32))), 'BAD_SIZE', 'size');
    throwsProtocol(decode(frame(F.IOTLB_MSG, 1, P.iotlb(2, 3)[0].subarray(0, 26))), 'BAD_SIZE', 'size');
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, b().u32(0).build())), 'BAD_SIZE', 'size');
    throwsProtocol(decode(frame(F.SET_CONFIG, 1, b().u32(0).u32(0).build())), 'BAD_SIZE', 'size');
  });

  it('payload too large for the request', () => {
    throwsProtocol(decode(frame(F.GET_FEATURES, 1, P.u64(0n)[0])), 'BAD_SIZE', 'size');
    throwsProtocol(decode(frame(F.SET_VRING_NUM, 1, b().u32(0).u32(256).u32(0).build())), 'BAD_SIZE', 'size');
    throwsProtocol(decode(frame(F.GET_INFLIGHT_FD, 1, b().raw(P.inflight(0n)[0]).u32(0).build())), 'BAD_SIZE', 'size');
  });

  it('reply payload checked against the reply shape, not the request shape', () => {
    // GET_VRING_BASE reply must be a vring state; a 16-byte reply is wrong.
    throwsProtocol(decode(frame(F.GET_VRING_BASE, 0x5, new Uint8Array(16))), 'BAD_SIZE', 'size');
    // GET_FEATURES request has no payload, its reply has 8 bytes.
    throwsProtocol(decode(frame(F.GET_FEATURES, 0x5, new Uint8Array(0))), 'BAD_SIZE', 'size');
  });

  it('size over MAX_PAYLOAD is rejected before looking at the payload', () => {
    throwsProtocol(decode(frame(F.SET_CONFIG, 1, new Uint8Array(0), MAX_PAYLOAD + 1)), 'PAYLOAD_TOO_LARGE', 'size');
    throwsProtocol(decode(frame(999, 1, new Uint8Array(MAX_PAYLOAD + 1))), 'PAYLOAD_TOO_LARGE', 'size');
  });

  it('nregions above 8', () => {
    const bytes = b().u32(9).u32(0).pad(9 * 32).build();
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, bytes), [1, 2, 3, 4, 5, 6, 7, 8]), 'TOO_MANY_REGIONS', 'nregions');
    throwsProtocol(() => encodeMessage({ channel: 'frontend', request: F.SET_MEM_TABLE, body: { kind: 'memTable', regions: Array(9).fill({ guestAddr: 0n, size: 1n, userAddr: 0n, mmapOffset: 0n }) } }), 'TOO_MANY_REGIONS', 'nregions');
  });

  it('nregions inconsistent with size', () => {
    // Claims 3 regions, carries 2.
    const two = P.memTable(2)[0];
    const lying = b().u32(3).raw(two.subarray(4)).build();
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, lying), [1, 2, 3]), 'BAD_SIZE', 'nregions');
    // Claims 1 region, carries 2.
    const fewer = b().u32(1).raw(two.subarray(4)).build();
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, fewer), [1]), 'BAD_SIZE', 'nregions');
    // Not a multiple of the region size.
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, b().raw(two).pad(4).build()), [1, 2]), 'BAD_SIZE', 'nregions');
  });

  it('too few fds', () => {
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, P.memTable(2)[0]), [7]), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.SET_VRING_KICK, 1, P.u64(0n)[0]), []), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.SET_LOG_BASE, 1, P.log()[0]), []), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.ADD_MEM_REG, 1, P.memRegion(1)[0]), []), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.SET_BACKEND_REQ_FD, 1, new Uint8Array(0)), []), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.GET_INFLIGHT_FD, 5, P.inflight(4096n)[0]), []), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(B.VRING_HOST_NOTIFIER_MSG, 1, P.area(0n)[0]), [], 'backend'), 'FD_COUNT', 'fds');
  });

  it('too many fds', () => {
    throwsProtocol(decode(frame(F.SET_MEM_TABLE, 1, P.memTable(1)[0]), [7, 8]), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.SET_VRING_CALL, 1, P.u64(0x100n)[0]), [9]), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.GET_FEATURES, 1, new Uint8Array(0)), [9]), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.REM_MEM_REG, 1, P.memRegion(1)[0]), [9, 10]), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(F.GET_INFLIGHT_FD, 5, P.inflight(0n)[0]), [9]), 'FD_COUNT', 'fds');
    throwsProtocol(decode(frame(999, 1, new Uint8Array(0)), [1, 2, 3, 4, 5, 6, 7, 8, 9]), 'FD_COUNT', 'fds');
  });

  it('the decoder leaves fds alone and reports them', () => {
    const fds = [40, 41];
    assert.throws(decode(frame(F.GET_FEATURES, 1, new Uint8Array(0)), fds), (err: unknown) =>
      err instanceof ProtocolError && err.value === 2 && /GET_FEATURES/.test(err.message));
    assert.deepEqual(fds, [40, 41]);
  });

  it('truncated header', () => {
    throwsProtocol(decode(new Uint8Array(11)), 'TRUNCATED', 'header');
    throwsProtocol(() => decodeHeader(new Uint8Array(20), 10), 'TRUNCATED', 'header');
  });

  it('truncated payload', () => {
    const full = frame(F.SET_VRING_ADDR, 1, P.addr()[0]);
    throwsProtocol(decode(full.subarray(0, full.length - 1)), 'TRUNCATED', 'payload');
  });

  it('bytes beyond the announced size', () => {
    const bytes = b().raw(frame(F.GET_FEATURES, 1, new Uint8Array(0))).u8(0).build();
    throwsProtocol(decode(bytes), 'TRAILING_BYTES', 'size');
  });

  it('unknown request decodes to "unknown (N)" with a raw body', () => {
    const msg = decodeMessage('frontend', frame(200, 1, Uint8Array.of(1, 2, 3)), [4]);
    assert.equal(msg.name, 'unknown (200)');
    assert.deepEqual(msg.body, { kind: 'raw', bytes: Uint8Array.of(1, 2, 3) });
    assert.deepEqual(msg.fds, [4]);
    assert.equal(decodeMessage('backend', frame(0, 1, new Uint8Array(0))).name, 'unknown (0)');
    assert.equal(decodeMessage('backend', frame(11, 1, new Uint8Array(0))).name, 'unknown (11)');
  });

  it('config size above 256', () => {
    const bytes = b().u32(0).u32(257).u32(0).pad(257).build();
    throwsProtocol(decode(frame(F.SET_CONFIG, 1, bytes)), 'BAD_CONFIG_SIZE', 'config.size');
    // A huge size field must not be trusted to index the payload.
    throwsProtocol(decode(frame(F.GET_CONFIG, 1, b().u32(0).u32(0xffff_fff0).u32(0).pad(4).build())), 'BAD_CONFIG_SIZE', 'config.size');
    throwsProtocol(() => encodeMessage({ channel: 'frontend', request: F.SET_CONFIG, body: { kind: 'config', offset: 0, size: 300, flags: 0, payload: new Uint8Array(300) } }), 'BAD_CONFIG_SIZE', 'config.size');
  });

  it('config size field disagrees with payload length', () => {
    const bytes = b().u32(0).u32(8).u32(0).pad(4).build();
    throwsProtocol(decode(frame(F.SET_CONFIG, 1, bytes)), 'BAD_SIZE', 'size');
  });

  it('IOTLB perm and type outside their ranges', () => {
    throwsProtocol(decode(frame(F.IOTLB_MSG, 1, P.iotlb(2, 4)[0])), 'BAD_VALUE', 'iotlb.perm');
    throwsProtocol(decode(frame(F.IOTLB_MSG, 1, P.iotlb(5, 1)[0])), 'BAD_VALUE', 'iotlb.type');
    throwsProtocol(decode(frame(B.IOTLB_MSG, 1, P.iotlb(0, 1)[0]), [], 'backend'), 'BAD_VALUE', 'iotlb.type');
  });

  it('device status wider than 8 bits', () => {
    throwsProtocol(decode(frame(F.SET_STATUS, 1, P.u64(0x100n)[0])), 'BAD_VALUE', 'status');
  });

  it('encoder refuses a body the request cannot carry', () => {
    throwsProtocol(() => encodeMessage({ channel: 'frontend', request: F.SET_FEATURES, body: { kind: 'vringState', index: 0, num: 0 } }), 'BAD_BODY', 'body');
    throwsProtocol(() => encodeMessage({ channel: 'backend', request: B.SHMEM_MAP, body: { kind: 'raw', bytes: new Uint8Array(8) } }), 'BAD_BODY', 'body');
    throwsProtocol(() => encodeMessage({ channel: 'frontend', request: F.SET_FEATURES, body: { kind: 'u64', value: 1n << 64n } }), 'BAD_VALUE', 'value');
    throwsProtocol(() => encodeMessage({ channel: 'frontend', request: F.SET_VRING_NUM, body: { kind: 'vringState', index: -1, num: 0 } }), 'BAD_VALUE', 'index');
  });
});

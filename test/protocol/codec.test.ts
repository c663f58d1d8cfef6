// Table-driven round trips: every request of both channels, as a request and as a reply,
// decoded from independently assembled bytes and re-encoded to the same bytes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  BackendRequest as B, FrontendRequest as F, IotlbPerm, IotlbType, decodeMessage, encodeMessage,
  knownRequests, replyFlags, type Channel,
} from '../../src/protocol/index.js';
import { frame } from './bytes.js';
import { P, type Payload } from './fixtures.js';

interface Case {
  channel: Channel;
  request: number;
  reply?: boolean;
  needsReply?: boolean;
  payload: Payload;
  fds?: number[];
  label?: string;
}

const fe = (request: number, payload: Payload, fds: number[] = [], label?: string): Case => ({ channel: 'frontend', request, payload, fds, label });
const feReply = (request: number, payload: Payload, fds: number[] = [], label?: string): Case => ({ channel: 'frontend', request, reply: true, payload, fds, label });
const be = (request: number, payload: Payload, fds: number[] = [], label?: string): Case => ({ channel: 'backend', request, payload, fds, label });
const beReply = (request: number, payload: Payload, fds: number[] = [], label?: string): Case => ({ channel: 'backend', request, reply: true, payload, fds, label });

const ACK = P.u64(0n);

const CASES: Case[] = [
  fe(F.GET_FEATURES, P.none()), feReply(F.GET_FEATURES, P.u64(0x1_7020_0000n)),
  fe(F.SET_FEATURES, P.u64(0x1_4000_0000n)), feReply(F.SET_FEATURES, ACK),
  fe(F.SET_OWNER, P.none()), feReply(F.SET_OWNER, ACK),
  fe(F.RESET_OWNER, P.none()), feReply(F.RESET_OWNER, ACK),
  fe(F.SET_MEM_TABLE, P.memTable(2), [10, 11]), fe(F.SET_MEM_TABLE, P.memTable(8), [1, 2, 3, 4, 5, 6, 7, 8], '8 regions'),
  fe(F.SET_MEM_TABLE, P.memTable(0), [], 'postcopy ack (u64 0)'),
  feReply(F.SET_MEM_TABLE, ACK), feReply(F.SET_MEM_TABLE, P.memTable(2), [], 'postcopy bases'),
  fe(F.SET_LOG_BASE, P.log(), [12]), feReply(F.SET_LOG_BASE, P.none()), feReply(F.SET_LOG_BASE, ACK, [], 'ack'),
  fe(F.SET_LOG_FD, P.none(), [13]), feReply(F.SET_LOG_FD, ACK),
  fe(F.SET_VRING_NUM, P.state(0, 256)), feReply(F.SET_VRING_NUM, ACK),
  fe(F.SET_VRING_ADDR, P.addr()), feReply(F.SET_VRING_ADDR, ACK),
  fe(F.SET_VRING_BASE, P.state(1, 0x8000_0000)), feReply(F.SET_VRING_BASE, ACK),
  fe(F.GET_VRING_BASE, P.state(1, 0)), feReply(F.GET_VRING_BASE, P.state(1, 42)),
  fe(F.SET_VRING_KICK, P.u64(1n), [14]), fe(F.SET_VRING_KICK, P.u64(0x101n), [], 'NOFD'), feReply(F.SET_VRING_KICK, ACK),
  fe(F.SET_VRING_CALL, P.u64(0n), [15]), fe(F.SET_VRING_CALL, P.u64(0x100n), [], 'NOFD'), feReply(F.SET_VRING_CALL, ACK),
  fe(F.SET_VRING_ERR, P.u64(3n), [16]), fe(F.SET_VRING_ERR, P.u64(0x103n), [], 'NOFD'), feReply(F.SET_VRING_ERR, ACK),
  fe(F.GET_PROTOCOL_FEATURES, P.none()), feReply(F.GET_PROTOCOL_FEATURES, P.u64(0x8e2bn)),
  fe(F.SET_PROTOCOL_FEATURES, P.u64(0x8e2bn)), feReply(F.SET_PROTOCOL_FEATURES, ACK),
  fe(F.GET_QUEUE_NUM, P.none()), feReply(F.GET_QUEUE_NUM, P.u64(4n)),
  fe(F.SET_VRING_ENABLE, P.state(0, 1)), feReply(F.SET_VRING_ENABLE, ACK),
  fe(F.SEND_RARP, P.u64(0x5634_1200_5452n)), feReply(F.SEND_RARP, ACK),
  fe(F.NET_SET_MTU, P.u64(1500n)), feReply(F.NET_SET_MTU, P.u64(1n)),
  fe(F.SET_BACKEND_REQ_FD, P.none(), [17]), feReply(F.SET_BACKEND_REQ_FD, ACK),
  fe(F.IOTLB_MSG, P.iotlb(IotlbType.UPDATE, IotlbPerm.RW)), fe(F.IOTLB_MSG, P.iotlb(IotlbType.INVALIDATE, IotlbPerm.NONE), [], 'invalidate'),
  feReply(F.IOTLB_MSG, ACK),
  fe(F.SET_VRING_ENDIAN, P.state(0, 1)), feReply(F.SET_VRING_ENDIAN, ACK),
  fe(F.GET_CONFIG, P.config(12)), feReply(F.GET_CONFIG, P.config(12)), feReply(F.GET_CONFIG, P.none(), [], 'error'),
  fe(F.SET_CONFIG, P.config(256, 1)), feReply(F.SET_CONFIG, ACK),
  fe(F.CREATE_CRYPTO_SESSION, P.raw(96)), feReply(F.CREATE_CRYPTO_SESSION, P.raw(96)),
  fe(F.CLOSE_CRYPTO_SESSION, P.u64(7n)), feReply(F.CLOSE_CRYPTO_SESSION, ACK),
  fe(F.POSTCOPY_ADVISE, P.none()), feReply(F.POSTCOPY_ADVISE, P.none(), [18]),
  fe(F.POSTCOPY_LISTEN, P.none()), feReply(F.POSTCOPY_LISTEN, ACK),
  fe(F.POSTCOPY_END, P.none()), feReply(F.POSTCOPY_END, ACK),
  fe(F.GET_INFLIGHT_FD, P.inflight(0n)), feReply(F.GET_INFLIGHT_FD, P.inflight(0x10000n), [19]),
  feReply(F.GET_INFLIGHT_FD, P.inflight(0n), [], 'no buffer'),
  fe(F.SET_INFLIGHT_FD, P.inflight(0x10000n), [20]), feReply(F.SET_INFLIGHT_FD, ACK),
  fe(F.GPU_SET_SOCKET, P.none(), [21]), feReply(F.GPU_SET_SOCKET, ACK),
  fe(F.RESET_DEVICE, P.none()), feReply(F.RESET_DEVICE, ACK),
  fe(F.VRING_KICK, P.state(2, 0)), feReply(F.VRING_KICK, ACK),
  fe(F.GET_MAX_MEM_SLOTS, P.none()), feReply(F.GET_MAX_MEM_SLOTS, P.u64(509n)),
  fe(F.ADD_MEM_REG, P.memRegion(3), [22]), fe(F.ADD_MEM_REG, P.u64(0n), [], 'postcopy ack'),
  feReply(F.ADD_MEM_REG, ACK), feReply(F.ADD_MEM_REG, P.memRegion(3), [], 'postcopy base'),
  fe(F.REM_MEM_REG, P.memRegion(3)), fe(F.REM_MEM_REG, P.memRegion(3), [23], 'stray fd'), feReply(F.REM_MEM_REG, ACK),
  fe(F.SET_STATUS, P.status(0x0f)), feReply(F.SET_STATUS, ACK),
  fe(F.GET_STATUS, P.none()), feReply(F.GET_STATUS, P.status(0x0f)),
  fe(F.GET_SHARED_OBJECT, P.uuid()), fe(F.GET_SHARED_OBJECT, P.none(), [], 'QEMU size 0'),
  feReply(F.GET_SHARED_OBJECT, P.u64(0n), [24]), feReply(F.GET_SHARED_OBJECT, P.none(), [], 'not found'),
  fe(F.SET_DEVICE_STATE_FD, P.deviceState(0, 0), [25]),
  feReply(F.SET_DEVICE_STATE_FD, P.u64(0x100n)), feReply(F.SET_DEVICE_STATE_FD, P.u64(0n), [26], 'back-end pipe'),
  feReply(F.SET_DEVICE_STATE_FD, P.u64(0x101n), [], 'error'),
  fe(F.CHECK_DEVICE_STATE, P.none()), feReply(F.CHECK_DEVICE_STATE, ACK),
  fe(F.GET_SHMEM_CONFIG, P.none()), feReply(F.GET_SHMEM_CONFIG, P.raw(2056)),

  be(B.IOTLB_MSG, P.iotlb(IotlbType.MISS, IotlbPerm.RO)), be(B.IOTLB_MSG, P.iotlb(IotlbType.ACCESS_FAIL, IotlbPerm.WO), [], 'access fail'),
  beReply(B.IOTLB_MSG, ACK),
  be(B.CONFIG_CHANGE_MSG, P.none()), beReply(B.CONFIG_CHANGE_MSG, ACK),
  be(B.VRING_HOST_NOTIFIER_MSG, P.area(1n), [27]), be(B.VRING_HOST_NOTIFIER_MSG, P.area(0x101n), [], 'NOFD'),
  beReply(B.VRING_HOST_NOTIFIER_MSG, ACK),
  be(B.VRING_CALL, P.state(1, 0)), beReply(B.VRING_CALL, ACK),
  be(B.VRING_ERR, P.state(1, 0)), beReply(B.VRING_ERR, ACK),
  be(B.SHARED_OBJECT_ADD, P.uuid()), beReply(B.SHARED_OBJECT_ADD, ACK),
  be(B.SHARED_OBJECT_REMOVE, P.uuid()), beReply(B.SHARED_OBJECT_REMOVE, P.u64(1n)),
  be(B.SHARED_OBJECT_LOOKUP, P.uuid()), beReply(B.SHARED_OBJECT_LOOKUP, P.u64(0n), [28]),
  beReply(B.SHARED_OBJECT_LOOKUP, P.u64(0xffff_ffff_ffff_ffean), [], 'failed'),
  be(B.SHMEM_MAP, P.raw(40), [29]), beReply(B.SHMEM_MAP, ACK),
  be(B.SHMEM_UNMAP, P.raw(40)), beReply(B.SHMEM_UNMAP, ACK),
];

function flagsOf(c: Case): number {
  return c.reply ? replyFlags() : 0x1 | (c.needsReply ? 0x8 : 0);
}

function title(c: Case): string {
  const name = c.channel === 'frontend' ? F[c.request] : B[c.request];
  return `${c.channel} ${name}${c.reply ? ' reply' : ''}${c.label ? ` (${c.label})` : ''}`;
}

describe('codec round trips', () => {
  for (const c of CASES) {
    it(title(c), () => {
      const [payload, body] = c.payload;
      const bytes = frame(c.request, flagsOf(c), payload);
      const fds = c.fds ?? [];
      const msg = decodeMessage(c.channel, bytes, fds);
      assert.deepEqual(msg, {
        channel: c.channel,
        request: c.request,
        name: c.channel === 'frontend' ? F[c.request] : B[c.request],
        flags: flagsOf(c),
        isReply: !!c.reply,
        needsReply: false,
        body,
        fds,
      });
      // encode(decode(bytes)) is byte-identical, and decode(encode(m)) gives m back.
      assert.deepEqual(encodeMessage(msg), bytes);
      assert.deepEqual(decodeMessage(c.channel, encodeMessage({ channel: c.channel, request: c.request, isReply: !!c.reply, body }), fds), msg);
    });
  }

  it('covers every request of both channels, as request and as reply', () => {
    for (const channel of ['frontend', 'backend'] as const) {
      for (const reply of [false, true]) {
        const seen = new Set(CASES.filter((c) => c.channel === channel && !!c.reply === reply).map((c) => c.request));
        assert.deepEqual([...seen].sort((x, y) => x - y), knownRequests(channel), `${channel} ${reply ? 'replies' : 'requests'}`);
      }
    }
  });

  it('numbers match the spec', () => {
    assert.equal(F.GET_FEATURES, 1);
    assert.equal(F.SET_BACKEND_REQ_FD, 21);
    assert.equal(F.IOTLB_MSG, 22);
    assert.equal(F.VRING_KICK, 35);
    assert.equal(F.SET_STATUS, 39);
    assert.equal(F.GET_SHARED_OBJECT, 41);
    assert.equal(F.CHECK_DEVICE_STATE, 43);
    assert.equal(knownRequests('frontend').length, 44);
    assert.equal(B.IOTLB_MSG, 1);
    assert.equal(B.SHARED_OBJECT_LOOKUP, 8);
    assert.equal(knownRequests('backend').length, 10);
  });

  it('keeps NEED_REPLY and reports it', () => {
    const bytes = frame(F.SET_VRING_ENABLE, 0x9, P.state(0, 1)[0]);
    const msg = decodeMessage('frontend', bytes);
    assert.equal(msg.needsReply, true);
    assert.equal(msg.isReply, false);
    assert.deepEqual(encodeMessage(msg), bytes);
    assert.equal(encodeMessage({ channel: 'frontend', request: F.IOTLB_MSG, needsReply: true, body: P.iotlb(2, 3)[1] })[4], 0x9);
  });

  it('accepts the full 8-entry memory table struct with fewer regions (DPDK layout)', () => {
    const [small, body] = P.memTable(2);
    const padded = new Uint8Array(8 + 8 * 32);
    padded.set(small);
    const msg = decodeMessage('frontend', frame(F.SET_MEM_TABLE, 1, padded), [5, 6]);
    assert.deepEqual(msg.body, body);
  });

  it('numbers the same on both channels mean different requests', () => {
    const bytes = frame(1, 1, new Uint8Array(0));
    assert.equal(decodeMessage('frontend', bytes).name, 'GET_FEATURES');
    assert.equal(decodeMessage('backend', frame(2, 1, new Uint8Array(0))).name, 'CONFIG_CHANGE_MSG');
  });

  it('decoded bodies do not alias the input buffer', () => {
    const [payload] = P.config(4);
    const bytes = frame(F.SET_CONFIG, 1, payload);
    const msg = decodeMessage('frontend', bytes);
    bytes.fill(0);
    assert.deepEqual(msg.body.kind === 'config' && [...msg.body.payload], [3, 10, 17, 24]);
  });
});

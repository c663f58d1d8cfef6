/**
 * The worker's in-place IOTLB decoder (src/protocol/plain-iotlb.ts) against the full path
 * on the main thread (decodeMessage + the IOTLB_MSG handler): whatever the fast decoder
 * accepts, the full path accepts with the same operation (an INVALIDATE reaching past 2^53
 * clamped alike); it accepts every ordinary request, a lazy guest's whole-space flush included;
 * what it refuses is left to the full path. Messages are built byte by byte (test/protocol/
 * bytes.ts), not with the codec under test, and at random around the edges.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMessage, decodePlainIotlb, FrontendRequest, IOTLB_FRAME_SIZE, IotlbType, plainIotlbRequest } from '../../src/protocol/index.js';
import { handlerFor } from '../../src/device/handlers.js';
import type { NetDevice } from '../../src/device/device.js';
import { Prng } from '../../src/iotlb/prng.js';
import { b, frame } from './bytes.js';

type Op = { op: 'update'; iova: number; size: number; uaddr: number; perm: number } | { op: 'invalidate'; iova: number; size: number };

/** What the main thread's full path makes of `bytes`: the operation, or null if it refuses it. */
async function fullPath(bytes: Uint8Array): Promise<Op | null> {
  let op: Op | null = null;
  const device = {
    iommu: true,
    iotlbUpdate: (iova: number, size: number, uaddr: number, perm: number) => void (op = { op: 'update', iova, size, uaddr, perm }),
    iotlbInvalidate: (iova: number, size: number) => void (op = { op: 'invalidate', iova, size }),
  } as unknown as NetDevice;
  try {
    const msg = decodeMessage('frontend', bytes, []);
    if (msg.isReply || msg.request !== FrontendRequest.IOTLB_MSG) return null;
    await handlerFor(msg.request)!(device, msg, { takeFd: () => -1 });
  } catch {
    return null;
  }
  return op;
}

function fastPath(bytes: Uint8Array): Op | null {
  const out = plainIotlbRequest();
  if (bytes.length !== IOTLB_FRAME_SIZE || !decodePlainIotlb(bytes, out)) return null;
  return out.iotlbType === IotlbType.UPDATE
    ? { op: 'update', iova: out.iova, size: out.size, uaddr: out.uaddr, perm: out.perm }
    : { op: 'invalidate', iova: out.iova, size: out.size };
}

function iotlbFrame(fields: { flags?: number; size?: number; iova: bigint; len: bigint; uaddr: bigint; perm: number; type: number; request?: number }): Uint8Array {
  const payload = b().u64(fields.iova).u64(fields.len).u64(fields.uaddr).u8(fields.perm).u8(fields.type).pad(6).build();
  return frame(fields.request ?? FrontendRequest.IOTLB_MSG, fields.flags ?? 0x9, payload, fields.size);
}

describe('plain IOTLB decoding (the worker) against the full path (the session)', () => {
  it('accepts ordinary UPDATEs and INVALIDATEs exactly as the handler applies them', async () => {
    const ordinary = [
      iotlbFrame({ iova: 0xfffff000n, len: 0x1000n, uaddr: 0x7f12_3456_7000n, perm: 1, type: IotlbType.UPDATE }),
      iotlbFrame({ iova: 0n, len: 0x4000_0000n, uaddr: 0x7f00_0000_0000n, perm: 3, type: IotlbType.UPDATE, flags: 0x1 }),
      iotlbFrame({ iova: 0xffff_e000n, len: 0x1000n, uaddr: 0n, perm: 0, type: IotlbType.INVALIDATE }),
      iotlbFrame({ iova: 0x1000n, len: 0n, uaddr: 0n, perm: 2, type: IotlbType.INVALIDATE }),
      // A lazy Linux guest's flush, as QEMU 8.0 and later send it: the whole space but the
      // interrupt window, the second half ending at 2^64 (clamped below 2^53 by both paths).
      iotlbFrame({ iova: 0n, len: 0xfee0_0000n, uaddr: 0n, perm: 0, type: IotlbType.INVALIDATE }),
      iotlbFrame({ iova: 0xfef0_0000n, len: 2n ** 64n - 0xfef0_0000n, uaddr: 0n, perm: 0, type: IotlbType.INVALIDATE }),
      iotlbFrame({ iova: 2n ** 64n - 0x1000n, len: 0x1000n, uaddr: 0n, perm: 0, type: IotlbType.INVALIDATE }),
    ];
    for (const bytes of ordinary) {
      const fast = fastPath(bytes);
      assert.notEqual(fast, null, 'an ordinary request is taken by the worker');
      assert.deepEqual(fast, await fullPath(bytes));
    }
  });

  it('never accepts what the full path refuses, and applies the same operation, over random messages near the edges', async () => {
    const rng = new Prng(20261203);
    const chance = (p: number): boolean => rng.nextU32() / 2 ** 32 < p;
    const oneOf = <T>(items: readonly T[]): T => items[rng.below(items.length)];
    const edges = [0n, 1n, 0xfffn, 0x1000n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 52n, 2n ** 53n - 0x1000n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n];
    const value = (): bigint => (chance(0.5) ? oneOf(edges) : BigInt(rng.below(2 ** 30)) * 0x1000n);
    let taken = 0;
    for (let i = 0; i < 5000; i++) {
      // Each field is ordinary most of the time, so that about a third of the messages are plain
      // and the rest differ from a plain one in one or two fields.
      const bytes = iotlbFrame({
        iova: value(), len: value(), uaddr: value(),
        perm: chance(0.8) ? 1 + rng.below(3) : oneOf([0, 4, 255]),
        type: chance(0.8) ? oneOf([IotlbType.UPDATE, IotlbType.INVALIDATE]) : oneOf([0, IotlbType.MISS, IotlbType.ACCESS_FAIL, 5, 255]),
        flags: chance(0.8) ? oneOf([0x1, 0x9]) : oneOf([0x5, 0xd, 0x0, 0x19, 0x2, 0x8000_0009]),
        size: chance(0.9) ? undefined : oneOf([0, 31, 33, 40]),
        request: chance(0.95) ? undefined : FrontendRequest.SET_VRING_NUM,
      });
      const fast = fastPath(bytes);
      if (fast === null) continue;
      taken++;
      assert.deepEqual(fast, await fullPath(bytes), `message ${Buffer.from(bytes).toString('hex')}`);
    }
    assert.ok(taken > 500, `only ${taken} random messages were plain: the generator misses the common case`);
  });
});

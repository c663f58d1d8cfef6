/**
 * The handler table (src/device/handlers.ts) called directly, on a device with no queue pairs:
 * each request is checked against the device state, refused with an error that names what was
 * wrong, and changes nothing when refused. (The session turns these errors into REPLY_ACK
 * failures: test/device/session.test.ts; a spawned serve under hostile input:
 * test/hardening/hostile.test.ts.)
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetDevice } from '../../src/device/device.js';
import { DeviceError } from '../../src/device/errors.js';
import { handlerFor, type HandlerContext } from '../../src/device/handlers.js';
import {
  decodeMessage, encodeMessage, featureMask, FrontendRequest, IotlbType, NetFeature, ProtocolFeature, VirtioFeature, VRING_NOFD_FLAG, type Body,
} from '../../src/protocol/index.js';

function device(): NetDevice {
  return new NetDevice({
    queuePairs: 1, net: { kind: 'sink' }, strategy: 'coalescing', batchMisses: false, prefetch: 0,
    traceTranslations: false, log: () => undefined,
  });
}

/** No request here carries an fd (the codec refuses a message whose fds are missing). */
const noFds: HandlerContext = {
  takeFd: (i) => assert.fail(`a handler took fd ${i}`),
};

/** Runs the handler of `request` on `body` as the session would (encoded, then decoded). */
async function handle(dev: NetDevice, request: number, body: Body): Promise<Body | void> {
  const msg = decodeMessage('frontend', encodeMessage({ channel: 'frontend', request, body }), []);
  return handlerFor(request)!(dev, msg, noFds);
}

async function refused(dev: NetDevice, request: number, body: Body, why: RegExp): Promise<void> {
  await assert.rejects(async () => handle(dev, request, body), (err: Error) => {
    assert.ok(err instanceof DeviceError, `not a DeviceError: ${err.stack}`);
    assert.match(err.message, why);
    return true;
  });
}

const u64 = (value: bigint): Body => ({ kind: 'u64', value });
const vringState = (index: number, num: number): Body => ({ kind: 'vringState', index, num });

describe('device handlers', () => {
  it('SET_FEATURES takes offered bits only, naming the others', async () => {
    const dev = device();
    const offered = (await handle(dev, FrontendRequest.GET_FEATURES, { kind: 'none' })) as { value: bigint };
    assert.ok((offered.value & featureMask(VirtioFeature.ACCESS_PLATFORM)) !== 0n, 'ACCESS_PLATFORM is offered');
    await refused(dev, FrontendRequest.SET_FEATURES, u64(offered.value | (1n << 63n)), /bits 0x8000000000000000 were not offered/);
    assert.equal(dev.featuresSet, false);
    await handle(dev, FrontendRequest.SET_FEATURES, u64(featureMask(VirtioFeature.VERSION_1, VirtioFeature.ACCESS_PLATFORM)));
    assert.equal(dev.iommu, true);
  });

  it('SET_MEM_TABLE needs SET_OWNER first', async () => {
    await refused(device(), FrontendRequest.SET_MEM_TABLE, { kind: 'memTable', regions: [] }, /SET_MEM_TABLE before SET_OWNER/);
  });

  it('SET_VRING_NUM: split rings need a power of two in 1..32768, packed rings any size in it', async () => {
    const dev = device();
    await refused(dev, FrontendRequest.SET_VRING_NUM, vringState(0, 0), /size 0 is not a power of two/);
    await refused(dev, FrontendRequest.SET_VRING_NUM, vringState(0, 300), /size 300 is not a power of two/);
    await refused(dev, FrontendRequest.SET_VRING_NUM, vringState(0, 65536), /size 65536/);
    await handle(dev, FrontendRequest.SET_VRING_NUM, vringState(0, 256));
    assert.equal(dev.vrings[0].size, 256);
    await handle(dev, FrontendRequest.SET_FEATURES, u64(featureMask(VirtioFeature.VERSION_1, VirtioFeature.RING_PACKED)));
    await handle(dev, FrontendRequest.SET_VRING_NUM, vringState(1, 300));
    assert.equal(dev.vrings[1].size, 300);
  });

  it('a vring index beyond the device is refused with the device\'s range', async () => {
    await refused(device(), FrontendRequest.SET_VRING_NUM, vringState(2, 256), /vring index 2 out of range \(device has 2 vrings\)/);
  });

  it('SET_VRING_KICK refuses reserved bits in its index word', async () => {
    const dev = device();
    await refused(dev, FrontendRequest.SET_VRING_KICK, u64(BigInt(VRING_NOFD_FLAG) | 0x200n), /reserved bits set in 0x300/);
    await handle(dev, FrontendRequest.SET_VRING_KICK, u64(BigInt(VRING_NOFD_FLAG)));
    assert.equal(dev.vrings[0].kickFd, -1);
  });

  it('IOTLB_MSG: refused without ACCESS_PLATFORM; a bad UPDATE refused; a whole-space INVALIDATE clamped and applied', async () => {
    const dev = device();
    const iotlb = (iotlbType: number, iova: bigint, size: bigint, perm = 3): Body => ({ kind: 'iotlb', iotlbType, iova, size, userAddr: 0x7f0000000000n, perm });
    await refused(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n), /ACCESS_PLATFORM is not negotiated/);
    await handle(dev, FrontendRequest.SET_FEATURES, u64(featureMask(VirtioFeature.VERSION_1, VirtioFeature.ACCESS_PLATFORM)));
    await refused(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, 0x1000n, 0n), /size is 0/);
    await refused(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n, 0), /perm 0 is not RO, WO or RW/);
    await refused(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, (1n << 53n) - 0x1000n, 0x2000n), /wraps/);
    await refused(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.MISS, 0x1000n, 0x1000n), /type 1 is not UPDATE or INVALIDATE/);
    assert.equal(dev.iotlbShadow.entries().length, 0, 'nothing refused was applied');
    await handle(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, 0x1000n, 0x1000n));
    await handle(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, (1n << 52n), 0x1000n));
    await handle(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.INVALIDATE, 0n, (1n << 64n) - 1n));
    assert.deepEqual(dev.iotlbShadow.entries(), []);
  });

  it('IOTLB_MSG: the INVALIDATE pair QEMU >= 8.0 sends on a lazy guest\'s domain flush drops every entry, the one ending at 2^64 too', async () => {
    // intel-iommu with only UNMAP notifiers (vhost) unmaps the whole space but the interrupt
    // window: [0, 0xfee00000) and [0xfef00000, 2^64). The second one's end wraps a u64 to 0,
    // which DPDK's vhost takes for an empty range (docs/peers.md); Linux's first IOVAs lie there.
    const dev = device();
    const iotlb = (iotlbType: number, iova: bigint, size: bigint): Body => ({ kind: 'iotlb', iotlbType, iova, size, userAddr: 0x7f0000000000n, perm: 3 });
    await handle(dev, FrontendRequest.SET_FEATURES, u64(featureMask(VirtioFeature.VERSION_1, VirtioFeature.ACCESS_PLATFORM)));
    for (const iova of [0x1000n, 0xfedff000n, 0xfef00000n, 0xfffff000n, 1n << 40n]) await handle(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.UPDATE, iova, 0x1000n));
    await handle(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.INVALIDATE, 0xfef00000n, (1n << 64n) - 0xfef00000n));
    assert.deepEqual(dev.iotlbShadow.entries().map((e) => e.iova), [0x1000, 0xfedff000], 'everything from 0xfef00000 up is gone');
    await handle(dev, FrontendRequest.IOTLB_MSG, iotlb(IotlbType.INVALIDATE, 0n, 0xfee00000n));
    assert.deepEqual(dev.iotlbShadow.entries(), []);
  });

  it('SET_FEATURES with every ring stopped (a device start: guest reboot) forgets the IOTLB; while a ring runs it keeps it', async () => {
    const lines: string[] = [];
    const dev = new NetDevice({
      queuePairs: 1, net: { kind: 'sink' }, strategy: 'coalescing', batchMisses: false, prefetch: 0,
      traceTranslations: false, log: (_level, text) => lines.push(text),
    });
    const features = u64(featureMask(VirtioFeature.VERSION_1, VirtioFeature.ACCESS_PLATFORM));
    const update: Body = { kind: 'iotlb', iotlbType: IotlbType.UPDATE, iova: 0x1000n, size: 0x1000n, userAddr: 0x7f0000000000n, perm: 3 };
    await handle(dev, FrontendRequest.SET_FEATURES, features);
    await handle(dev, FrontendRequest.IOTLB_MSG, update);
    dev.vrings[1]!.running = true;
    await handle(dev, FrontendRequest.SET_FEATURES, features);
    assert.equal(dev.iotlbShadow.entries().length, 1, 'kept while a ring runs (QEMU toggling features live)');
    dev.vrings[1]!.running = false;
    await handle(dev, FrontendRequest.SET_FEATURES, features);
    assert.deepEqual(dev.iotlbShadow.entries(), [], 'nothing from the previous start survives');
    assert.equal(lines.filter((l) => l.startsWith('IOMMU negotiated')).length, 1, `said once: ${lines.join(' | ')}`);
    assert.match(lines[0]!, /--iotlb-reuse per-burst/);
  });

  it('NET_SET_MTU and SEND_RARP: offered with a tap only, refused without their protocol feature, MTU range checked before the tap is touched', async () => {
    const sink = device();
    assert.equal(sink.offeredProtocolFeatures & featureMask(ProtocolFeature.NET_MTU, ProtocolFeature.RARP), 0n, 'a sink has no link');
    assert.equal(sink.offeredFeatures & featureMask(NetFeature.MTU, NetFeature.GUEST_ANNOUNCE), 0n);
    await refused(sink, FrontendRequest.NET_SET_MTU, u64(1500n), /without the NET_MTU protocol feature/);
    await refused(sink, FrontendRequest.SEND_RARP, u64(0x563412005452n), /without the RARP protocol feature/);
    // A tap device (its fd and name are never used: every request below is refused first).
    const tap = new NetDevice({
      queuePairs: 1, net: { kind: 'tap', name: 'vit-none', fds: [] }, strategy: 'coalescing', batchMisses: false, prefetch: 0,
      traceTranslations: false, log: () => undefined,
    });
    const wanted = featureMask(ProtocolFeature.NET_MTU, ProtocolFeature.RARP);
    assert.equal(tap.offeredProtocolFeatures & wanted, wanted);
    assert.equal(tap.offeredFeatures & featureMask(NetFeature.MTU, NetFeature.GUEST_ANNOUNCE), featureMask(NetFeature.MTU, NetFeature.GUEST_ANNOUNCE));
    await handle(tap, FrontendRequest.SET_PROTOCOL_FEATURES, u64(wanted));
    await refused(tap, FrontendRequest.NET_SET_MTU, u64(67n), /67 is not in 68..65535/);
    await refused(tap, FrontendRequest.NET_SET_MTU, u64(65536n), /65536 is not in 68..65535/);
    assert.equal(tap.mtu, null);
  });

  it('requests whose protocol feature was not offered are refused by name', async () => {
    await refused(device(), FrontendRequest.SET_VRING_ENDIAN, vringState(0, 1), /SET_VRING_ENDIAN is not supported/);
  });
});

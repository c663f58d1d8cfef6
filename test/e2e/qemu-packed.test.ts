// serve against a real QEMU guest with packed virtqueues (virtio-net-pci packed=on): the Linux
// 6.1 virtio_ring driver's packed path, through `serve --net tap:vit0` in a network namespace
// (the rig in test/support/qemu-rig.ts, as qemu.test.ts uses it).
//
//   1. no IOMMU: ping 5/5, 16 MiB over TCP with equal sha256 on both ends
//   2. intel-iommu (device-iotlb, ats, guest iommu.strict=1), --iotlb-strategy coalescing:
//      ping 5/5, 8 MiB over TCP each way intact, misses sent and hits on both rings
//   3. the same in Linux's default lazy IOMMU mode with --iotlb-reuse per-burst: 8 MiB each way
//
// Each case asserts through serve's control socket (`state`, what `inspect --json` shows) that
// RING_PACKED was negotiated, so a guest silently falling back to split rings cannot pass.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeAllRigsChecked, pingOk, receiveOk, sampleState, startRig, transferOk, waitDisconnected, type Rig } from '../support/qemu-rig.js';
import { total } from '../support/serve.js';
import type { DeviceState } from '../../src/control/state.js';
import type { GuestOptions } from '../peers/qemu.js';

after(closeAllRigsChecked);

/** Runs `what` while sampling serve's state; returns the last snapshot taken while the guest was connected with running rings. */
async function whileSampling(rig: Rig, what: () => Promise<unknown>): Promise<DeviceState> {
  const sampler = sampleState(rig.serve, 250, (s) => s.connected && s.queues.some((q) => q.running));
  let live: DeviceState | null;
  try {
    await what();
  } finally {
    live = await sampler.stop();
  }
  assert.ok(live, 'no state sample was taken while the guest was connected');
  return live;
}

function assertPacked(live: DeviceState, iommu: boolean): void {
  assert.ok(live.features.names.includes('RING_PACKED'), `RING_PACKED not negotiated: ${live.features.names.join(' ')}`);
  assert.equal(live.iommu, iommu, 'IOMMU negotiated');
  assert.equal(live.features.names.includes('ACCESS_PLATFORM'), iommu, `features: ${live.features.names.join(' ')}`);
  for (const q of live.queues) assert.equal(q.broken, null, `${q.kind} ring ${q.index} broke: ${q.broken}`);
}

describe('serve --net tap with a QEMU guest, packed virtqueues', () => {
  it('no IOMMU: ping 5/5, 16 MiB over TCP intact, RING_PACKED negotiated', { timeout: 60_000 }, async () => {
    const mib = 16;
    const rig = await startRig([], { tcp: true });
    try {
      const opts: Partial<GuestOptions> = { packed: true };
      const t0 = Date.now();
      const livePing = await whileSampling(rig, () => pingOk(rig, opts));
      assertPacked(livePing, false);
      await waitDisconnected(rig.serve);
      const tPing = Date.now();
      const live = await whileSampling(rig, () => transferOk(rig, mib, opts));
      const tTcp = Date.now();
      assertPacked(live, false);
      const state = await waitDisconnected(rig.serve);
      assert.ok(total(state, 'tx', 'bytes') >= mib * 1024 * 1024, `serve carried ${total(state, 'tx', 'bytes')} bytes from the guest`);
      assert.ok(total(state, 'rx') > 0, 'serve delivered frames to the guest');
      assert.equal(state.queues.reduce((n, q) => n + (q.counters?.errors ?? 0), 0), 0, 'malformed frames');
      console.log(`# packed plain: ping ${tPing - t0} ms, ${mib} MiB tcp ${tTcp - tPing} ms`);
    } finally {
      await rig.close();
    }
  });

  it('intel-iommu, --iotlb-strategy coalescing: ping 5/5, 8 MiB over TCP each way intact, misses sent, hits on both rings, RING_PACKED negotiated', { timeout: 120_000 }, async () => {
    const mib = 8;
    const rig = await startRig(['--iotlb-strategy', 'coalescing'], { tcp: true, source: mib });
    try {
      const opts: Partial<GuestOptions> = { packed: true, iommu: true };
      const t0 = Date.now();
      const livePing = await whileSampling(rig, () => pingOk(rig, opts));
      assertPacked(livePing, true);
      await waitDisconnected(rig.serve);
      const tPing = Date.now();
      const live = await whileSampling(rig, () => transferOk(rig, mib, opts));
      const tTcp = Date.now();
      assertPacked(live, true);
      assert.equal(live.strategy, 'coalescing');
      for (const kind of ['rx', 'tx'] as const) {
        const q = live.queues.find((x) => x.kind === kind)!;
        assert.ok(q.iotlb, `${kind}: no IOTLB state`);
        assert.ok((q.counters?.missesSent ?? 0) > 0, `${kind}: no IOTLB miss was sent: ${JSON.stringify(q.counters)}`);
        assert.ok(q.iotlb.stats.hits > 0, `${kind}: no IOTLB hit: ${JSON.stringify(q.iotlb.stats)}`);
        assert.equal(q.iotlb.stats.permissionFaults, 0, `${kind}: permission faults`);
      }
      const state = await waitDisconnected(rig.serve);
      assert.ok(total(state, 'tx', 'bytes') >= mib * 1024 * 1024);
      const liveRecv = await whileSampling(rig, () => receiveOk(rig, opts));
      assertPacked(liveRecv, true);
      console.log(`# packed iommu coalescing: ping ${tPing - t0} ms, ${mib} MiB tcp ${tTcp - tPing} ms, ${mib} MiB host → guest ${Date.now() - tTcp} ms; ` +
        live.queues.map((q) => `${q.kind} missesSent ${q.counters?.missesSent} hits ${q.iotlb?.stats.hits}/${q.iotlb?.stats.lookups}`).join(', '));
    } finally {
      await rig.close();
    }
  });

  it('lazy intel-iommu guest, --iotlb-reuse per-burst: 8 MiB over TCP each way intact, RING_PACKED negotiated', { timeout: 120_000 }, async () => {
    const rig = await startRig(['--iotlb-strategy', 'coalescing', '--iotlb-reuse', 'per-burst'], { tcp: true, source: 8 });
    try {
      const opts = { packed: true, iommu: true, lazy: true };
      const live = await whileSampling(rig, () => transferOk(rig, 8, opts));
      assertPacked(live, true);
      await waitDisconnected(rig.serve);
      assertPacked(await whileSampling(rig, () => receiveOk(rig, opts)), true);
    } finally {
      await rig.close();
    }
  });
});

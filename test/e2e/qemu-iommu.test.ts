// serve with QEMU guests behind intel-iommu (device-iotlb, ats), one guest per IOTLB strategy:
// ping 5/5 and 8 MiB over TCP each way intact (64 MiB with VIT_LONG=1), IOMMU and the offloads
// negotiated, misses sent and cache hits on both rings, sampled while the guest is connected.
//
// These guests boot with iommu.strict=1: every unmap is invalidated synchronously. Linux's
// default lazy mode is qemu-lazy.test.ts.
//
// The rig (namespace with serve on a tap, a TCP server at 192.0.2.1, the guest at 192.0.2.2,
// ping/transfer checks) is test/support/qemu-rig.ts, shared with qemu.test.ts. A missing
// qemu-system-x86_64 / ip / busybox / kernel fails loudly (MissingPeerError).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { strategyNames } from '../../src/iotlb/registry.js';
import { closeAllRigsChecked, pingOk, receiveOk, sampleState, startRig, transferOk, waitDisconnected } from '../support/qemu-rig.js';
import { total } from '../support/serve.js';
import type { DeviceState } from '../../src/control/state.js';

const LONG = process.env.VIT_LONG === '1';

after(closeAllRigsChecked);

describe('serve --net tap with a QEMU guest behind intel-iommu (device IOTLB)', () => {
  const mib = LONG ? 64 : 8;
  for (const strategy of strategyNames()) {
    it(`--iotlb-strategy ${strategy}: ping 5/5, ${mib} MiB over TCP each way intact, misses sent, hits on both rings`, { timeout: 180_000 }, async () => {
      const rig = await startRig(['--iotlb-strategy', strategy], { tcp: true, source: mib });
      try {
        const t0 = Date.now();
        await pingOk(rig, { iommu: true });
        const tPing = Date.now();
        const sampler = sampleState(rig.serve);
        let live: DeviceState | null;
        try {
          await transferOk(rig, mib, { iommu: true });
        } finally {
          live = await sampler.stop();
        }
        const tTcp = Date.now();
        assert.ok(live, 'no state sample was taken while the guest was connected');
        assert.equal(live.iommu, true, 'IOMMU negotiated');
        for (const f of ['ACCESS_PLATFORM', 'CSUM', 'HOST_TSO4', 'HOST_TSO6', 'GUEST_CSUM', 'GUEST_TSO4', 'GUEST_TSO6']) assert.ok(live.features.names.includes(f), `${f} not negotiated: ${live.features.names.join(' ')}`);
        assert.equal(live.strategy, strategy);
        for (const kind of ['rx', 'tx'] as const) {
          const q: DeviceState['queues'][number] = live.queues.find((x) => x.kind === kind)!;
          assert.ok(q.iotlb, `${kind}: no IOTLB state`);
          assert.equal(q.iotlb.strategy, strategy);
          assert.ok((q.counters?.missesSent ?? 0) > 0, `${kind}: no IOTLB miss was sent: ${JSON.stringify(q.counters)}`);
          assert.ok(q.iotlb.stats.hits > 0, `${kind}: no IOTLB hit: ${JSON.stringify(q.iotlb.stats)}`);
          assert.equal(q.iotlb.stats.permissionFaults, 0, `${kind}: permission faults`);
          assert.equal(q.broken, null, `${kind} broke: ${q.broken}`);
        }
        const state = await waitDisconnected(rig.serve);
        assert.ok(total(state, 'tx', 'bytes') >= mib * 1024 * 1024);
        await receiveOk(rig, { iommu: true });
        console.log(`# iommu ${strategy}: ping ${tPing - t0} ms, ${mib} MiB tcp ${tTcp - tPing} ms, ${mib} MiB host → guest ${Date.now() - tTcp} ms; ` +
          live.queues.map((q) => `${q.kind} missesSent ${q.counters?.missesSent} hits ${q.iotlb?.stats.hits}/${q.iotlb?.stats.lookups}`).join(', '));
      } finally {
        await rig.close();
      }
    });
  }
});

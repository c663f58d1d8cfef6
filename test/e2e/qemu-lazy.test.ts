// serve with QEMU guests in Linux's default lazy IOMMU mode (DMA-FQ), one guest per IOTLB
// strategy, serve run with `--iotlb-reuse per-burst`: 8 MiB over TCP each way intact.
//
// In lazy mode the guest flushes its whole domain now and then, and QEMU turns that into
// INVALIDATEs only for pages its own page walk saw mapped at an earlier flush (docs/peers.md):
// a translation the back-end got between two flushes is never invalidated, and a cached one is
// read after the guest has mapped that IOVA elsewhere. per-burst forgets translations once
// their buffers are back, which is what makes these guests work.
//
// The rig (namespace with serve on a tap, a TCP server at 192.0.2.1, the guest at 192.0.2.2,
// ping/transfer checks) is test/support/qemu-rig.ts, shared with qemu.test.ts. A missing
// qemu-system-x86_64 / ip / busybox / kernel fails loudly (MissingPeerError).
import { after, describe, it } from 'node:test';
import { strategyNames } from '../../src/iotlb/registry.js';
import { closeAllRigsChecked, receiveOk, startRig, transferOk } from '../support/qemu-rig.js';

after(closeAllRigsChecked);

describe('guests in Linux\'s default lazy IOMMU mode, serve --iotlb-reuse per-burst', () => {
  for (const strategy of strategyNames()) {
    it(`--iotlb-strategy ${strategy}: 8 MiB over TCP each way intact`, { timeout: 180_000 }, async () => {
      const rig = await startRig(['--iotlb-strategy', strategy, '--iotlb-reuse', 'per-burst'], { tcp: true, source: 8 });
      try {
        const t0 = Date.now();
        await transferOk(rig, 8, { iommu: true, lazy: true });
        const tSend = Date.now();
        await receiveOk(rig, { iommu: true, lazy: true });
        console.log(`# lazy ${strategy}: 8 MiB guest → host ${tSend - t0} ms, host → guest ${Date.now() - tSend} ms`);
      } finally {
        await rig.close();
      }
    });
  }
});

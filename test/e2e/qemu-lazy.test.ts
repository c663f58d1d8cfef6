// serve with QEMU guests in Linux's default lazy IOMMU mode (DMA-FQ), one guest per IOTLB
// strategy, serve run with `--iotlb-reuse per-burst`: 8 MiB over TCP each way intact.
//
// In lazy mode the guest flushes its whole domain now and then, and QEMU turns that into
// INVALIDATEs only for pages its own page walk saw mapped at an earlier flush (docs/peers.md):
// a translation the back-end got between two flushes is never invalidated, and a cached one is
// read after the guest has mapped that IOVA elsewhere. per-burst forgets translations once
// their buffers are back, which is what makes these guests work.
//
// QEMU 8.0 and later forward every flush, as two INVALIDATEs over the whole IOVA space, the
// second ending at 2^64: behind those serve's default (`cached`) is correct too, and the last
// test runs it that way, the flushes taken by serve's IOTLB fast path like any INVALIDATE.
//
// The rig (namespace with serve on a tap, a TCP server at 192.0.2.1, the guest at 192.0.2.2,
// ping/transfer checks) is test/support/qemu-rig.ts, shared with qemu.test.ts. A missing
// qemu-system-x86_64 / ip / busybox / kernel fails loudly (MissingPeerError).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { strategyNames } from '../../src/iotlb/registry.js';
import { qemuVersion } from '../peers/qemu.js';
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

describe('guests in Linux\'s default lazy IOMMU mode, serve with its defaults, behind QEMU 8.0 or later', () => {
  it('every flush applied: 8 MiB over TCP each way intact', { timeout: 180_000 }, async () => {
    const version = qemuVersion();
    // Loud, not skipped: QEMU before 8.0 forwards only some pages of a flush, and this guest would fail for that.
    assert.ok(version[0] >= 8, `\n\n*** QEMU ${version.join('.')} does not forward a lazy guest's flushes (8.0 does); .ci/run installs a newer one ***\n`);
    const rig = await startRig(['--iotlb-strategy', 'coalescing'], { tcp: true, source: 8 });
    try {
      await transferOk(rig, 8, { iommu: true, lazy: true });
      await receiveOk(rig, { iommu: true, lazy: true });
    } finally {
      await rig.close();
    }
  });
});

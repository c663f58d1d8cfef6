// Every IOTLB strategy x every mapping style, through the real `serve --net loopback`:
// frames with known payloads go out on TX and must come back on RX with MACs swapped and
// the payload intact, and no byte outside the buffers given to the device may change.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_1G, PAGE_2M, PAGE_4K } from '../support/frontend/iommu.js';
import type { FrontendOptions } from '../support/frontend/frontend.js';
import { total } from '../support/serve.js';
import { assertClean, loopFrames, startPair, stopPair, STRATEGIES, type Pair } from './helpers.js';

const FRAMES = Number(process.env.VIT_E2E_FRAMES ?? 1500);

const MAPPINGS: Array<{ name: string; opts: Omit<FrontendOptions, 'socket'> }> = [
  // serve asks read for desc/avail and read-write for used: the 4K case maps them apart.
  { name: 'static 4K', opts: { iommu: 'static', pageSize: PAGE_4K, ringPerms: 'split' } },
  { name: 'static 2M', opts: { iommu: 'static', pageSize: PAGE_2M } },
  { name: 'static 1G', opts: { iommu: 'static', pageSize: PAGE_1G } },
  { name: 'dynamic', opts: { iommu: 'dynamic' } },
];

const only = process.env.VIT_E2E_ONLY; // e.g. "coalescing/static 4K"

for (const strategy of STRATEGIES) {
  describe(`IOTLB strategy ${strategy}`, () => {
    let pair: Pair | undefined;
    after(async () => {
      await stopPair(pair);
      pair = undefined;
    });
    for (const mapping of MAPPINGS) {
      const name = `${strategy}/${mapping.name}`;
      it(`${mapping.name}: ${FRAMES} frames loop back intact, no canary touched`, { skip: only !== undefined && only !== name }, async () => {
        await stopPair(pair);
        // 1600-byte slots straddle 4 KiB pages, so buffers cross IOTLB entries.
        pair = await startPair(['--iotlb-strategy', strategy], { ...mapping.opts, slotSize: 1600, queueSize: 256 });
        const { fe, serve } = pair;
        const r = await loopFrames(fe, FRAMES);
        const state = await serve.state();
        assert.deepEqual(r.errors, [], `serve state: ${JSON.stringify(state.queues.map((q) => ({ i: q.index, broken: q.broken, wait: q.waitingForMapping, c: q.counters })))}\n${serve.log.lines.slice(-10).join('\n')}`);
        assert.equal(r.received, FRAMES);
        assertClean(fe);
        assert.equal(state.iommu, true);
        assert.equal(state.strategy, strategy);
        assert.equal(total(state, 'tx'), FRAMES);
        assert.equal(total(state, 'rx'), FRAMES);
        for (const q of state.queues) assert.equal(q.broken, null, `queue ${q.index} broken`);
        // The device learns mappings only through UPDATEs answering its misses (the first
        // ones for the used rings come unasked, like QEMU's vhost_dev_start()).
        assert.ok(fe.stats.updatesSent > 0, 'no IOTLB update was ever sent: was the IOMMU really on?');
        if (mapping.name === 'static 1G') assert.ok(fe.stats.updatesSent <= 2, `1G pages: ${fe.stats.updatesSent} updates, expected one page for everything`);
        else assert.ok(fe.stats.missesReceived > 0, 'the device never missed');
        if (mapping.opts.iommu === 'dynamic') assert.ok(fe.stats.invalidatesSent >= 2 * FRAMES, `only ${fe.stats.invalidatesSent} invalidations`);
        assert.equal(fe.accessFails.length, 0);
      });
    }
  });
}

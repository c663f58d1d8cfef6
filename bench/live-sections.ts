/**
 * Report sections measured against live peers (DPDK's testpmd, serve itself), for
 * `npm run bench`. Each runs side by side with DPDK's own vhost backend in the same run, and
 * says loudly when a peer is missing instead of leaving the section out.
 *   BENCH_LIVE=0   skip these sections (offline strategies only)
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { datapathMarkdown, runDatapathBench } from './datapath-vs-dpdk.js';
import { missPolicyMarkdown, runMissPolicyBench } from './miss-policy-qemu.js';
import type { ReportSection, SectionBuilder } from './report.js';

const live = process.env.BENCH_LIVE !== '0';

export const datapathSection: SectionBuilder = async (): Promise<ReportSection | null> => {
  if (!live) return null;
  const title = 'Data path: serve vs DPDK vhost (same virtio-user front-end, same run)';
  try {
    const split = await runDatapathBench({ seconds: 4, queues: 1, packed: false });
    const packed = await runDatapathBench({ seconds: 4, queues: 1, packed: true });
    return {
      title,
      body: '64-byte frames; one dpdk-testpmd virtio-user front-end with a port to each back-end, the back-ends run alternately in 100 ms slices (bench/alternate.ts); rates are frames per running time.\n\n'
        + datapathMarkdown([...split, ...packed]),
    };
  } catch (err) {
    return { title, body: `**not measured**: ${(err as Error).message}` };
  }
};

/** DPDK 17.11's IOTLB table (IOMMU off / 4K / 2M / 1G / dynamic), from bench/iommu-table.ts in a child process. */
export const iommuTableSection: SectionBuilder = (): ReportSection | null => {
  if (!live) return null;
  const script = join(fileURLToPath(new URL('.', import.meta.url)), 'iommu-table.js');
  const run = spawnSync(process.execPath, [script, '--seconds', '2', '--repeat', '2'], { encoding: 'utf8', timeout: 30 * 60_000 });
  const out = run.stdout ?? '';
  const table = out.slice(out.indexOf('| mapping'));
  const title = 'IOMMU off vs on: DPDK 17.11\'s IOTLB table, with our test front-end (serve strategies beside DPDK vhost)';
  if (run.status !== 0 || !out.includes('| mapping')) {
    return { title, body: `**not measured** (exit ${run.status}): ${(run.stderr ?? '').slice(-2000)}` };
  }
  return { title, body: '64-byte frames, loopback, 2 rounds: Mpps is the best round, ratios are medians of per-round ratios; then serve\'s on/off measured interleaved.\n\n' + table.trim() };
};

/** IOTLB miss policies with a real QEMU intel-iommu guest (bench/miss-policy-qemu.ts), one short round. */
export const missPolicySection: SectionBuilder = async (): Promise<ReportSection | null> => {
  if (!live) return null;
  const title = 'IOTLB miss policies with a real QEMU guest (intel-iommu, iommu.strict=1, TCP transfer)';
  try {
    const rows = await runMissPolicyBench({ mib: 8, rounds: 1, progress: (l) => process.stderr.write(`  ${l}\n`) });
    return { title, body: 'One round of an 8 MiB guest TCP transfer per policy (`node dist/bench/miss-policy-qemu.js --rounds 3` for more).\n\n' + missPolicyMarkdown(rows) };
  } catch (err) {
    return { title, body: `**not measured**: ${(err as Error).message}` };
  }
};

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
import { defaultScalingLayout, runWorkerScaling, workerScalingMarkdown } from './worker-scaling.js';
import type { ReportSection, SectionBuilder } from './report.js';

const live = process.env.BENCH_LIVE !== '0';

/**
 * Queue pairs x workers, as `serve --queues Q --workers W` against DPDK's vhost with W
 * forwarding lcores (all on the one back-end core: datapath-vs-dpdk.ts).
 *   BENCH_QUEUE_PAIRS=1,2,4   which queue-pair counts (default all three; 1 runs one worker)
 */
function datapathCells(): { queues: number; workers: number }[] {
  const wanted = (process.env.BENCH_QUEUE_PAIRS ?? '1,2,4').split(',').map((q) => Number(q.trim()));
  // serve --queues takes 1-16.
  const bad = wanted.find((q) => !Number.isInteger(q) || q < 1 || q > 16);
  if (bad !== undefined) throw new Error(`BENCH_QUEUE_PAIRS: each entry must be a queue-pair count 1-16, got ${process.env.BENCH_QUEUE_PAIRS}`);
  return wanted.flatMap((queues) => (queues === 1 ? [{ queues, workers: 1 }] : [{ queues, workers: 1 }, { queues, workers: 2 }]));
}

export const datapathSection: SectionBuilder = async (): Promise<ReportSection | null> => {
  if (!live) return null;
  const title = 'Data path: serve vs DPDK vhost (same virtio-user front-end, same run)';
  try {
    const results = [];
    for (const packed of [false, true]) {
      for (const { queues, workers } of datapathCells()) {
        process.stderr.write(`  data path: ${packed ? 'packed' : 'split'}, ${queues} queue pair(s), ${workers} worker(s)\n`);
        results.push(...await runDatapathBench({ seconds: 4, repeat: 2, queues, workers, packed }));
      }
    }
    return {
      title,
      body: '64-byte frames; one dpdk-testpmd virtio-user front-end with a port to each back-end, the back-ends run alternately in 100 ms slices (bench/alternate.ts); rates are frames per running time. '
        + 'serve\'s workers and DPDK\'s forwarding lcores share one core, the front-end has the other (`BENCH_QUEUE_PAIRS=1` for one pair only).\n\n'
        + datapathMarkdown(results),
    };
  } catch (err) {
    return { title, body: `**not measured**: ${(err as Error).message}` };
  }
};

/**
 * Aggregate Mpps as workers get CPUs of their own (bench/worker-scaling.ts), split and packed,
 * two rounds; on a machine with fewer than 4 CPUs, a "not measured" line saying so.
 */
export const workerScalingSection: SectionBuilder = async (): Promise<ReportSection | null> => {
  if (!live) return null;
  const title = 'Workers across cores: aggregate Mpps with 1 .. W workers, each on a CPU of its own (serve and DPDK vhost)';
  try {
    const layout = defaultScalingLayout();
    const maxWorkers = layout.backend.length;
    const rows = [];
    for (const packed of [false, true]) {
      process.stderr.write(`  worker scaling: ${packed ? 'packed' : 'split'}, 1-${maxWorkers} worker(s)\n`);
      rows.push(...await runWorkerScaling({
        layout, maxWorkers, queues: 2 * maxWorkers, packed, directions: ['guest→backend', 'backend→guest'], seconds: 4, rounds: 2,
      }));
    }
    return { title, body: '64-byte frames, each back-end alone with its own front-end, medians of 2 rounds (`node dist/bench/worker-scaling.js`).\n\n' + workerScalingMarkdown(rows, layout) };
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

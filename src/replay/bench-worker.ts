/**
 * Worker entry of benchIsolated() (run.ts): one trace's strategies benchmarked in a V8
 * isolate of their own. Progress lines and the result go back as messages.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { getStrategy } from '../iotlb/registry.js';
import { benchStrategies, type IsolatedJob, type FromBenchWorker } from './run.js';
import { oneEntry } from './trivial.js';

const job = workerData as IsolatedJob;
const post = (message: FromBenchWorker): void => parentPort!.postMessage(message);
// The bench-only engine probe is not a registered strategy.
const defs = job.strategies.map((name) => (name === oneEntry.name ? oneEntry : getStrategy(name)));
try {
  const result = await benchStrategies(job.trace, job.ops, defs, { ...job.options, progress: (line) => post({ type: 'progress', line }) });
  post({ type: 'done', result });
} catch (err) {
  post({ type: 'failed', message: (err as Error).stack ?? String(err) });
}

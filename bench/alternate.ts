/**
 * Two tools for comparing back-ends on a machine whose speed changes under us.
 *
 * alternate(): runs several processes one at a time, SIGSTOP / SIGCONT round-robin in
 * short slices, so each gets the same minutes of the machine. On these 2-vCPU machines the
 * cost of moving a cache line between the two vCPUs jumps between ~80 and ~400 ns for
 * tens of seconds at a time (where the host places them), and a back-end measured for 4 s
 * after another one can draw the other phase: sequential rounds then disagree by 2x.
 *
 * crossCoreRoundTrip(): that cost, measured with two threads bouncing one word, so a report
 * can say which phase it ran in.
 */
import { Worker } from 'node:worker_threads';

/** Runs each pid alone in turn for sliceMs until durationMs has passed; returns each one's running time (ms). */
export async function alternate(pids: readonly number[], sliceMs: number, durationMs: number, onSlice?: () => void): Promise<number[]> {
  const onTime = pids.map(() => 0);
  for (const pid of pids.slice(1)) process.kill(pid, 'SIGSTOP');
  let current = 0;
  let sliceStart = performance.now();
  const end = sliceStart + durationMs;
  try {
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, sliceMs));
      process.kill(pids[current]!, 'SIGSTOP');
      const now = performance.now();
      onTime[current] += now - sliceStart;
      current = (current + 1) % pids.length;
      sliceStart = performance.now();
      process.kill(pids[current]!, 'SIGCONT');
      onSlice?.();
    }
    onTime[current] += performance.now() - sliceStart;
  } finally {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // already gone: its own stop() reports it
      }
    }
  }
  return onTime;
}

const PING_PONG_SOURCE = `
const { workerData } = require('node:worker_threads');
const flag = new Int32Array(workerData.sab);
for (;;) {
  const v = Atomics.load(flag, 0);
  if (v < 0) break;
  if ((v & 1) === 1) Atomics.store(flag, 0, v + 1);
}
`;

/** Median time (ns) for one word to go to another thread and back, over `ms` of bouncing. */
export async function crossCoreRoundTrip(ms = 200): Promise<number> {
  const sab = new SharedArrayBuffer(128);
  const flag = new Int32Array(sab);
  const worker = new Worker(PING_PONG_SOURCE, { eval: true, workerData: { sab } });
  await new Promise((r) => worker.once('online', r));
  const samples: number[] = [];
  const end = performance.now() + ms;
  let v = 0;
  while (performance.now() < end) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) {
      Atomics.store(flag, 0, v + 1);
      while (Atomics.load(flag, 0) !== v + 2);
      v += 2;
    }
    samples.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  Atomics.store(flag, 0, -1);
  await worker.terminate();
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1] ?? NaN;
}

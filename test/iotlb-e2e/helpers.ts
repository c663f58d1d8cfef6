// Shared plumbing for the IOTLB end-to-end tests: serve + the test front-end, frames with
// known contents through loopback, and the checks every case makes.
import assert from 'node:assert/strict';
import { VhostUserFrontend, type FrontendOptions } from '../support/frontend/frontend.js';
import { checkLoopedFrame, frameLength, frameSeq, writeFrame } from '../support/frontend/frames.js';
import { startServe, type ServeProcess } from '../support/serve.js';

export interface Pair {
  serve: ServeProcess;
  fe: VhostUserFrontend;
}

export async function startPair(serveArgs: string[], opts: Omit<FrontendOptions, 'socket'>): Promise<Pair> {
  const serve = await startServe(['--net', 'loopback', '--quiet', ...serveArgs]);
  let fe: VhostUserFrontend | undefined;
  try {
    fe = await VhostUserFrontend.connect({ socket: serve.socket, ...opts });
    fe.start();
    return { serve, fe };
  } catch (err) {
    fe?.close();
    const { lines } = await serve.stop();
    throw new Error(`${(err as Error).message}\nserve log:\n${lines.slice(-30).join('\n')}`);
  }
}

export async function stopPair(p: Pair | undefined): Promise<string[]> {
  if (!p) return [];
  p.fe.close();
  const { lines } = await p.serve.stop();
  return lines;
}

export interface LoopResult {
  received: number;
  errors: string[];
}

/**
 * Sends `count` frames (sequence from `firstSeq`, lengths varying) through loopback and
 * checks each one that comes back, in order.
 */
export async function loopFrames(fe: VhostUserFrontend, count: number, opts: { firstSeq?: number; minLen?: number; maxLen?: number; timeoutMs?: number } = {}): Promise<LoopResult> {
  const first = opts.firstSeq ?? 0;
  const min = opts.minLen ?? 60;
  const max = opts.maxLen ?? Math.min(1514, fe.opts.slotSize - 12);
  let sent = 0;
  let received = 0;
  const errors: string[] = [];
  const onFrame = (b: Uint8Array, off: number, len: number): void => {
    const expected = first + received;
    const seq = frameSeq(b, off);
    const err = checkLoopedFrame(b, off, len, expected, frameLength(expected, min, max));
    if (err !== null && errors.length < 20) errors.push(seq !== expected ? `${err} (got seq ${seq})` : err);
    received++;
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let idle = 0;
  while (received < count) {
    if (Date.now() > deadline) {
      errors.push(`timed out: sent ${sent}, received ${received} of ${count}; stats ${JSON.stringify(fe.stats)}`);
      break;
    }
    let posted = 0;
    while (sent < count && posted < 32) {
      const seq = first + sent;
      const len = frameLength(seq, min, max);
      if (!fe.txSendWith(len, (m, o) => writeFrame(m, o, seq, len))) break;
      sent++;
      posted++;
    }
    const w = fe.poll(onFrame) + posted;
    if (w === 0) {
      if (++idle > 32) {
        fe.conn.waitReadable(1);
        await new Promise((r) => setImmediate(r));
        idle = 0;
      }
    } else if ((sent & 1023) === 0) {
      await new Promise((r) => setImmediate(r));
    }
  }
  // Let the last TX completions come in so their buffers are checked too.
  await fe.runUntil(() => fe.txInFlight === 0, 5000, onFrame).catch((e) => errors.push((e as Error).message));
  return { received, errors };
}

export function assertClean(fe: VhostUserFrontend): void {
  const bad = fe.verifyCanary();
  assert.deepEqual(bad.slice(0, 5), [], `${bad.length} canary/content violations, first: ${JSON.stringify(bad.slice(0, 5))}`);
}

export const STRATEGIES = ['dpdk', 'lru', 'interval', 'coalescing'] as const;

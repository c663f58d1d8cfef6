/**
 * One dpdk-testpmd virtio-user front-end with a port to each of several back-end processes,
 * run one at a time in turn (alternate.ts says why): every back-end gets the same seconds of
 * a machine whose speed changes under us, measured by the same instrument (the front-end's
 * port counters). Used by datapath-vs-dpdk.ts (serve against DPDK's vhost) and serve-ab.ts
 * (one serve build or setting against another).
 *
 * Ports alternate between two sides: ports 0, 2, 4, ... are side A, 1, 3, 5, ... side B.
 * Several processes of each side, because one process keeps its own speed for its whole
 * life, and two identical ones can differ by ±12% (split) or 2x (packed): compiled code
 * and memory placement differ per process. The front-end also polls the stopped back-ends'
 * idle ports, which costs every one the same.
 */
import { startTestpmd } from '../test/peers/dpdk.js';
import { sleep } from '../test/peers/util.js';
import { alternate } from './alternate.js';

export type Direction = 'guest→backend' | 'backend→guest';

/** A back-end process behind one port. */
export interface PortBackend {
  socket: string;
  pid: number;
}

/** Slice of an interleaved run, and the stats blocks (1 s each) per reported window. */
const SLICE_MS = 100;
const WINDOW_BLOCKS = 2;
/** The front-end: main lcore on the back-end core, forwarding lcore on the other (the back-ends use core 0). */
export const BACKEND_CORE = 0;
export const FRONTEND_LCORES: [number, number] = [BACKEND_CORE, 1 - BACKEND_CORE]; // main, forwarding

export interface InterleavedRates {
  /** Each port's Mpps over its own running time. */
  each: number[];
  /** Side A's frames over side B's in each window of WINDOW_BLOCKS stats blocks. */
  windows: number[];
}

/** Runs `seconds` of alternating back-ends behind one front-end; the front-end sends (guest→backend) or receives. */
export async function interleavedRates(backends: readonly PortBackend[], direction: Direction, queues: number, packed: boolean, seconds: number): Promise<InterleavedRates> {
  const sockets = backends.map((b) => b.socket);
  const ports = sockets.length;
  const pmd = startTestpmd({ role: 'virtio-user', socket: sockets, queues, packed, forwardMode: direction === 'guest→backend' ? 'txonly' : 'rxonly', lcores: FRONTEND_LCORES, extraArgs: ['--txpkts=64'] });
  try {
    await pmd.waitForLinkUp();
    const count = direction === 'guest→backend' ? 'txPackets' : 'rxPackets';
    await pmd.waitForStats((s) => sockets.every((_, p) => (s[p]?.[count] ?? 0) > 0), 60_000);
    await sleep(1500);
    // Counters at each new stats block (testpmd prints its ports' blocks in order).
    const blocks: number[][] = [];
    let last = pmd.stats()[ports - 1];
    const sample = (): void => {
      const s = pmd.stats();
      if (s[ports - 1] !== undefined && s[ports - 1] !== last) {
        last = s[ports - 1];
        blocks.push(sockets.map((_, p) => s[p]?.[count] ?? 0));
      }
    };
    sample();
    const onMs = await alternate(backends.map((b) => b.pid), SLICE_MS, seconds * 1000, sample);
    await sleep(1200);
    sample();
    if (blocks.length < 2) {
      throw new Error(`the front-end printed ${blocks.length} stats block(s) over ${seconds} s of alternation: too short to measure (2 s or more)`);
    }
    const first = blocks[0]!;
    const final = blocks[blocks.length - 1]!;
    const each = sockets.map((_, p) => (final[p]! - first[p]!) / onMs[p]! / 1000);
    const sideSum = (b: number[], side: number): number => b.reduce((t, v, p) => (p % 2 === side ? t + v : t), 0);
    const windows: number[] = [];
    for (let i = WINDOW_BLOCKS; i < blocks.length; i += WINDOW_BLOCKS) {
      const a = blocks[i - WINDOW_BLOCKS]!;
      const b = blocks[i]!;
      const sideB = sideSum(b, 1) - sideSum(a, 1);
      if (sideB > 0) windows.push((sideSum(b, 0) - sideSum(a, 0)) / sideB);
    }
    return { each, windows };
  } finally {
    await pmd.stop();
  }
}

/** The ports of one side (0: A, 1: B). */
export function side<T>(xs: readonly T[], which: 0 | 1): T[] {
  return xs.filter((_, p) => p % 2 === which);
}

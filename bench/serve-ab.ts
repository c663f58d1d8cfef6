/**
 * One serve against another, same front-end, same seconds: "measure before and after".
 * A and B differ by their serve flags (`--b='--flag value'`, with '=' since the value starts
 * with a dash), by the checkout they run (`--b-bin` another checkout's bin/run.js, e.g. a
 * worktree of the commit before), or by where they run (`--a-pin` / `--b-pin`: a CPU list
 * for taskset, or `none` to leave serve to the scheduler).
 * P processes of each behind one dpdk-testpmd virtio-user front-end, run one at a time in
 * turn (interleaved.ts), 64-byte frames, no IOMMU. `--frame-size` (with `--direction rx`)
 * sets the size of the frames serve's source sends (60-65535); the front-end sends 64.
 *
 *   node dist/bench/serve-ab.js [--a='FLAGS'] [--b='FLAGS'] [--a-bin PATH] [--b-bin PATH]
 *        [--a-pin 0|none] [--b-pin 0|none] [--direction rx|tx] [--frame-size N] [--packed]
 *        [--queues N] [--seconds S] [--processes P] [--rounds R]
 *
 * Defaults: both this checkout, pinned to core 0 (as datapath-vs-dpdk.ts pins serve), both
 * directions, split ring, 12 s, 2 processes, 1 round. Prints each side's Mpps (each
 * process), B / A and the 2 s windows' B / A range. Not a test: figures depend on the machine.
 */
import { parseArgs } from 'node:util';
import { startServe, type ServeProcess } from '../test/support/serve.js';
import { BACKEND_CORE, interleavedRates, side, type Direction, type PortBackend } from './interleaved.js';
import { mean } from './median.js';
import { answerHelp, optionsOrExit, positiveInt } from './options.js';

interface Variant {
  label: string;
  flags: string[];
  bin?: string;
  /** taskset CPU list, or null: not pinned. */
  pin: string | null;
}

answerHelp(import.meta.url);
const { values: opts } = optionsOrExit('serve-ab', () => parseArgs({
  options: {
    a: { type: 'string' }, b: { type: 'string' },
    'a-bin': { type: 'string' }, 'b-bin': { type: 'string' },
    'a-pin': { type: 'string', default: String(BACKEND_CORE) }, 'b-pin': { type: 'string', default: String(BACKEND_CORE) },
    direction: { type: 'string' }, 'frame-size': { type: 'string' }, packed: { type: 'boolean', default: false },
    queues: { type: 'string', default: '1' }, seconds: { type: 'string', default: '12' },
    processes: { type: 'string', default: '2' }, rounds: { type: 'string', default: '1' },
  },
}));

function positive(name: 'queues' | 'seconds' | 'processes' | 'rounds'): number {
  return positiveInt(name, opts[name]!);
}

function variant(which: 'a' | 'b'): Variant {
  const flags = opts[which]?.trim();
  const pin = opts[`${which}-pin`]!;
  const bin = opts[`${which}-bin`];
  const parts = [flags || 'default flags', bin ? `bin ${bin}` : '', pin === 'none' ? 'not pinned' : `CPU ${pin}`].filter(Boolean);
  return { label: `${which.toUpperCase()} (${parts.join(', ')})`, flags: flags ? flags.split(/\s+/) : [], bin, pin: pin === 'none' ? null : pin };
}

async function round(a: Variant, b: Variant, direction: Direction, queues: number, packed: boolean, seconds: number, processes: number, frameSize: number): Promise<void> {
  const serves: ServeProcess[] = [];
  try {
    const ports: PortBackend[] = [];
    for (let i = 0; i < processes; i++) {
      for (const v of [a, b]) {
        const serve = await startServe(
          ['--net', direction === 'guest→backend' ? 'sink' : 'source', '--frame-size', String(frameSize), '--queues', String(queues), '--quiet', ...v.flags],
          { prefix: v.pin === null ? undefined : ['taskset', '-c', v.pin], bin: v.bin },
        );
        serves.push(serve);
        ports.push({ socket: serve.socket, pid: serve.child.pid! });
      }
    }
    const r = await interleavedRates(ports, direction, queues, packed, seconds);
    const each = (xs: number[]): string => `${mean(xs).toFixed(2)} (${xs.map((x) => x.toFixed(2)).join(' / ')})`;
    const aEach = side(r.each, 0);
    const bEach = side(r.each, 1);
    const windows = r.windows.map((w) => 1 / w);
    const range = windows.length > 0 ? `${Math.min(...windows).toFixed(2)}–${Math.max(...windows).toFixed(2)} (${windows.length})` : '-';
    console.log(`${direction} ${packed ? 'packed' : 'split'}: A ${each(aEach)} Mpps, B ${each(bEach)} Mpps, B / A ${(mean(bEach) / mean(aEach)).toFixed(2)}x, 2 s windows ${range}`);
  } finally {
    for (const s of serves) await s.stop();
  }
}

const a = variant('a');
const b = variant('b');
const { directions, seconds, processes, rounds, queues, frameSize } = optionsOrExit('serve-ab', () => {
  const dir = opts.direction;
  if (dir !== undefined && dir !== 'rx' && dir !== 'tx') throw new Error(`--direction: "${dir}" is not rx or tx`);
  const directions: Direction[] = dir === 'rx' ? ['backend→guest'] : dir === 'tx' ? ['guest→backend'] : ['guest→backend', 'backend→guest'];
  let frameSize = 64;
  if (opts['frame-size'] !== undefined) {
    if (dir !== 'rx') throw new Error('--frame-size needs --direction rx: it sizes the frames of serve\'s source, and guest → back-end the front-end sends 64');
    frameSize = positiveInt('frame-size', opts['frame-size']);
    if (frameSize < 60 || frameSize > 65535) throw new Error(`--frame-size: ${frameSize} is not in 60..65535`);
  }
  return { directions, seconds: positive('seconds'), processes: positive('processes'), rounds: positive('rounds'), queues: positive('queues'), frameSize };
});
const packed = opts.packed!;
console.log(`serve-ab: ${a.label} against ${b.label}; ${processes} processes each, ${seconds} s per direction and round, ${frameSize}-byte frames`);
for (let r = 0; r < rounds; r++) {
  for (const direction of directions) await round(a, b, direction, queues, packed, seconds, processes, frameSize);
}

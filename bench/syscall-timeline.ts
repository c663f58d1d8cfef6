/**
 * Where an IOTLB round trip spends its time, for any back-end, seen from outside: `perf
 * record` of the back-end process's sendmsg and recvmsg syscalls while a guest runs, then
 * three intervals per miss. The same for DPDK's vhost and serve, without the `trace record`
 * proxy (which adds a hop to every message) and without either back-end's own counters.
 *
 *   miss → answer   a MISS sent on the back-end channel → the next message read from the front-end
 *                   (QEMU's side: its main loop woken, the translation, the UPDATE sent)
 *   read → ack      a message read → its ack sent (the back-end's control thread)
 *   answer → miss   a message read → the next MISS sent (the back-end's side: the UPDATE applied,
 *                   the ring resumed, the burst up to the next buffer that misses)
 *
 * With the front-end's pid as well (QEMU), a fourth, and the front-end's own waits:
 *
 *   sent → read     the front-end's sendmsg of a request (an UPDATE from its main loop, an
 *                   INVALIDATE from a vCPU, which waits for the ack) → the back-end's read of it:
 *                   how long the back-end takes to wake up and look
 *   sent → ack      per front-end thread: its sendmsg → its next read, i.e. how long
 *                   that thread waited for the back-end's ack. A vCPU's wait for an INVALIDATE's
 *                   ack stalls the guest's CPU, so behind a strict IOMMU it adds to every frame.
 *                   Split in three where the back-end's read and ack of that request were seen:
 *                   sent → read (the back-end woken), read → ack (its handling) and ack →
 *                   resumed (the front-end's thread woken by the ack and back on a CPU).
 *
 * A sendmsg is a MISS when its (thread, fd) is not the one acks go out on; the ack pair is the
 * one most often seen right after a read on the same thread. A read is a recvmsg that returned
 * bytes without MSG_PEEK. Needs `perf` and the
 * syscalls tracepoints (root); a guest-iommu.ts cell with --syscalls fails loudly without them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { LatencyHistogram, type LatencySummary } from '../src/stats/latency.js';

export interface SyscallTimeline {
  misses: number;
  reads: number;
  /** Each as trace decode --stats and inspect summarise round trips (±9% buckets). */
  missToAnswer: LatencyHistogram;
  readToAck: LatencyHistogram;
  answerToMiss: LatencyHistogram;
  /** Only when the front-end was recorded too. */
  sentToRead?: LatencyHistogram;
  /** Only when the front-end was recorded too: per thread (its name, and `main` or its tid), its send → its next read. */
  frontEndWaits?: Map<string, FrontEndWait>;
}

/** One front-end thread's waits for acks: whole, and in three parts where all of them were seen. */
export interface FrontEndWait {
  sentToAck: LatencyHistogram;
  sentToRead: LatencyHistogram;
  readToAck: LatencyHistogram;
  ackToResumed: LatencyHistogram;
}

interface Event {
  us: number;
  /** The front-end's (true) or the back-end's. */
  frontEnd: boolean;
  tid: number;
  pid: number;
  /** The thread's name. */
  comm: string;
  kind: 'read' | 'send';
  fd: number;
}

export class SyscallRecorder {
  private readonly child: ChildProcess;
  private stderr = '';
  private failed: Error | null = null;
  private readonly pids: number[];

  /** Records the back-end `pid`, and the front-end `frontEndPid` if given. */
  constructor(private readonly pid: number, private readonly file: string, frontEndPid?: number) {
    this.pids = frontEndPid === undefined ? [pid] : [pid, frontEndPid];
    this.child = spawn('perf', ['record', '-q', '-o', file, '-e', 'syscalls:sys_enter_recvmsg,syscalls:sys_exit_recvmsg,syscalls:sys_enter_sendmsg', '-p', this.pids.join(',')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.on('error', (err) => (this.failed = err));
  }

  /** Stops recording and reads the timeline; throws with perf's own words if it could not record. */
  async stop(): Promise<SyscallTimeline> {
    if (this.failed) throw new Error(`--syscalls needs perf (Debian: linux-perf): ${this.failed.message}`);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGINT');
      await exited;
    }
    try {
      const script = spawnSync('perf', ['script', '-i', this.file, '-F', 'comm,pid,tid,time,event,trace'], { encoding: 'utf8', maxBuffer: 1 << 30 });
      if (script.status !== 0) throw new Error(`perf could not record the back-end's syscalls: ${(this.stderr + script.stderr).trim().split('\n').slice(-2).join(' ')}`);
      return readTimeline(script.stdout, this.pid, this.pids);
    } finally {
      rmSync(this.file, { force: true });
    }
  }

  /** A cell that failed before stop(): perf goes, its file with the cell's directory. */
  discard(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** The timeline in `perf script -F comm,pid,tid,time,event,trace` output, for the back-end `backEndPid` and the other `pids`. */
export function readTimeline(text: string, backEndPid: number, pids: number[]): SyscallTimeline {
  return analyse(parse(text, backEndPid, pids));
}

const LINE = /^\s*(.*?)\s+(\d+)\/(\d+)\s+([\d.]+):\s+syscalls:sys_(enter_recvmsg|exit_recvmsg|enter_sendmsg):\s*(.*)$/;
/** recvmsg's flag for a look that leaves the message queued (serve's worker peeks first). */
const MSG_PEEK = 2;

function parse(text: string, backEndPid: number, pids: number[]): Event[] {
  const events: Event[] = [];
  const peeking = new Set<number>();
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const comm = m[1]!;
    const pid = Number(m[2]);
    if (!pids.includes(pid)) continue;
    const frontEnd = pid !== backEndPid;
    const tid = Number(m[3]);
    const us = Number(m[4]) * 1e6;
    if (m[5] === 'enter_recvmsg') {
      const flags = /flags: (0x[0-9a-f]+)/.exec(m[6]!);
      if (flags && (Number.parseInt(flags[1]!, 16) & MSG_PEEK) !== 0) peeking.add(tid);
      else peeking.delete(tid);
    } else if (m[5] === 'exit_recvmsg') {
      if (peeking.delete(tid)) continue;
      const ret = Number.parseInt(m[6]!.trim(), 16);
      // 0x... of a 64-bit return: errors (EAGAIN of a poll) come out as huge numbers
      if (ret > 0 && ret < 0x7fffffff) events.push({ us, frontEnd, pid, tid, comm, kind: 'read', fd: -1 });
    } else {
      const fd = /fd: (0x[0-9a-f]+)/.exec(m[6]!);
      events.push({ us, frontEnd, pid, tid, comm, kind: 'send', fd: fd ? Number.parseInt(fd[1]!, 16) : -1 });
    }
  }
  return events.sort((a, b) => a.us - b.us);
}

function analyse(all: Event[]): SyscallTimeline {
  const events = all.filter((e) => !e.frontEnd);
  const afterRead = new Map<string, number>();
  events.forEach((e, i) => {
    const prev = events[i - 1];
    if (e.kind === 'send' && prev?.kind === 'read' && prev.tid === e.tid) afterRead.set(`${e.tid}/${e.fd}`, (afterRead.get(`${e.tid}/${e.fd}`) ?? 0) + 1);
  });
  const ackKey = [...afterRead.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  const missToAnswer = new LatencyHistogram();
  const readToAck = new LatencyHistogram();
  const answerToMiss = new LatencyHistogram();
  let missAt = -1;
  let readAt = -1;
  let lastRead = -1;
  let misses = 0;
  let reads = 0;
  for (const e of events) {
    if (e.kind === 'read') {
      reads++;
      if (missAt >= 0) missToAnswer.record(e.us - missAt);
      missAt = -1;
      readAt = e.us;
      lastRead = e.us;
    } else if (`${e.tid}/${e.fd}` === ackKey) {
      if (lastRead >= 0) readToAck.record(e.us - lastRead);
      lastRead = -1;
    } else {
      misses++;
      if (missAt < 0) missAt = e.us;
      if (readAt >= 0) answerToMiss.record(e.us - readAt);
      readAt = -1;
    }
  }
  const timeline: SyscallTimeline = { misses, reads, missToAnswer, readToAck, answerToMiss };
  if (all.some((e) => e.frontEnd)) {
    timeline.sentToRead = sentToRead(all.filter((e) => !e.frontEnd || e.kind === 'send'));
    timeline.frontEndWaits = frontEndWaits(all, ackKey);
  }
  return timeline;
}

/**
 * Each back-end read paired with the front-end's last send before it: QEMU sends a request
 * only under its big lock and waits for the ack, so one at most is in flight (a send on
 * another of its sockets just before a read would pair wrongly; none was seen in these jobs).
 */
function sentToRead(all: Event[]): LatencyHistogram {
  const out = new LatencyHistogram();
  let sentAt = -1;
  for (const e of all) {
    if (e.frontEnd) sentAt = e.us;
    else if (e.kind === 'read' && sentAt >= 0) {
      out.record(e.us - sentAt);
      sentAt = -1;
    }
  }
  return out;
}

/**
 * Per front-end thread, each send → that thread's next read: QEMU sends an IOTLB request and
 * blocks reading its ack (an UPDATE from the main loop, an INVALIDATE from the vCPU that ran
 * the guest's unmap), so this is how long each thread stood still for the back-end. The
 * back-end's next read after a send is that request (one at most is in flight, as in
 * sentToRead) and its next send on the ack pair `ackKey` the ack, which splits the wait.
 */
function frontEndWaits(all: Event[], ackKey: string | undefined): Map<string, FrontEndWait> {
  const waits = new Map<string, FrontEndWait>();
  const pending = new Map<number, { sentAt: number; readAt: number; ackAt: number }>();
  /** The front-end thread whose request the back-end reads next, then acks next. */
  let sender = -1;
  let handling = -1;
  for (const e of all) {
    if (!e.frontEnd) {
      if (e.kind === 'read') {
        const request = pending.get(sender);
        if (request && request.readAt < 0) {
          request.readAt = e.us;
          handling = sender;
        }
        sender = -1;
      } else if (`${e.tid}/${e.fd}` === ackKey) {
        const request = pending.get(handling);
        if (request && request.ackAt < 0) request.ackAt = e.us;
        handling = -1;
      }
      continue;
    }
    if (e.kind === 'send') {
      pending.set(e.tid, { sentAt: e.us, readAt: -1, ackAt: -1 });
      sender = e.tid;
      continue;
    }
    const request = pending.get(e.tid);
    if (request === undefined) continue;
    pending.delete(e.tid);
    // QEMU names its threads only with -name debug-threads=on: tell its main loop by its tid.
    const thread = `${e.comm} ${e.tid === e.pid ? 'main' : e.tid}`;
    let wait = waits.get(thread);
    if (wait === undefined) {
      wait = { sentToAck: new LatencyHistogram(), sentToRead: new LatencyHistogram(), readToAck: new LatencyHistogram(), ackToResumed: new LatencyHistogram() };
      waits.set(thread, wait);
    }
    wait.sentToAck.record(e.us - request.sentAt);
    if (request.readAt >= 0 && request.ackAt >= request.readAt) {
      wait.sentToRead.record(request.readAt - request.sentAt);
      wait.readToAck.record(request.ackAt - request.readAt);
      wait.ackToResumed.record(e.us - request.ackAt);
    }
  }
  return waits;
}

/** One line per interval, for a bench log. */
export function describeTimeline(t: SyscallTimeline): string[] {
  /** Seconds the interval adds up to over the run. */
  const totalS = (s: LatencySummary): number => (s.meanUs * s.count) / 1e6;
  const split = (name: string, h: LatencyHistogram): string => {
    const s = h.summary();
    return `${name} p50 ${s.p50Us.toFixed(0)} / p90 ${s.p90Us.toFixed(0)} µs, ${totalS(s).toFixed(2)} s`;
  };
  const row = (name: string, h: LatencyHistogram): string => {
    const s = h.summary();
    return `${name.padEnd(14)} p50 ${s.p50Us.toFixed(0).padStart(5)} µs  p90 ${s.p90Us.toFixed(0).padStart(5)}  p99 ${s.p99Us.toFixed(0).padStart(6)}  total ${totalS(s).toFixed(2)} s (${s.count})`;
  };
  return [
    `${t.misses} misses, ${t.reads} messages read`,
    row('miss → answer', t.missToAnswer),
    row('read → ack', t.readToAck),
    row('answer → miss', t.answerToMiss),
    ...(t.sentToRead ? [row('sent → read', t.sentToRead)] : []),
    ...[...(t.frontEndWaits ?? new Map<string, FrontEndWait>())].flatMap(([thread, w]) => [
      row(`${thread}: sent → ack`, w.sentToAck),
      `  of which (${w.sentToRead.count} split): ${split('sent → read', w.sentToRead)}, ${split('read → ack', w.readToAck)}, ${split('ack → resumed', w.ackToResumed)}`,
    ]),
  ];
}

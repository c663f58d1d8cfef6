// A vhost-user front-end that does whatever a test tells it to, including everything a real
// one never would: wrong-state requests, garbage sizes, stray or missing fds, rings that lie.
// It talks to the REAL `serve` process over its socket (see test/support/serve.ts), and comes
// with the plumbing hardening tests need: guest memory in a memfd both sides map, a split
// driver over it, and serve's fd count / RSS from /proc.
import { readdirSync, readFileSync } from 'node:fs';
import {
  FrontendRequest as F, MessageFramer, NetFeature, ProtocolFeature, VirtioFeature, decodeMessage, encodeMessage,
  featureMask, HEADER_SIZE, type Body, type MemoryRegion, type VhostMessage,
} from '../../src/protocol/index.js';
import {
  closeFd, connectUnix, eventfdCreate, eventfdRead, eventfdWrite, mapFd, memfdCreate, receiveMessage, sendMessage, unmap,
} from '../../src/sys/index.js';
import { SplitDriver, layoutRings } from './frontend/split-driver.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Open fds of another process (serve), from /proc/PID/fd. */
export function fdCountOf(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Resident set size of a process in bytes (VmRSS of /proc/PID/status). */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Threads of a process (main + libuv pool + one per queue-pair worker). */
export function threadCountOf(pid: number): number {
  return readdirSync(`/proc/${pid}/task`).length;
}

/** Polls `cond` until it holds (or throws with `what` after timeoutMs). */
export async function waitFor<T>(what: string, cond: () => T | Promise<T>, timeoutMs = 5000): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Guest memory shared with serve: a memfd, mapped here too. */
export class SharedGuestMemory {
  readonly fd: number;
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;

  constructor(readonly size: number, name = 'hostile-guest') {
    this.fd = memfdCreate(name, size);
    this.buffer = mapFd(this.fd, 0, size, true);
    this.bytes = new Uint8Array(this.buffer);
  }

  dispose(): void {
    unmap(this.buffer);
    try {
      closeFd(this.fd);
    } catch {
      /* already closed */
    }
  }
}

export interface Reply {
  msg: VhostMessage;
}

export const HDR_LEN = 12;
/** VERSION_1 | PROTOCOL_FEATURES (+ ACCESS_PLATFORM when asked): what the tests negotiate. */
export function testFeatures(opts: { iommu?: boolean; eventIdx?: boolean; mrgRxbuf?: boolean } = {}): bigint {
  const bits: number[] = [VirtioFeature.VERSION_1, VirtioFeature.PROTOCOL_FEATURES];
  if (opts.iommu) bits.push(VirtioFeature.ACCESS_PLATFORM);
  if (opts.eventIdx) bits.push(VirtioFeature.EVENT_IDX);
  if (opts.mrgRxbuf) bits.push(NetFeature.MRG_RXBUF);
  return featureMask(...bits);
}

export class HostileFrontend {
  private readonly framer = new MessageFramer();
  private readonly rbuf = new Uint8Array(64 * 1024);
  private eof = false;
  private closed = false;
  /** Fds that came with replies (none are expected); closed on close(). */
  readonly receivedFds: number[] = [];

  private constructor(readonly fd: number) {}

  /**
   * Connects; serve accepts one front-end at a time and closes any second one at once, so
   * this retries until a connection survives a short probe.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<HostileFrontend> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      let fe: HostileFrontend | null = null;
      try {
        fe = new HostileFrontend(connectUnix(path));
        // GET_FEATURES always replies: a refused connection shows as EOF instead.
        const reply = await fe.call(F.GET_FEATURES, { kind: 'none' }, { needsReply: false, timeoutMs: 2000 });
        if (reply !== null) return fe;
      } catch {
        /* not accepted yet */
      }
      fe?.close();
      if (Date.now() > end) throw new Error(`could not connect to ${path}`);
      await sleep(20);
    }
  }

  /** Sends raw bytes (all of them), the fds riding on the first byte. */
  async sendRaw(bytes: Uint8Array, fds: readonly number[] = []): Promise<void> {
    let off = 0;
    let pending = fds;
    while (off < bytes.length) {
      const n = sendMessage(this.fd, bytes.subarray(off), pending);
      if (n < 0) {
        await sleep(1);
        continue;
      }
      off += n;
      pending = [];
    }
  }

  encode(request: number, body: Body, opts: { needsReply?: boolean; flags?: number } = {}): Uint8Array {
    return encodeMessage({ channel: 'frontend', request, body, needsReply: opts.needsReply, flags: opts.flags });
  }

  async send(request: number, body: Body, opts: { fds?: readonly number[]; needsReply?: boolean; flags?: number } = {}): Promise<void> {
    await this.sendRaw(this.encode(request, body, opts), opts.fds ?? []);
  }

  /** The next reply, or null at EOF (serve closed the connection). Throws after timeoutMs. */
  async readReply(timeoutMs = 5000): Promise<VhostMessage | null> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.framer.next();
      if (frame) {
        this.receivedFds.push(...frame.fds);
        return decodeMessage('frontend', frame.bytes, frame.fds);
      }
      if (this.eof) return null;
      let got;
      try {
        got = receiveMessage(this.fd, this.rbuf);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ECONNRESET') {
          this.eof = true;
          continue;
        }
        throw err;
      }
      if (got === null) {
        if (Date.now() > end) throw new Error(`no reply within ${timeoutMs} ms`);
        await sleep(1);
        continue;
      }
      if (got.bytes === 0) {
        this.eof = true;
        for (const fd of got.fds) closeFd(fd);
        continue;
      }
      this.framer.push(this.rbuf.subarray(0, got.bytes), got.fds);
    }
  }

  /**
   * Sends a request (with NEED_REPLY unless told otherwise) and returns the reply, or null
   * when serve closed the connection instead of answering.
   */
  async call(request: number, body: Body, opts: { fds?: readonly number[]; needsReply?: boolean; timeoutMs?: number } = {}): Promise<VhostMessage | null> {
    await this.send(request, body, { fds: opts.fds, needsReply: opts.needsReply ?? true });
    const reply = await this.readReply(opts.timeoutMs);
    if (reply !== null && reply.request !== request) {
      throw new Error(`reply to ${reply.name} while waiting for the reply to ${F[request]}`);
    }
    return reply;
  }

  /** REPLY_ACK value of a request (0 = success), or null when the connection was closed. */
  async ack(request: number, body: Body, fds: readonly number[] = []): Promise<bigint | null> {
    const reply = await this.call(request, body, { fds });
    if (reply === null) return null;
    if (reply.body.kind !== 'u64') throw new Error(`${reply.name} reply carried ${reply.body.kind}, not an ack`);
    return reply.body.value;
  }

  /** Like ack() but insists on success. */
  async ok(request: number, body: Body, fds: readonly number[] = []): Promise<void> {
    const v = await this.ack(request, body, fds);
    if (v !== 0n) throw new Error(`${F[request]} ${v === null ? 'closed the connection' : `was refused (ack ${v})`}`);
  }

  /** True once serve has closed the connection (reads and discards anything before EOF). */
  async isClosedByPeer(timeoutMs = 2000): Promise<boolean> {
    try {
      for (;;) if ((await this.readReply(timeoutMs)) === null) return true;
    } catch {
      return false;
    }
  }

  /** Feature negotiation up to SET_OWNER with REPLY_ACK (every later request can be acked). */
  async negotiate(opts: { features?: bigint; protocol?: bigint } = {}): Promise<void> {
    const features = opts.features ?? testFeatures();
    await this.send(F.SET_FEATURES, { kind: 'u64', value: features });
    const pf = await this.call(F.GET_PROTOCOL_FEATURES, { kind: 'none' }, { needsReply: false });
    if (pf === null || pf.body.kind !== 'u64') throw new Error('GET_PROTOCOL_FEATURES failed');
    const want = opts.protocol ?? featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.MQ, ProtocolFeature.BACKEND_REQ);
    await this.send(F.SET_PROTOCOL_FEATURES, { kind: 'u64', value: want & pf.body.value });
    await this.ok(F.SET_OWNER, { kind: 'none' });
  }

  async setMemTable(regions: MemoryRegion[], fds: readonly number[]): Promise<bigint | null> {
    return this.ack(F.SET_MEM_TABLE, { kind: 'memTable', regions }, fds);
  }

  /** SET_VRING_NUM/BASE/ADDR/KICK/CALL/ENABLE for one ring, each acked. Returns the ring's eventfds. */
  async startRing(index: number, ring: { size: number; desc: number; avail: number; used: number; base?: number }): Promise<{ kick: number; call: number }> {
    await this.ok(F.SET_VRING_NUM, { kind: 'vringState', index, num: ring.size });
    await this.ok(F.SET_VRING_BASE, { kind: 'vringState', index, num: ring.base ?? 0 });
    await this.ok(F.SET_VRING_ADDR, {
      kind: 'vringAddr', index, flags: 0, descUser: BigInt(ring.desc), usedUser: BigInt(ring.used), availUser: BigInt(ring.avail), logGuest: 0n,
    });
    const kick = eventfdCreate(0);
    const call = eventfdCreate(0);
    try {
      await this.ok(F.SET_VRING_KICK, { kind: 'u64', value: BigInt(index) }, [kick]);
      await this.ok(F.SET_VRING_CALL, { kind: 'u64', value: BigInt(index) }, [call]);
      await this.ok(F.SET_VRING_ENABLE, { kind: 'vringState', index, num: 1 });
    } catch (err) {
      closeFd(kick);
      closeFd(call);
      throw err;
    }
    return { kick, call };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [...this.receivedFds, ...this.framer.takeFds()]) {
      try {
        closeFd(fd);
      } catch {
        /* ignore */
      }
    }
    closeFd(this.fd);
  }
}

/** Guest memory layout of a one-queue-pair loopback device (no IOMMU). */
export const GUEST = {
  GPA: 0x100000,
  UVA: 0x7f0000000000,
  SIZE: 1 << 20,
};

export interface LoopbackRig {
  fe: HostileFrontend;
  mem: SharedGuestMemory;
  rx: SplitDriver;
  tx: SplitDriver;
  rxFds: { kick: number; call: number };
  txFds: { kick: number; call: number };
  /** First guest address free for buffers (after both rings). */
  bufBase: number;
  /** Offset in mem.bytes of a guest address. */
  off(gpa: number): number;
  /** Writable RX buffers; TX frames; close everything of this rig. */
  dispose(): void;
}

/** One region of a custom guest layout: guest/user address, size and offset in the memfd. */
export interface RigRegion {
  gpa: number;
  uva: number;
  size: number;
  offset: number;
}

export interface RigLayout {
  /** memfd size; bytes of it outside every region are never shared with serve as guest memory. */
  memSize: number;
  /** Rings (and bufBase) live in the first region. */
  regions: RigRegion[];
}

export const DEFAULT_LAYOUT: RigLayout = { memSize: GUEST.SIZE, regions: [{ gpa: GUEST.GPA, uva: GUEST.UVA, size: GUEST.SIZE, offset: 0 }] };

/**
 * A complete, well-behaved set-up: negotiate, the memory table, RX ring 0 and TX ring 1 of
 * `size` descriptors started. The caller posts buffers with rig.rx / rig.tx.
 * With `iommu`, ACCESS_PLATFORM is negotiated and ring addresses are IOVAs equal to the GPAs
 * (the caller sends the IOTLB updates; `beforeRings` runs before the rings are set up).
 */
export async function setupLoopback(socket: string, opts: {
  size?: number; fe?: HostileFrontend; layout?: RigLayout; iommu?: boolean;
  beforeRings?: (fe: HostileFrontend) => Promise<void>;
} = {}): Promise<LoopbackRig> {
  const size = opts.size ?? 64;
  const layout = opts.layout ?? DEFAULT_LAYOUT;
  const first = layout.regions[0]!;
  const fe = opts.fe ?? (await HostileFrontend.connect(socket));
  const mem = new SharedGuestMemory(layout.memSize);
  try {
    await fe.negotiate({ features: testFeatures({ iommu: opts.iommu }) });
    const v = await fe.setMemTable(
      layout.regions.map((r) => ({ guestAddr: BigInt(r.gpa), userAddr: BigInt(r.uva), size: BigInt(r.size), mmapOffset: BigInt(r.offset) })),
      layout.regions.map(() => mem.fd),
    );
    if (v !== 0n) throw new Error(`SET_MEM_TABLE refused (${v})`);
    await opts.beforeRings?.(fe);
    // Ring addresses: front-end VAs without an IOMMU, IOVAs (= GPAs here) with one.
    const ringAddr = (gpa: number): number => (opts.iommu ? gpa : gpa - first.gpa + first.uva);
    const view = mem.bytes.subarray(first.offset, first.offset + first.size);
    const rings = await startPairRings(fe, view, first.gpa, size, 0, first.gpa, ringAddr);
    return {
      fe, mem, ...rings,
      off: (gpa) => {
        const r = layout.regions.find((x) => gpa >= x.gpa && gpa < x.gpa + x.size);
        if (!r) throw new Error(`guest address 0x${gpa.toString(16)} is in no region`);
        return gpa - r.gpa + r.offset;
      },
      dispose() {
        fe.close();
        closeRingFds(rings);
        mem.dispose();
      },
    };
  } catch (err) {
    fe.close();
    mem.dispose();
    throw err;
  }
}

type PairRings = Pick<LoopbackRig, 'rx' | 'tx' | 'rxFds' | 'txFds' | 'bufBase'>;

function closeRingFds(rings: Pick<LoopbackRig, 'rxFds' | 'txFds'>): void {
  for (const fd of [rings.rxFds.kick, rings.rxFds.call, rings.txFds.kick, rings.txFds.call]) closeFd(fd);
}

/**
 * RX and TX split rings of queue pair `pair` (vrings 2 pair, 2 pair + 1) laid out from guest
 * address `base`, drivers over `view` (guest memory from `viewBase`), started with the
 * addresses `ringAddr` gives; buffers may follow from bufBase. A refused TX ring closes the
 * RX ring's fds.
 */
async function startPairRings(
  fe: HostileFrontend, view: Uint8Array, viewBase: number, size: number, pair: number, base: number, ringAddr: (gpa: number) => number,
): Promise<PairRings> {
  const rxLay = layoutRings(size, base);
  const txLay = layoutRings(size, Math.ceil(rxLay.end / 4096) * 4096);
  type Layout = typeof rxLay;
  const driver = (lay: Layout) => new SplitDriver({ memory: view, base: viewBase, size, descAddr: lay.descAddr, availAddr: lay.availAddr, usedAddr: lay.usedAddr });
  const start = (index: number, lay: Layout) => fe.startRing(index, { size, desc: ringAddr(lay.descAddr), avail: ringAddr(lay.availAddr), used: ringAddr(lay.usedAddr) });
  const rxFds = await start(2 * pair, rxLay);
  let txFds;
  try {
    txFds = await start(2 * pair + 1, txLay);
  } catch (err) {
    closeFd(rxFds.kick);
    closeFd(rxFds.call);
    throw err;
  }
  return { rx: driver(rxLay), tx: driver(txLay), rxFds, txFds, bufBase: Math.ceil(txLay.end / 4096) * 4096 };
}

/** A test frame: Ethernet header (dst, src, type) and a patterned payload. */
export function testFrame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
  for (let i = 14; i < len; i++) f[i] = (i * 31 + seed) & 0xff;
  return f;
}

/**
 * Queue pair `pair` (vrings 2 pair, 2 pair + 1) of the rig's device, started, with its rings and
 * buffers in its own quarter of the default layout's guest memory (pairs 1..3). dispose()
 * closes its ring fds only; the rig it came from owns the connection and the memory.
 */
export async function addLoopbackPair(rig: LoopbackRig, pair: number, size = 64): Promise<LoopbackRig> {
  if (!(pair >= 1 && pair <= 3)) throw new Error(`addLoopbackPair: pair ${pair} is not 1..3`);
  const uva = (gpa: number): number => gpa - GUEST.GPA + GUEST.UVA;
  const view = rig.mem.bytes.subarray(0, GUEST.SIZE);
  const rings = await startPairRings(rig.fe, view, GUEST.GPA, size, pair, GUEST.GPA + pair * (GUEST.SIZE / 4), uva);
  return { fe: rig.fe, mem: rig.mem, ...rings, off: rig.off, dispose: () => closeRingFds(rings) };
}

/**
 * Sends `count` frames through the loopback and waits until every one is back on RX with
 * its MACs swapped. Uses descriptors from bufBase on; returns when all came back.
 */
export async function loopbackFrames(rig: LoopbackRig, count: number, frameLen = 60, timeoutMs = 5000): Promise<void> {
  postLoopbackFrames(rig, count, frameLen);
  await collectLoopbackFrames(rig, count, frameLen, timeoutMs);
}

/** The first half of loopbackFrames: RX buffers and `count` TX frames posted, both rings kicked. */
export function postLoopbackFrames(rig: LoopbackRig, count: number, frameLen = 60): void {
  const slot = 2048;
  const rxBase = rig.bufBase;
  const txBase = rig.bufBase + count * slot;
  if (txBase + count * slot > GUEST.GPA + GUEST.SIZE) throw new Error('too many frames for the guest memory');
  for (let i = 0; i < count; i++) {
    if (rig.rx.addBuffer(rxBase + i * slot, slot, true) < 0) throw new Error('RX ring full');
  }
  rig.rx.publish();
  eventfdWrite(rig.rxFds.kick, 1);
  for (let i = 0; i < count; i++) {
    const f = testFrame(frameLen, i);
    const at = rig.off(txBase + i * slot);
    rig.mem.bytes.fill(0, at, at + HDR_LEN);
    rig.mem.bytes.set(f, at + HDR_LEN);
    if (rig.tx.addBuffer(txBase + i * slot, HDR_LEN + frameLen, false) < 0) throw new Error('TX ring full');
  }
  rig.tx.publish();
  eventfdWrite(rig.txFds.kick, 1);
}

/** The second half of loopbackFrames: waits for the `count` frames posted to come back, and drains TX. */
export async function collectLoopbackFrames(rig: LoopbackRig, count: number, frameLen = 60, timeoutMs = 5000): Promise<void> {
  const slot = 2048;
  const rxBase = rig.bufBase;
  let got = 0;
  const end = Date.now() + timeoutMs;
  while (got < count) {
    while (rig.rx.usedCount() > 0) {
      const head = rig.rx.takeUsed();
      const len = rig.rx.lastLen;
      if (len !== HDR_LEN + frameLen) throw new Error(`RX used entry ${head} has length ${len}, expected ${HDR_LEN + frameLen}`);
      got++;
    }
    if (got >= count) break;
    if (Date.now() > end) throw new Error(`only ${got} of ${count} frames came back`);
    await sleep(1);
  }
  // TX completions: drain so descriptors are free again for the next round.
  await waitFor('TX completions', () => {
    while (rig.tx.usedCount() > 0) rig.tx.takeUsed();
    return rig.tx.freeCount === rig.tx.size;
  });
  // Check the MAC swap on the last frame.
  const last = rig.off(rxBase + (count - 1) * slot) + HDR_LEN;
  const dst = rig.mem.bytes.subarray(last, last + 6);
  if (dst[5] !== 0x02) throw new Error('loopback frame came back without swapped MACs');
  for (const fd of [rig.rxFds.call, rig.txFds.call]) eventfdRead(fd);
}

export { HEADER_SIZE };

/** Waits until serve's fd count is back to at most `base` (closes happen asynchronously). */
export async function expectFdsBack(pid: number, base: number, what: string, timeoutMs = 3000): Promise<void> {
  let now = fdCountOf(pid);
  const end = Date.now() + timeoutMs;
  while (now > base && Date.now() < end) {
    await sleep(10);
    now = fdCountOf(pid);
  }
  if (now > base) throw new Error(`${what}: serve holds ${now} fds, ${now - base} more than the ${base} before`);
}

/** A well-behaved front-end still gets frames through: the proof that serve kept serving. */
export async function expectServing(socket: string, frames = 4): Promise<void> {
  const rig = await setupLoopback(socket);
  try {
    await loopbackFrames(rig, frames);
  } finally {
    rig.dispose();
  }
}

/** n eventfds (cheap fds to pass around); close them with closeFds. */
export function makeFds(n: number): number[] {
  return Array.from({ length: n }, () => eventfdCreate(0));
}

export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) closeFd(fd);
}

/** Raw header bytes (for sizes and flags the encoder refuses to produce). */
export function rawMessage(request: number, flags: number, size: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(12 + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  out.set(payload, 12);
  return out;
}

// Network namespaces for real-guest tests: the host end of `serve --net tap:IFNAME` lives in a
// namespace the test creates, so guest traffic never touches the machine's own interfaces.
//
//   const ns = createNetns();                       // ip netns add vit-<pid>-<n>, lo up
//   const serve = await startServe(['--net', 'tap:vit0'], { netns: ns.name });  // tap made inside ns
//   await ns.configure('vit0', '192.0.2.1/24');     // address + up
//   const sink = await startTcpSink(ns, '192.0.2.1', 5201);   // node TCP server inside ns, sha256s what it gets
//   ... ; await ns.destroy();
//
// Running serve itself under `ip netns exec` (rather than creating the tap in the root namespace
// and moving it) means the tap never exists outside the namespace. `ip netns exec` execs, so the
// child's pid is serve's own (useful for /proc/PID/fd and RSS).
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { LineLog, requireBinary, sleep, spawnLogged, terminate, type Exit } from '../peers/util.js';

export function ipBinary(): string {
  return requireBinary('ip', 'iproute2');
}

function ip(args: string[], allowFail = false): string {
  const r = spawnSync(ipBinary(), args, { encoding: 'utf8' });
  if (r.status !== 0 && !allowFail) throw new Error(`ip ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout ?? '';
}

const PREFIX = 'vit-t';

/** Removes namespaces left by an earlier test process that died (their pid is in the name). */
export function sweepStaleNamespaces(): void {
  for (const name of ip(['netns', 'list'], true).split('\n').map((l) => l.split(' ')[0] ?? '')) {
    const m = name.match(new RegExp(`^${PREFIX}(\\d+)-\\d+$`));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive) ip(['netns', 'del', name], true);
  }
}

export interface Netns {
  name: string;
  /** Waits for IFNAME to appear in the namespace, adds the address and brings it (and lo) up. */
  configure(ifname: string, cidr: string, timeoutMs?: number): Promise<void>;
  /** argv prefix that runs a command inside the namespace. */
  execPrefix(): string[];
  /** `ip -n NS ARGS` (throws on failure). */
  ip(args: string[]): string;
  /** Deletes the namespace (processes inside must be gone first; the tap goes with it). */
  destroy(): void;
}

let count = 0;
const live = new Set<string>();
let hooked = false;

export function createNetns(): Netns {
  ipBinary();
  if (count === 0) sweepStaleNamespaces();
  const name = `${PREFIX}${process.pid}-${++count}`;
  ip(['netns', 'add', name]);
  live.add(name);
  if (!hooked) {
    hooked = true;
    // A crashed test must not leave namespaces behind (their processes are SIGKILLed by killOnExit).
    process.once('exit', () => {
      for (const n of live) spawnSync(ipBinary(), ['netns', 'del', n]);
    });
  }
  ip(['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    execPrefix: () => [ipBinary(), 'netns', 'exec', name],
    ip: (args) => ip(['-n', name, ...args]),
    async configure(ifname, cidr, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      while (spawnSync(ipBinary(), ['-n', name, 'link', 'show', ifname]).status !== 0) {
        if (Date.now() > end) throw new Error(`${ifname} did not appear in netns ${name}`);
        await sleep(50);
      }
      ip(['-n', name, 'addr', 'add', cidr, 'dev', ifname]);
      ip(['-n', name, 'link', 'set', ifname, 'up']);
    },
    destroy() {
      if (!live.delete(name)) return;
      ip(['netns', 'del', name], true);
    },
  };
}

/** Names of the namespaces this process still holds (for leak assertions). */
export function liveNamespaces(): string[] {
  return [...live];
}

/** Is there any process whose network namespace is NS? (a leak check after cleanup) */
export function netnsPids(name: string): number[] {
  const out = spawnSync(ipBinary(), ['netns', 'pids', name], { encoding: 'utf8' });
  return (out.stdout ?? '').split('\n').filter(Boolean).map(Number);
}

// A TCP server inside the namespace: for every connection it hashes what arrives until EOF and
// prints `SINK sha256 <hex> bytes <n> ms <first byte to EOF>`. With `send` it instead writes that many bytes of
// pseudo-random data, closes, and once the receiver has closed too prints
// `SOURCE sha256 <hex> bytes <n> ms <connection to close>`.
// raw: a TCP sink (send = 0) or source (send > 0) listening on host:port, as busybox nc talks.
// http: the source answers one GET (busybox wget) with a header before its bytes.
// fetch: a client: GET /data from host:port (the guest's busybox httpd), retried until the guest
// listens, and the body sunk (a SINK line) as in raw.
const SINK_SCRIPT = `
const net = require('node:net'), crypto = require('node:crypto');
const [host, port, send, protocol] = process.argv.slice(1);
const sink = (s, header) => {
  const h = crypto.createHash('sha256');
  let n = 0;
  let first = 0n;
  let head = header ? Buffer.alloc(0) : null;
  s.on('data', (d) => {
    if (head !== null) {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\\r\\n\\r\\n');
      if (end < 0) return;
      if (!/^HTTP\\/1\\.[01] 200 /.test(head.toString('latin1'))) { console.log('SINK error HTTP status: ' + head.toString('latin1').split('\\r\\n')[0]); return s.destroy(); }
      d = head.subarray(end + 4);
      head = null;
      if (d.length === 0) return;
    }
    if (n === 0) first = process.hrtime.bigint();
    h.update(d);
    n += d.length;
  });
  s.on('end', () => {
    const ms = n === 0 ? 0 : Number(process.hrtime.bigint() - first) / 1e6;
    console.log('SINK sha256 ' + h.digest('hex') + ' bytes ' + n + ' ms ' + ms.toFixed(1));
    s.end();
  });
  s.on('error', (e) => console.log('SINK error ' + e.message));
};
if (protocol === 'fetch') {
  const fetch = () => {
    const s = net.connect(Number(port), host);
    let up = false;
    s.on('connect', () => { up = true; s.write('GET /data HTTP/1.0\\r\\n\\r\\n'); sink(s, true); });
    s.on('error', () => { if (!up) { s.destroy(); setTimeout(fetch, 200); } });
  };
  fetch();
  console.log('LISTENING');
} else {
const server = net.createServer((s) => {
  if (Number(send) > 0) {
    const h = crypto.createHash('sha256');
    const start = process.hrtime.bigint();
    let left = Number(send);
    let digest = '';
    const write = () => {
      while (left > 0) {
        const chunk = crypto.randomBytes(Math.min(left, 65536));
        left -= chunk.length;
        h.update(chunk);
        if (!s.write(chunk)) return s.once('drain', write);
      }
      digest = h.digest('hex');
      s.end();
    };
    if (protocol === 'http') {
      let request = '';
      const onRequest = (d) => {
        request += d.toString('latin1');
        if (!request.includes('\\r\\n\\r\\n')) return;
        s.off('data', onRequest);
        s.write('HTTP/1.0 200 OK\\r\\nContent-Length: ' + send + '\\r\\nConnection: close\\r\\n\\r\\n');
        write();
      };
      s.on('data', onRequest);
    } else {
      write();
      s.resume();
    }
    let failed = false;
    s.on('error', (e) => { failed = true; console.log('SOURCE error ' + e.message); });
    // Once the receiver has closed too: every byte is there, so ms is the whole transfer.
    s.on('close', () => {
      if (failed) return;
      if (!digest) return console.log('SOURCE error closed with ' + left + ' bytes unsent');
      console.log('SOURCE sha256 ' + digest + ' bytes ' + send + ' ms ' + (Number(process.hrtime.bigint() - start) / 1e6).toFixed(1));
    });
    return;
  }
  sink(s, false);
});
server.listen(Number(port), host, () => console.log('LISTENING'));
}
`;

export interface TcpPeer {
  child: ChildProcess;
  log: LineLog;
  /** The next `SINK|SOURCE sha256 ...` line after `from` (line index), parsed (ms: SINK first byte to EOF, SOURCE connection to close). */
  result(timeoutMs: number, from?: number): Promise<{ hex: string; bytes: number; ms?: number }>;
  stop(): Promise<Exit>;
}

/**
 * Starts the TCP peer inside `ns` and waits until it listens. `send` > 0: serve that many bytes
 * to each client. `protocol` (SINK_SCRIPT above): raw TCP as busybox nc talks, an HTTP source
 * for busybox wget, or `fetch`: a client that GETs /data from host:port (the guest) and sinks it.
 */
export async function startTcpPeer(ns: Netns, host: string, port: number, send = 0, protocol: 'raw' | 'http' | 'fetch' = 'raw'): Promise<TcpPeer> {
  const { child, log, exited } = spawnLogged([...ns.execPrefix(), process.execPath, '-e', SINK_SCRIPT, host, String(port), String(send), protocol], 'tcp');
  void exited.then((e) => log.close(`tcp peer exited code=${e.code} signal=${e.signal}`));
  await log.waitFor(/^LISTENING/, 10_000, 'tcp peer in netns');
  return {
    child,
    log,
    async result(timeoutMs, from = 0) {
      const m = await log.waitFor(/^(?:SINK|SOURCE) (?:sha256 ([0-9a-f]{64}) bytes (\d+)(?: ms ([\d.]+))?|error (.*))/, timeoutMs, 'tcp peer', from);
      if (m[4] !== undefined) throw new Error(`tcp peer: ${m[4]}`);
      return { hex: m[1]!, bytes: Number(m[2]), ...(m[3] !== undefined ? { ms: Number(m[3]) } : {}) };
    },
    stop: () => terminate(child, exited, 'SIGTERM', 2000),
  };
}

/** Mappings of memfd files (guest memory) in a process (from /proc/PID/maps). */
export function memfdMappings(pid: number): number {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => l.includes('/memfd:')).length;
}

import { Command, Flags } from '@oclif/core';
import { dirname, join } from 'node:path';
import { VhostUserServer } from '../src/device/server.js';
import { IOTLB_READERS, type IotlbReader } from '../src/device/device-iotlb.js';
import { ControlServer } from '../src/control/control-server.js';
import { LOOPBACK_FULL, type LoopbackFull } from '../src/net/endpoint.js';
import { servePathProblems } from '../src/serve/socket-paths.js';
import { strategyNames } from '../src/iotlb/registry.js';
import { parseNetMode, NET_MODES } from '../src/serve/net-mode.js';
import { statsTable, type StatsSnapshot } from '../src/serve/stats-table.js';
import { TraceWriter } from '../src/trace/writer.js';
import { closeFd, setInterfaceMtu } from '../src/sys/index.js';
import { DEFAULT_BUSY_POLL_US } from '../src/datapath/contract.js';
import { outputPathProblem } from '../src/cli/paths.js';
import { allowedCpus, keepOffWorkerCpus, parseCpuList } from '../src/serve/placement.js';
import { defaultWorkers } from '../src/device/queue-pairs.js';

export default class Serve extends Command {
  static override summary = 'Run a vhost-user-net backend with device-IOTLB support.';
  static override description = 'Serves one front-end at a time on each --socket (QEMU -netdev vhost-user, or DPDK '
    + 'virtio-user). Every frame the guest sends goes to --net: loopback (back to the guest, MACs swapped), sink (count '
    + 'and drop), source (the back-end generates frames for the guest at full rate) or tap:IFNAME (a Linux tap device).';

  static override examples = [
    '<%= config.bin %> serve --socket /tmp/vhost.sock --net loopback',
    '<%= config.bin %> serve --socket /tmp/vhost.sock --client --net tap:vit0 --iotlb-strategy coalescing',
    '<%= config.bin %> serve --socket /tmp/vhost.sock --queues 2 --net sink --stats-interval 1',
  ];

  static override flags = {
    socket: Flags.string({ char: 's', summary: 'vhost-user socket path (repeat for several devices)', required: true, multiple: true }),
    client: Flags.boolean({ summary: 'connect to a front-end that listens (QEMU server=on) and reconnect when it restarts' }),
    queues: Flags.integer({ summary: 'queue pairs offered', default: 1, min: 1, max: 16 }),
    net: Flags.string({ summary: `where frames go: ${NET_MODES.join(' | ')}`, default: 'loopback' }),
    mtu: Flags.integer({ summary: 'with --net tap: the tap\'s MTU from the start, and the most a front-end may set (NET_SET_MTU; QEMU\'s host_mtu)', min: 68, max: 65535 }),
    'frame-size': Flags.integer({ summary: 'frame size for --net source', default: 64 }),
    'frame-count': Flags.integer({ summary: 'with --net source, stop after this many frames per queue pair (0 = never)', default: 0, min: 0 }),
    'loopback-full': Flags.string({
      summary: 'with --net loopback, a frame the RX ring has no room for: hold it (the guest\'s TX waits, counted as "held") or drop it (counted as an RX drop)',
      options: [...LOOPBACK_FULL], default: 'hold',
    }),
    'iotlb-strategy': Flags.string({ summary: 'IOTLB cache strategy', options: strategyNames(), default: 'coalescing' }),
    'iotlb-batch-misses': Flags.boolean({ summary: 'on a miss, walk the rest of the burst and send every distinct miss at once, every page of a chain the device reads (--no-iotlb-batch-misses: only the miss the burst stopped at)', default: true, allowNo: true }),
    'iotlb-prefetch': Flags.integer({ summary: 'ask for the aligned range of this many bytes around a miss (0 = the page)', default: 0, min: 0 }),
    'iotlb-reuse': Flags.string({
      summary: 'keep a translation until the front-end invalidates it (cached), or forget all of them after every burst that returned buffers (per-burst): correct for guests whose IOMMU flushes QEMU does not forward (Linux\'s default lazy mode behind QEMU before 8.0, docs/peers.md), at one miss per buffer',
      options: ['cached', 'per-burst'], default: 'cached',
    }),
    'busy-poll-us': Flags.integer({
      summary: `how long a worker keeps polling its rings with no work before it sleeps (-1 = never, as DPDK's lcores; default ${DEFAULT_BUSY_POLL_US} when every worker has a CPU of its own, else 0)`,
      min: -1,
    }),
    workers: Flags.integer({
      summary: 'worker threads per device; a queue pair goes to the worker running fewest pairs (round-robin when equal) and moves when re-enabled, each worker serving its pairs burst by burst (default: min(--queues, CPUs))',
      min: 1, max: 16,
    }),
    cpus: Flags.string({
      summary: 'CPUs for the workers, e.g. 2-3 or 1,3: worker k pinned to the k-th; serve\'s other threads are kept off them while other CPUs remain',
    }),
    'iotlb-reader': Flags.string({
      summary: 'which thread reads and acks IOTLB UPDATE/INVALIDATE while the rings run: a reader thread of its own, the queue-pair worker, the control thread, or auto (the worker when serve has no CPU to spare, else the reader thread)',
      options: [...IOTLB_READERS], default: 'auto',
    }),
    trace: Flags.string({ summary: 'record messages and translations into this trace file' }),
    'trace-translations': Flags.boolean({ summary: 'with --trace, also record every datapath translation', default: true, allowNo: true }),
    control: Flags.string({ summary: 'control socket for inspect (default: SOCKET.ctl beside the first --socket)' }),
    'stats-interval': Flags.integer({ summary: 'print queue statistics every S seconds (0 = only at exit)', default: 0, min: 0 }),
    quiet: Flags.boolean({ char: 'q', summary: 'log only warnings and errors' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Serve);
    const log = (level: string, text: string): void => {
      if (flags.quiet && level === 'info') return;
      process.stderr.write(`[${new Date().toISOString()}] ${level}: ${text}\n`);
    };
    let net;
    try {
      net = parseNetMode(flags.net, flags['frame-size'], flags['frame-count'], flags['loopback-full'] as LoopbackFull, flags.queues);
    } catch (err) {
      this.error((err as Error).message, { exit: 2 });
    }
    if (flags.mtu !== undefined) {
      if (net.kind !== 'tap') this.error('--mtu needs --net tap:IFNAME (only a tap has an MTU)', { exit: 2 });
      try {
        setInterfaceMtu(net.name, flags.mtu);
      } catch (err) {
        for (const fd of net.fds) closeFd(fd);
        this.error(`--mtu ${flags.mtu}: the tap ${net.name} refused it: ${(err as Error).message}`, { exit: 2 });
      }
    }
    if (net.kind === 'tap' && flags.socket.length > 1) {
      for (const fd of net.fds) closeFd(fd);
      this.error('--net tap serves exactly one socket (one tap queue per queue pair)', { exit: 2 });
    }
    let cpus: number[] = [];
    // Counted before --cpus narrows this thread's affinity: what the workers and the rest share.
    const allowed = allowedCpus();
    if (flags.cpus !== undefined) {
      try {
        cpus = parseCpuList(flags.cpus);
        const outside = cpus.filter((cpu) => !allowed.includes(cpu));
        if (outside.length > 0) throw new Error(`--cpus: CPU ${outside.join(',')} is not among the CPUs serve may use (${allowed.join(',')})`);
      } catch (err) {
        this.error((err as Error).message, { exit: 2 });
      }
    }
    const workers = flags.workers ?? defaultWorkers(flags.queues);
    if (workers > flags.queues) log('warn', `--workers ${workers} with ${flags.queues} queue pair(s): ${workers - flags.queues} worker(s) would have nothing to serve`);
    if (cpus.length > 0) {
      const rest = keepOffWorkerCpus(cpus.slice(0, workers), allowed);
      log('info', `workers on CPU ${cpus.slice(0, workers).join(',')}; ${rest === null ? 'no CPU left for the other threads: they share the workers\' CPUs' : `other threads on CPU ${rest.join(',')}`}`);
    }
    const controlPath = flags.control ?? join(dirname(flags.socket[0]), `${flags.socket[0].split('/').pop()}.ctl`);
    const problems = servePathProblems(flags.socket, controlPath, flags.client);
    if (problems.length > 0) this.error(problems.join('\n'), { exit: 2 });
    const traceProblem = flags.trace === undefined ? null : outputPathProblem('--trace', flags.trace);
    if (traceProblem) this.error(traceProblem, { exit: 2 });
    let trace: TraceWriter | null = null;
    try {
      trace = flags.trace ? TraceWriter.open(flags.trace) : null;
    } catch (err) {
      this.error(`--trace ${flags.trace}: ${(err as Error).message}`, { exit: 2 });
    }
    const servers = flags.socket.map((socketPath) => new VhostUserServer({
      socketPath, client: flags.client, trace, queuePairs: flags.queues, net, strategy: flags['iotlb-strategy'],
      batchMisses: flags['iotlb-batch-misses'], prefetch: flags['iotlb-prefetch'],
      forgetAfterBurst: flags['iotlb-reuse'] === 'per-burst', busyPollUs: flags['busy-poll-us'],
      iotlbReader: flags['iotlb-reader'] as IotlbReader, workers, cpus, usableCpus: allowed.length, maxMtu: flags.mtu,
      traceTranslations: trace !== null && flags['trace-translations'],
      log: (level, text) => log(level, `${socketPath}: ${text}`),
    }));
    const control = new ControlServer(controlPath, { server: servers[0], socketPath: flags.socket[0], strategy: flags['iotlb-strategy'] }, log);
    // Control socket first, then the vhost sockets: a failure leaves nothing listening behind.
    let failed: string | null = null;
    try {
      await control.listen();
    } catch (err) {
      failed = `--control ${controlPath}: ${(err as Error).message}`;
    }
    for (const server of servers) {
      if (failed) break;
      try {
        server.start();
      } catch (err) {
        failed = `--socket ${server.options.socketPath}: ${(err as Error).message}`;
      }
    }
    if (failed) {
      await Promise.all(servers.map((s) => s.stop()));
      await control.close().catch(() => undefined);
      trace?.close();
      this.error(failed, { exit: 1 });
    }
    log('info', `control socket ${controlPath}`);
    const snapshots = new Map<string, StatsSnapshot>();
    const printStats = (final: boolean): void => {
      const when = new Date().toISOString();
      for (const server of servers) {
        const path = server.options.socketPath;
        const title = final ? `${path}: totals at exit (${when})` : `${path}: ${when}`;
        const { text, snapshot } = statsTable(title, server.device, snapshots.get(path) ?? null, !final);
        snapshots.set(path, snapshot);
        if (text !== null) process.stdout.write(`${text}\n`);
      }
    };
    const timer = flags['stats-interval'] > 0 ? setInterval(() => printStats(false), flags['stats-interval'] * 1000) : null;
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    if (timer) clearInterval(timer);
    printStats(true);
    await control.close();
    await Promise.all(servers.map((s) => s.stop()));
    trace?.close();
    if (net.kind === 'tap') for (const fd of net.fds) closeFd(fd);
  }
}

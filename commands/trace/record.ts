import { Command, Flags } from '@oclif/core';
import { RecordingProxy } from '../../src/trace/proxy.js';
import { TraceWriter } from '../../src/trace/writer.js';
import { listenPathProblem, outputPathProblem } from '../../src/cli/paths.js';

export default class TraceRecord extends Command {
  static override summary = 'Record a vhost-user session: a transparent proxy between a front-end and a back-end.';
  static override description = 'The front-end (QEMU, virtio-user) connects to --listen; for each connection the proxy '
    + 'connects to the back-end at --connect (DPDK vhost, serve) and relays every message and fd both ways unchanged, '
    + 'writing each to the trace. The back-end channel (SET_BACKEND_REQ_FD) is spliced and recorded too. Runs until '
    + 'SIGINT/SIGTERM, then flushes and closes the trace.';

  static override examples = [
    '<%= config.bin %> <%= command.id %> --listen /tmp/vhost-proxy.sock --connect /tmp/vhost.sock -o session.vhtrace',
    '# then point QEMU at the proxy: -chardev socket,id=c0,path=/tmp/vhost-proxy.sock',
  ];

  static override flags = {
    listen: Flags.string({ char: 'l', summary: 'socket path the front-end connects to', required: true }),
    connect: Flags.string({ summary: 'socket path of the back-end', required: true }),
    output: Flags.string({ char: 'o', summary: 'trace file to write', required: true }),
    'stall-timeout': Flags.integer({ summary: 'close a connection whose peer accepts nothing for this many ms', default: 10_000, min: 100 }),
    quiet: Flags.boolean({ char: 'q', summary: 'do not log connections' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(TraceRecord);
    const problem = outputPathProblem('--output', flags.output) ?? listenPathProblem('--listen', flags.listen);
    if (problem) this.error(problem, { exit: 2 });
    const writer = TraceWriter.open(flags.output);
    const log = flags.quiet ? undefined : (line: string) => this.logToStderr(`trace record: ${line}`);
    const proxy = new RecordingProxy({ listen: flags.listen, connect: flags.connect, writer, log, stallTimeoutMs: flags['stall-timeout'] });
    try {
      proxy.start();
    } catch (err) {
      writer.close();
      this.error(`cannot listen on ${flags.listen}: ${(err as Error).message}`, { exit: 2 });
    }
    // Flush now and then so a killed recorder loses at most a second.
    const flusher = setInterval(() => writer.flush(), 1000);
    await new Promise<void>((resolve) => {
      const stop = (signal: string): void => {
        log?.(`${signal}: closing`);
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    clearInterval(flusher);
    await proxy.close();
    writer.close();
    if (!flags.quiet) this.logToStderr(`trace record: ${proxy.recorded} messages written to ${flags.output}`);
  }
}

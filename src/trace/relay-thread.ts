/**
 * The thread `trace record` relays in (relay.ts; its host is proxy.ts). It blocks in poll(2)
 * on every relayed socket and on an eventfd the host writes when its inbox has something:
 * a new connection, a flush, shutdown. Records are encoded here and handed to the host's
 * writer in chunks (every RECORDS_EVERY_MS or so, on a flush, and before a connection's close
 * is reported), so the host's event loop wakes for chunks, not for messages. After shutdown
 * the thread ends; the host waits for its exit.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { eventfdRead } from '../sys/index.js';
import { Relay } from './relay.js';
import { TraceWriter } from './writer.js';

export interface RelaySetup {
  inbox: MessagePort;
  wakeFd: number;
  stallTimeoutMs: number;
  /** The host writer's time zero (process.hrtime.bigint()). */
  startHr: bigint;
}

/** Host → thread, through `inbox` (then a write to `wakeFd`). */
export type RelayCommand =
  | { type: 'connection'; id: number; front: number; back: number }
  | { type: 'flush'; token: number }
  | { type: 'shutdown' };

/** Thread → host. */
export type RelayEvent =
  | { type: 'records'; bytes: Uint8Array; records: number }
  | { type: 'closed'; id: number; reason: string; messages: number }
  | { type: 'log'; line: string }
  | { type: 'flushed'; token: number };

/** Records wait in this thread's buffer at most about this long before the host gets them. */
const RECORDS_EVERY_MS = 200;

const setup = workerData as RelaySetup;
const post = (event: RelayEvent, transfer: ArrayBuffer[] = []): void => parentPort!.postMessage(event, transfer);
const writer = TraceWriter.detached(setup.startHr, (bytes, records) => post({ type: 'records', bytes, records }, [bytes.buffer as ArrayBuffer]));
let lastRecords = performance.now();

const relay = new Relay({
  record: (connection, channel, direction, bytes, fds) => writer.writeMessage({ timeNs: writer.elapsedNs(), connection, channel, direction, bytes, fds }),
  closed: (id, reason, messages) => {
    writer.flush(); // the host sees a connection's records before its close
    post({ type: 'closed', id, reason, messages });
  },
  log: (line) => post({ type: 'log', line }),
}, setup.stallTimeoutMs, setup.wakeFd);

/** Takes what the host sent; false once it asked to shut down. */
function takeCommands(): boolean {
  eventfdRead(setup.wakeFd);
  for (let got = receiveMessageOnPort(setup.inbox); got; got = receiveMessageOnPort(setup.inbox)) {
    const command = got.message as RelayCommand;
    if (command.type === 'connection') relay.add(command.id, command.front, command.back);
    else if (command.type === 'flush') {
      writer.flush();
      post({ type: 'flushed', token: command.token });
    } else {
      relay.closeAll('proxy shutting down');
      writer.flush();
      return false;
    }
  }
  return true;
}

try {
  for (;;) {
    if (relay.poll() && !takeCommands()) break;
    const now = performance.now();
    if (now - lastRecords >= RECORDS_EVERY_MS) {
      writer.flush();
      lastRecords = now;
    }
  }
} catch (err) {
  // The sockets and passed fds are this process's: a thread that dies holding them leaks them,
  // and the host cannot close them safely (it cannot tell which numbers were reused since).
  post({ type: 'log', line: `relay thread failed, closing every connection: ${(err as Error).stack ?? err}` });
  try {
    relay.closeAll('the relay thread failed'); // closes every fd even if a report throws
    writer.flush();
  } catch {
    // reports or records lost; the fds are closed either way
  }
} finally {
  setup.inbox.close();
}

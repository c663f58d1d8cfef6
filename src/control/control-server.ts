/**
 * The control socket `inspect` talks to: JSON lines over a Unix socket (mode 0600).
 * Request:  {"id": 1, "method": "state", "params": {"entries": true, "queue": 1, "limit": 20}}
 *           {"id": 2, "method": "clear-iotlb", "params": {"queue": 1}}
 * Response: {"id": 1, "result": {...}}  or  {"id": 1, "error": "what was wrong"}
 * A line over MAX_REQUEST bytes gets an error and the connection is closed; nothing a client
 * sends can reach the data path except the one action, clear-iotlb.
 */
import { chmodSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { VhostUserServer } from '../device/server.js';
import { deviceState, type StateRequest } from './state.js';

export const MAX_REQUEST = 64 * 1024;

export interface ControlTarget {
  server: VhostUserServer;
  socketPath: string;
  strategy: string;
}

export class ControlServer {
  private readonly server: Server;
  private readonly clients = new Set<Socket>();

  constructor(private readonly path: string, private readonly target: ControlTarget, private readonly log: (level: string, text: string) => void) {
    this.server = createServer((socket) => this.serve(socket));
  }

  async listen(): Promise<void> {
    try {
      unlinkSync(this.path);
    } catch {
      // no stale socket
    }
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => resolve());
    });
    chmodSync(this.path, 0o600);
  }

  private serve(socket: Socket): void {
    this.clients.add(socket);
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_REQUEST && !buffered.includes('\n')) {
        socket.end(JSON.stringify({ id: null, error: `request longer than ${MAX_REQUEST} bytes` }) + '\n');
        buffered = '';
        return;
      }
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.trim() !== '') void this.answer(socket, line);
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.clients.delete(socket));
  }

  private async answer(socket: Socket, line: string): Promise<void> {
    let id: unknown = null;
    let response: object;
    try {
      const request = JSON.parse(line) as { id?: unknown; method?: unknown; params?: unknown };
      if (typeof request !== 'object' || request === null) throw new Error('request must be a JSON object');
      id = request.id ?? null;
      response = { id, result: await this.dispatch(request.method, request.params ?? {}) };
    } catch (err) {
      response = { id, error: (err as Error).message };
    }
    if (!socket.destroyed) socket.write(JSON.stringify(response) + '\n');
  }

  private async dispatch(method: unknown, params: unknown): Promise<unknown> {
    if (typeof params !== 'object' || params === null) throw new Error('params must be an object');
    const p = params as Record<string, unknown>;
    switch (method) {
      case 'state': {
        const request: StateRequest = {};
        if (p.entries !== undefined) request.entries = Boolean(p.entries);
        if (p.queue !== undefined) request.queue = this.queueIndex(p.queue);
        if (p.limit !== undefined) {
          if (!Number.isInteger(p.limit) || (p.limit as number) < 0) throw new Error('limit must be a non-negative integer');
          request.limit = p.limit as number;
        }
        return deviceState(this.target.server, this.target.socketPath, this.target.strategy, request);
      }
      case 'clear-iotlb': {
        const queue = this.queueIndex(p.queue);
        await this.target.server.device.clearIotlb(queue);
        this.log('info', `control: cleared the IOTLB cache of vring ${queue}`);
        return { cleared: queue };
      }
      default:
        throw new Error(`unknown method ${JSON.stringify(method)}; methods: state, clear-iotlb`);
    }
  }

  private queueIndex(value: unknown): number {
    const count = this.target.server.device.vrings.length;
    if (!Number.isInteger(value) || (value as number) < 0 || (value as number) >= count) {
      throw new Error(`queue must be an integer in 0..${count - 1}`);
    }
    return value as number;
  }

  async close(): Promise<void> {
    for (const client of this.clients) client.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A client for the control socket (see control-server.ts for the protocol). */
import { connect } from 'node:net';

export async function controlRequest(path: string, method: string, params: object = {}, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let buffered = '';
    let answered = false;
    const hint = 'is it serve\'s control socket (SOCKET.ctl, named in serve\'s log), not a vhost-user socket?';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from ${path} within ${timeoutMs} ms: ${hint}`));
    }, timeoutMs);
    socket.on('close', () => {
      if (answered) return;
      clearTimeout(timer);
      reject(new Error(`${path} closed the connection without an answer: ${hint}`));
    });
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(JSON.stringify({ id: 1, method, params }) + '\n'));
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      answered = true;
      socket.end();
      try {
        const response = JSON.parse(buffered.slice(0, newline)) as { result?: unknown; error?: string };
        if (response.error !== undefined) reject(new Error(`${path}: ${response.error}`));
        else resolve(response.result);
      } catch (err) {
        reject(new Error(`${path}: unreadable answer: ${(err as Error).message}`));
      }
    });
    socket.on('error', (err) => {
      answered = true; // reported here, not again at 'close'
      clearTimeout(timer);
      reject(new Error(`cannot reach the control socket ${path}: ${err.message} (is serve running? see --control)`));
    });
  });
}

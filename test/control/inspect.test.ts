// inspect against a serve that DPDK virtio-user is really using: the reported state must match
// what the peer negotiated, counters must move with traffic, and the control socket must shrug
// off hostile clients.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestpmd, type Testpmd } from '../peers/dpdk.js';
import { repoRoot } from '../peers/util.js';
import { expectFdsBack, fdCountOf, waitFor } from '../support/hostile-frontend.js';
import { startServe, total, type ServeProcess } from '../support/serve.js';
import { controlRequest } from '../../src/control/control-client.js';
import { loopFrames, startPair, stopPair } from '../iotlb-e2e/helpers.js';

const run = promisify(execFile);

/** Sends raw bytes to the control socket and collects whatever comes back until it closes or goes quiet. */
function rawExchange(path: string, payload: string, waitMs = 500): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let got = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (d: string) => (got += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
    setTimeout(() => socket.destroy(), waitMs);
  });
}

describe('inspect with DPDK virtio-user as the peer', () => {
  let serve: ServeProcess;
  let pmd: Testpmd;

  before(async () => {
    serve = await startServe(['--net', 'sink']);
    pmd = startTestpmd({
      role: 'virtio-user', socket: serve.socket, forwardMode: 'txonly',
      extraEal: ['--log-level=pmd.net.virtio.*:debug'], extraArgs: ['--txpkts=64'],
    });
    await pmd.waitForLinkUp();
    await pmd.waitForStats((s) => (s[0]?.txPackets ?? 0) > 0);
  });

  after(async () => {
    await pmd?.stop();
    await serve?.stop();
  });

  it('reports the features the peer set, its rings and its memory', async () => {
    const line = pmd.lines.find((l) => /set features: 0x[0-9a-f]+/.test(l));
    assert.ok(line, 'testpmd did not log the features it set');
    const peerFeatures = BigInt(line.match(/set features: (0x[0-9a-f]+)/)![1]);
    const state = await serve.state();
    assert.equal(state.connected, true);
    // testpmd logs the virtio bits; on the wire virtio-user adds PROTOCOL_FEATURES (bit 30).
    const ours = BigInt(state.features.bits);
    assert.equal(ours & ~(1n << 30n), peerFeatures);
    assert.ok(state.features.names.includes('PROTOCOL_FEATURES'));
    assert.ok(state.features.names.includes('VERSION_1'));
    assert.ok(state.protocolFeatures.names.includes('REPLY_ACK'));
    assert.ok(state.memory.length >= 1, 'no memory region reported');
    const tx = state.queues.find((q) => q.index === 1)!;
    assert.equal(tx.running, true);
    assert.ok(tx.size > 0 && (tx.size & (tx.size - 1)) === 0, `tx ring size ${tx.size}`);
    assert.equal(tx.broken, null);
  });

  it('counters move with traffic, also while many clients ask at once', async () => {
    const first = total(await serve.state(), 'tx');
    const answers = await Promise.all(Array.from({ length: 40 }, () => serve.state({ entries: true })));
    // Every one of the 40 is a whole answer: the device as it is, with the worker's own view of
    // the running TX ring (its snapshot reached this request) and counters that only grow.
    answers.forEach((a, i) => {
      assert.equal(a.socket, serve.socket, `answer ${i}: socket`);
      assert.equal(a.connected, true, `answer ${i}: connected`);
      const tx = a.queues.find((q) => q.index === 1);
      assert.ok(tx, `answer ${i}: no TX queue in ${JSON.stringify(a.queues)}`);
      assert.equal(tx.running, true, `answer ${i}: TX ring not running`);
      assert.ok(tx.availIdx !== null && tx.usedIdx !== null, `answer ${i}: no worker snapshot of the TX ring: ${JSON.stringify(tx)}`);
      assert.ok(total(a, 'tx') >= first, `answer ${i}: tx packets went back from ${first} to ${total(a, 'tx')}`);
    });
    // The traffic keeps going: wait (bounded) for the counter to pass what was read first.
    const second = await waitFor('tx packets to move past the first reading', async () => {
      const now = total(await serve.state(), 'tx');
      return now > first ? now : 0;
    }, 10_000);
    assert.ok(second > first, `tx packets did not move: ${first} -> ${second}`);
  });

  it('the inspect command prints the same state, as JSON and for people', async () => {
    const bin = join(repoRoot(), 'bin', 'run.js');
    const json = await run(process.execPath, [bin, 'inspect', '--control', serve.control, '--json']);
    const state = JSON.parse(json.stdout);
    assert.equal(state.socket, serve.socket);
    assert.ok(state.features.names.includes('VERSION_1'));
    const text = await run(process.execPath, [bin, 'inspect', '--control', serve.control], { env: { ...process.env, NO_COLOR: '1' } });
    assert.match(text.stdout, /features 0x[0-9a-f]+: .*VERSION_1/);
    assert.match(text.stdout, /1 tx/);
  });

  it('inspect --watch into a pipe writes time-stamped snapshots, no terminal control codes', async () => {
    const bin = join(repoRoot(), 'bin', 'run.js');
    const child = spawn(process.execPath, [bin, 'inspect', '--control', serve.control, '--watch', '--interval', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    // Two snapshots at --interval 1 take about a second; wait for them, not for a fixed time.
    await waitFor('two --watch snapshots', () => (out.match(/^--- \d{4}-\d\d-\d\dT/gm) ?? []).length >= 2, 15_000)
      .catch((err: Error) => assert.fail(`${err.message}; got: ${out.slice(0, 500)}`));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    await exited;
    assert.ok((out.match(/^--- \d{4}-\d\d-\d\dT/gm) ?? []).length >= 2, out.slice(0, 500));
    assert.doesNotMatch(out, /\x1b\[/);
  });

  it('malformed, oversized and abandoned control requests get errors and leak nothing', async () => {
    const pid = serve.child.pid!;
    const before = fdCountOf(pid);
    const bad = await rawExchange(serve.control, 'this is not json\n');
    assert.match(bad, /"error":/);
    const unknown = await rawExchange(serve.control, JSON.stringify({ id: 7, method: 'reboot' }) + '\n');
    assert.match(unknown, /unknown method/);
    const badQueue = await rawExchange(serve.control, JSON.stringify({ id: 8, method: 'clear-iotlb', params: { queue: 99 } }) + '\n');
    assert.match(badQueue, /queue must be an integer/);
    const huge = await rawExchange(serve.control, 'x'.repeat(200_000), 1500);
    assert.match(huge, /request longer than/);
    for (let i = 0; i < 50; i++) {
      await new Promise<void>((resolve) => {
        const s = connect(serve.control, () => {
          s.write('{"id": 1, "meth');
          s.destroy();
          resolve();
        });
      });
    }
    // A client's connect completes from the listen backlog, before serve accepts it: serve may
    // still accept some of the 50 after its count has dipped. A request answered after them
    // (accepts are in order) marks the point where all have been accepted.
    const state = (await controlRequest(serve.control, 'state')) as { connected: boolean };
    assert.equal(state.connected, true, 'serve stopped serving after hostile control clients');
    // Closes happen asynchronously: wait (bounded) for serve's fd count to come back.
    await expectFdsBack(pid, before, 'fd count of serve after hostile control clients');
  });
});

describe('inspect across front-end connections', () => {
  it('a ring\'s miss round trips survive its worker: counted before the front-end leaves, still there after', async () => {
    const pair = await startPair([], { iommu: 'dynamic' });
    try {
      const looped = await loopFrames(pair.fe, 50);
      assert.equal(looped.received, 50);
      const during = await pair.serve.state();
      const before = during.queues.map((q) => q.roundTrips?.miss.count ?? 0);
      assert.ok(before.every((n) => n > 0), `miss round trips while connected: ${before.join(' / ')}`);
      pair.fe.close();
      await waitFor('disconnect', async () => !(await pair.serve.state()).connected);
      const after = (await pair.serve.state()).queues.map((q) => q.roundTrips?.miss.count ?? 0);
      assert.deepEqual(after, before, 'the finished worker\'s round trips are kept');
    } finally {
      await stopPair(pair);
    }
  });
});

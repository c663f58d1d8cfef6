/**
 * serve --mtu with a real tap in a namespace: the tap has that MTU before any front-end
 * connects, a front-end's NET_SET_MTU above it is refused, one below it is applied; --mtu
 * without a tap is a usage error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrontendRequest as F, ProtocolFeature, featureMask } from '../../src/protocol/index.js';
import { createNetns } from '../support/netns.js';
import { startServe } from '../support/serve.js';
import { HostileFrontend, waitFor } from '../support/hostile-frontend.js';

const mtuOf = (ns: ReturnType<typeof createNetns>, tap: string): number => Number(/ mtu (\d+)/.exec(ns.ip(['link', 'show', tap]))?.[1]);

test('serve --mtu 9000: the tap starts at 9000; NET_SET_MTU above it is refused, below it applied', async () => {
  const ns = createNetns();
  const serve = await startServe(['--net', 'tap:vitm0', '--mtu', '9000', '--quiet'], { prefix: ns.execPrefix() });
  try {
    assert.equal(mtuOf(ns, 'vitm0'), 9000);
    const fe = await HostileFrontend.connect(serve.socket);
    try {
      await fe.negotiate({ protocol: featureMask(ProtocolFeature.REPLY_ACK, ProtocolFeature.NET_MTU) });
      assert.equal(await fe.ack(F.NET_SET_MTU, { kind: 'u64', value: 9001n }), 1n, 'above --mtu');
      assert.equal(mtuOf(ns, 'vitm0'), 9000);
      assert.equal(await fe.ack(F.NET_SET_MTU, { kind: 'u64', value: 1500n }), 0n);
      assert.equal(mtuOf(ns, 'vitm0'), 1500);
      assert.equal((await serve.state()).mtu, 1500);
    } finally {
      fe.close();
    }
    await waitFor('disconnect', async () => !(await serve.state()).connected);
    assert.ok(serve.log.lines.some((l) => /NET_SET_MTU 9001: above the tap's MTU 9000 \(serve --mtu\)/.test(l)), serve.log.lines.slice(-5).join('\n'));
  } finally {
    await serve.stop();
    ns.destroy();
  }
});

test('serve --mtu without a tap is refused at start', async () => {
  await assert.rejects(startServe(['--net', 'loopback', '--mtu', '9000']), /--mtu needs --net tap/);
});

/**
 * TapEndpoint with a real tap in a network namespace: a frame the kernel queued while an
 * earlier guest's receive offloads were set keeps the header it was queued with (a partial
 * checksum here); a guest that did not negotiate that offload must not get it. The frame is
 * dropped and counted, and the next one, queued under this guest's offloads, arrives whole.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { closeFd, openTap, setTapOffload } from '../../src/sys/index.js';
import { TapEndpoint, TAP_HEADER_LENGTH } from '../../src/net/tap.js';
import { TunOffload } from '../../src/net/offloads.js';
import { NetCounter } from '../../src/net/virtio-net.js';
import { createNetns } from '../support/netns.js';
import { makeRig, netq, peek } from '../virtqueue/helpers.js';

const HOST = '10.77.0.1';
const PEER = '10.77.0.2';

/** One UDP datagram from the namespace to PEER (out through the tap, whose fd we hold). */
function sendUdp(execPrefix: string[], text: string): void {
  const [cmd, ...args] = execPrefix;
  const r = spawnSync(cmd!, [...args, 'bash', '-c', `printf %s '${text}' > /dev/udp/${PEER}/9`], { encoding: 'utf8' });
  assert.equal(r.status, 0, `sending UDP in the namespace: ${r.stderr}`);
}

test('a frame queued under an earlier guest\'s offloads (NEEDS_CSUM) is dropped for a guest without GUEST_CSUM; the next arrives whole', async (t) => {
  if (process.getuid?.() !== 0) return t.skip('needs root (CAP_NET_ADMIN) to create a tap device');
  if (!existsSync('/dev/net/tun')) return t.skip('/dev/net/tun does not exist on this machine');
  const ns = createNetns();
  const name = `vitx${process.pid % 100000}`;
  let tapFd = -1;
  try {
    tapFd = openTap(name, true).fd;
    // The previous guest took partial checksums; the tap has them on while the host sends.
    setTapOffload(tapFd, TAP_HEADER_LENGTH, TunOffload.Csum);
    const moved = spawnSync('ip', ['link', 'set', name, 'netns', ns.name], { encoding: 'utf8' });
    assert.equal(moved.status, 0, `moving the tap into the namespace: ${moved.stderr}`);
    // No IPv6 (router and neighbour solicitations) and no ARP: the only frames are ours.
    const [cmd, ...args] = ns.execPrefix();
    const sysctl = spawnSync(cmd!, [...args, 'sysctl', '-qw', `net.ipv6.conf.${name}.disable_ipv6=1`], { encoding: 'utf8' });
    assert.equal(sysctl.status, 0, `turning IPv6 off on the tap: ${sysctl.stderr}`);
    ns.ip(['addr', 'add', `${HOST}/24`, 'dev', name]);
    ns.ip(['link', 'set', name, 'up']);
    ns.ip(['neigh', 'replace', PEER, 'lladdr', '02:00:00:00:00:02', 'dev', name, 'nud', 'permanent']);
    sendUdp(ns.execPrefix(), 'stale');

    // A new guest without GUEST_CSUM connects: its endpoint sets the tap's offloads to none.
    const rig = makeRig();
    const rxq = netq(rig.queue, 12, false);
    for (let i = 0; i < 4; i++) rig.driver.addBuffer(rig.bufBase + i * 0x800, 0x800, true);
    rig.driver.publish();
    const endpoint = new TapEndpoint(tapFd, rxq, 0);
    sendUdp(ns.execPrefix(), 'fresh');
    await new Promise((resolve) => setTimeout(resolve, 50));

    assert.equal(endpoint.poll(32), 2, 'two frames read: one dropped, one delivered');
    assert.equal(rxq.counters[NetCounter.drops], 1, 'the stale frame is counted as a drop');
    assert.equal(rxq.counters[NetCounter.packets], 1);
    const head = rig.driver.popUsed();
    assert.ok(head >= 0, 'one buffer used');
    const len = rig.driver.lastLen;
    const got = peek(rig, rig.bufBase, len);
    assert.equal(got[0], 0, 'no flags for a guest without GUEST_CSUM');
    assert.equal(got[1], 0, 'no GSO type');
    assert.equal(new TextDecoder().decode(got.subarray(len - 5)), 'fresh');
    assert.equal(rig.driver.popUsed(), -1, 'nothing else reached the guest');
  } finally {
    if (tapFd >= 0) closeFd(tapFd);
    ns.destroy();
  }
});

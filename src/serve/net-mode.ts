/** Parses `serve --net` into the data path's NetMode. */
import { closeFd, openTap, setTapOffload } from '../sys/index.js';
import { TAP_HEADER_LENGTH } from '../net/tap.js';
import type { LoopbackFull, NetMode } from '../net/endpoint.js';

export const NET_MODES = ['loopback', 'sink', 'source', 'tap:IFNAME'] as const;

/** `queuePairs` > 1 with a tap: a multiqueue tap, one queue (fd) per pair. */
export function parseNetMode(value: string, frameSize: number, frameCount = 0, loopbackFull: LoopbackFull = 'hold', queuePairs = 1): NetMode {
  if (value === 'loopback') return { kind: value, whenFull: loopbackFull };
  if (value === 'sink') return { kind: value };
  if (value === 'source') {
    if (!Number.isInteger(frameSize) || frameSize < 60 || frameSize > 65535) {
      throw new Error(`--frame-size ${frameSize} must be an integer in 60..65535`);
    }
    return { kind: 'source', frameSize, count: frameCount };
  }
  if (value.startsWith('tap:')) {
    const name = value.slice(4);
    if (name === '' || name.length > 15) throw new Error(`--net tap:IFNAME needs an interface name of 1..15 characters, got "${name}"`);
    // IFF_VNET_HDR: offloads cross with each frame. Until a guest says what it takes (the
    // worker sets that per connection), frames the host sends arrive whole and checksummed.
    const multi = queuePairs > 1;
    const fds: number[] = [];
    let actual = name;
    try {
      for (let i = 0; i < queuePairs; i++) {
        const tap = openTap(actual, true, multi);
        actual = tap.name;
        fds.push(tap.fd);
        setTapOffload(tap.fd, TAP_HEADER_LENGTH, 0);
      }
    } catch (err) {
      for (const fd of fds) closeFd(fd);
      throw err;
    }
    return { kind: 'tap', name: actual, fds };
  }
  throw new Error(`--net ${value} is not one of ${NET_MODES.join(', ')}`);
}

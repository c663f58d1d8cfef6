// Offloads (src/net/offloads.ts): which features turn which on both ways, the transmit header check, and
// transmitBurst handing a checked header to a sink that takes headers (the tap) while dropping
// and counting a bogus one before the sink ever sees it.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { makeRig, poke, frame } from '../virtqueue/helpers.js';
import { NetCounter, NetQueue, transmitBurst } from '../../src/net/virtio-net.js';
import { fitRxHeader, TunOffload, TxOffload, tunOffloadsOf, txHeaderProblem, txOffloadsOf } from '../../src/net/offloads.js';
import type { FrameSink } from '../../src/net/endpoint.js';
import type { ScatterList } from '../../src/virtqueue/scatter.js';
import { featureMask, NetFeature } from '../../src/protocol/features.js';

/** A virtio_net_hdr (12 bytes, little-endian). */
function header(f: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }): Uint8Array {
  const h = new Uint8Array(12);
  const v = new DataView(h.buffer);
  h[0] = f.flags ?? 0;
  h[1] = f.gsoType ?? 0;
  v.setUint16(2, f.hdrLen ?? 0, true);
  v.setUint16(4, f.gsoSize ?? 0, true);
  v.setUint16(6, f.csumStart ?? 0, true);
  v.setUint16(8, f.csumOffset ?? 0, true);
  return h;
}

const ALL = TxOffload.Csum | TxOffload.Tso4 | TxOffload.Tso6 | TxOffload.Ecn;
/** A TCPv4 segment's header: checksum from the TCP header (14 + 20), offset 16, MSS 1448. */
const tso4 = { flags: 1, gsoType: 1, hdrLen: 66, gsoSize: 1448, csumStart: 34, csumOffset: 16 };

describe('transmit offloads', () => {
  it('features: CSUM enables checksums, HOST_TSO4/6 segments only with CSUM, HOST_ECN only with TSO', () => {
    const f = (...bits: number[]): bigint => featureMask(...bits);
    assert.equal(txOffloadsOf(0n), 0);
    assert.equal(txOffloadsOf(f(NetFeature.HOST_TSO4, NetFeature.HOST_TSO6)), 0, 'TSO without CSUM is not usable');
    assert.equal(txOffloadsOf(f(NetFeature.CSUM, NetFeature.HOST_TSO4)), TxOffload.Csum | TxOffload.Tso4);
    assert.equal(txOffloadsOf(f(NetFeature.CSUM, NetFeature.HOST_ECN)), TxOffload.Csum);
    assert.equal(txOffloadsOf(f(NetFeature.CSUM, NetFeature.HOST_TSO4, NetFeature.HOST_TSO6, NetFeature.HOST_ECN)), ALL);
  });

  it('receive: the tap may hand a guest only what it negotiated, checksums first', () => {
    const f = (...bits: number[]): bigint => featureMask(...bits);
    assert.equal(tunOffloadsOf(f(NetFeature.GUEST_TSO4, NetFeature.GUEST_TSO6)), 0, 'no segments without GUEST_CSUM');
    assert.equal(tunOffloadsOf(f(NetFeature.GUEST_CSUM)), TunOffload.Csum);
    assert.equal(tunOffloadsOf(f(NetFeature.GUEST_CSUM, NetFeature.GUEST_ECN)), TunOffload.Csum);
    assert.equal(tunOffloadsOf(f(NetFeature.GUEST_CSUM, NetFeature.GUEST_TSO4, NetFeature.GUEST_TSO6, NetFeature.GUEST_ECN)),
      TunOffload.Csum | TunOffload.Tso4 | TunOffload.Tso6 | TunOffload.TsoEcn);
  });

  it('receive: a header from the tap is fitted to what the guest negotiated, or refused (frames queued under an earlier guest)', () => {
    const C = TunOffload.Csum;
    const T4 = C | TunOffload.Tso4;
    const RX_ALL = C | TunOffload.Tso4 | TunOffload.Tso6 | TunOffload.TsoEcn;
    const fits = (h: Uint8Array, tun: number): boolean => fitRxHeader(h, tun);
    assert.ok(fits(header({}), 0), 'a plain frame fits any guest');
    assert.ok(!fits(header({ flags: 1 }), 0), 'NEEDS_CSUM without GUEST_CSUM: the checksum is not complete');
    const valid = header({ flags: 2 });
    assert.ok(fits(valid, 0), 'DATA_VALID without GUEST_CSUM: delivered...');
    assert.equal(valid[0], 0, '...with its flags cleared, as the spec asks');
    const kept = header({ flags: 2 });
    assert.ok(fits(kept, C));
    assert.equal(kept[0], 2, 'DATA_VALID kept for a guest with GUEST_CSUM');
    assert.ok(fits(header({ flags: 1 }), C));
    assert.ok(!fits(header({ flags: 4 }), RX_ALL), 'a flag virtio-net headers from a tap never carry');
    assert.ok(!fits(header(tso4), C), 'TCPv4 segment without GUEST_TSO4');
    assert.ok(!fits(header({ ...tso4, flags: 2 }), 0), 'a segment for a guest without GUEST_CSUM');
    assert.ok(fits(header(tso4), T4));
    assert.ok(!fits(header({ ...tso4, gsoType: 4 }), T4), 'TCPv6 segment with only GUEST_TSO4');
    assert.ok(!fits(header({ ...tso4, gsoType: 0x81 }), T4), 'ECN without GUEST_ECN');
    assert.ok(fits(header({ ...tso4, gsoType: 0x81 }), RX_ALL));
    assert.ok(!fits(header({ ...tso4, gsoType: 3 }), RX_ALL), 'UDP fragmentation, never offered');
    assert.ok(!fits(header({ flags: 1, gsoType: 0x80 }), RX_ALL), 'ECN bit without a GSO type');
  });

  it('accepts the headers a Linux guest sends, refuses each field that is wrong or not negotiated', () => {
    assert.equal(txHeaderProblem(header({}), 60, 0), '', 'no offload at all');
    assert.equal(txHeaderProblem(header({ flags: 2 }), 60, 0), '', 'DATA_VALID alone');
    assert.equal(txHeaderProblem(header({ flags: 1, csumStart: 34, csumOffset: 16 }), 100, TxOffload.Csum), '');
    assert.equal(txHeaderProblem(header(tso4), 30000, ALL), '');
    assert.equal(txHeaderProblem(header({ ...tso4, gsoType: 4, csumStart: 54 }), 30000, ALL), '');
    const refused: Array<[string, Uint8Array, number, number, RegExp]> = [
      ['unknown flag', header({ flags: 4 }), 60, ALL, /unknown bits/],
      ['checksum not negotiated', header({ flags: 1, csumStart: 34, csumOffset: 16 }), 100, 0, /without CSUM/],
      ['checksum field past the frame', header({ flags: 1, csumStart: 90, csumOffset: 16 }), 100, ALL, /outside the 100-byte frame/],
      ['checksum inside the Ethernet header', header({ flags: 1, csumStart: 2, csumOffset: 0 }), 100, ALL, /outside/],
      ['TSO4 not negotiated', header(tso4), 30000, TxOffload.Csum, /gso_type 1 not negotiated/],
      ['UDP fragmentation never offered', header({ ...tso4, gsoType: 3 }), 30000, ALL, /gso_type 3 not negotiated/],
      ['GSO without a partial checksum', header({ ...tso4, flags: 0 }), 30000, ALL, /without NEEDS_CSUM/],
      ['gso_size 0', header({ ...tso4, gsoSize: 0 }), 30000, ALL, /gso_size 0/],
      ['hdr_len past the frame', header({ ...tso4, hdrLen: 5000 }), 4000, ALL, /hdr_len 5000/],
      ['ECN not negotiated', header({ ...tso4, gsoType: 0x81 }), 30000, ALL & ~TxOffload.Ecn, /ECN/],
      ['ECN without GSO', header({ gsoType: 0x80 }), 60, ALL, /ECN bit without a GSO type/],
    ];
    for (const [what, h, len, allowed, why] of refused) assert.match(txHeaderProblem(h, len, allowed), why, what);
  });

  it('transmitBurst: a sink that takes headers gets the guest\'s header; a bogus one is dropped and counted, never passed on', () => {
    const rig = makeRig();
    const b = rig.bufBase;
    const good = header({ flags: 1, csumStart: 34, csumOffset: 16 });
    const bad = header({ flags: 1, csumStart: 200, csumOffset: 16 });
    const f = frame(100);
    for (const [i, h] of [good, bad, good].entries()) {
      poke(rig, b + i * 0x200, h);
      poke(rig, b + i * 0x200 + 12, f);
      rig.driver.addChain([b + i * 0x200], [112], 1);
    }
    rig.driver.publish();
    const seen: Array<{ header: number[]; len: number }> = [];
    const sink: FrameSink = {
      takesHeader: true,
      transmit(_sg: ScatterList, _first: number, len: number, h: Uint8Array | null) {
        seen.push({ header: [...h!.subarray(0, 10)], len });
        return true;
      },
      flush() {},
    };
    const txq = new NetQueue(rig.queue, { headerLength: 12, mergeable: false, txOffloads: TxOffload.Csum });
    assert.equal(transmitBurst(txq, sink, 32), 3, 'all three chains go back to the guest');
    assert.deepEqual(seen, [{ header: [...good.subarray(0, 10)], len: 100 }, { header: [...good.subarray(0, 10)], len: 100 }]);
    assert.equal(txq.counters[NetCounter.errors], 1);
    assert.equal(txq.counters[NetCounter.drops], 1);
    assert.equal(txq.counters[NetCounter.packets], 2);
  });
});

import { after, before, describe, it } from 'node:test';
import { startServe, type ServeProcess } from '../support/serve.js';
import { fdCountOf, HostileFrontend, threadCountOf } from '../support/hostile-frontend.js';
import { FrontendRequest as F } from '../../src/protocol/index.js';
import { eventfdCreate, closeFd } from '../../src/sys/index.js';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('probe', () => {
  let serve: ServeProcess;
  before(async () => { serve = await startServe(['--net', 'loopback']); });
  after(async () => { const r = await serve.stop(); console.log(r.lines.slice(-30).join('\n')); });
  it('probes', async () => {
    const pid = serve.child.pid!;
    const base = fdCountOf(pid);
    console.log('fds', base);
    const efds = Array.from({ length: 8 }, () => eventfdCreate(0));
    // 1. partial message with fds, then EOF
    let fe = await HostileFrontend.connect(serve.socket);
    const msg = fe.encode(F.SET_OWNER, { kind: 'none' });
    const hdr = new Uint8Array(12); new DataView(hdr.buffer).setUint32(0, 3, true); new DataView(hdr.buffer).setUint32(4, 1, true); new DataView(hdr.buffer).setUint32(8, 100, true);
    await fe.sendRaw(hdr, efds);
    await sleep(100);
    console.log('after partial+8fds', fdCountOf(pid));
    fe.close();
    await sleep(300);
    console.log('after close', fdCountOf(pid));
    // 2. 1 byte at a time with 8 fds
    fe = await HostileFrontend.connect(serve.socket);
    const big = new Uint8Array(12 + 4000); new DataView(big.buffer).setUint32(0, 3, true); new DataView(big.buffer).setUint32(4, 1, true); new DataView(big.buffer).setUint32(8, 4000, true);
    for (let i = 0; i < 200; i++) await fe.sendRaw(big.subarray(i, i + 1), efds);
    await sleep(200);
    console.log('after 200 x 1byte+8fds', fdCountOf(pid));
    fe.close();
    await sleep(300);
    console.log('after close', fdCountOf(pid));
    // 3. GET_INFLIGHT_FD
    fe = await HostileFrontend.connect(serve.socket);
    await fe.negotiate();
    const r = await fe.call(F.GET_INFLIGHT_FD, { kind: 'inflight', mmapSize: 0n, mmapOffset: 0n, numQueues: 2, queueSize: 256 }, { needsReply: false });
    console.log('GET_INFLIGHT_FD reply', r?.body);
    const r2 = await fe.call(F.IOTLB_MSG, { kind: 'iotlb', iova: 0n, size: 4096n, userAddr: 0n, perm: 3, iotlbType: 2 });
    console.log('IOTLB reply', r2?.body);
    fe.close();
    await sleep(300);
    console.log('threads', threadCountOf(pid), 'fds', fdCountOf(pid));
    efds.forEach(closeFd);
    void msg;
  });
});

// serve against DPDK's virtio-user front-end with packed virtqueues (packed_vq=1): the same
// traffic and exact counts as the split suite (dpdk-suite.ts).
import { dpdkServeSuite } from './dpdk-suite.js';

dpdkServeSuite('packed');

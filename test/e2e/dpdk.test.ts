// serve against DPDK's virtio-user front-end with split virtqueues (the suite is in dpdk-suite.ts).
import { dpdkServeSuite } from './dpdk-suite.js';

dpdkServeSuite('split');

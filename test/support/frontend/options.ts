/**
 * The test front-end's options and their defaults, resolved once: every other module of the
 * front-end reads the resolved form, so a default lives in exactly one place. Option
 * combinations that cannot work are refused here, before any memory or socket is touched.
 */
import { IotlbPerm } from '../../../src/protocol/index.js';
import { VIRTIO_NET_HDR_MRG_LEN } from '../../../src/net/virtio-net.js';
import { PAGE_1G, PAGE_2M, PAGE_4K } from './iommu.js';

export type IommuMode = 'off' | 'static' | 'dynamic';

export interface FrontendOptions {
  socket: string;
  /** 'off' (no ACCESS_PLATFORM), 'static' or 'dynamic' mappings. Default 'off'. */
  iommu?: IommuMode;
  /** IOMMU page size for static mappings: 4096, 2 MiB or 1 GiB. Dynamic always uses 4 KiB. */
  pageSize?: number;
  /** Guest memory bytes (default 64 MiB). */
  memoryBytes?: number;
  /** Ring size (default 256). */
  queueSize?: number;
  /** TX / RX buffer pools, in slots (default 4 x queue size). Slots are used round-robin. */
  txSlots?: number;
  rxSlots?: number;
  /** Bytes per slot (default 2048); a slot holds header + frame. Non-multiples of 4096 make buffers straddle pages. */
  slotSize?: number;
  /** Negotiate VIRTIO_NET_F_MRG_RXBUF (default true). */
  mergeableRx?: boolean;
  /** Negotiate VIRTIO_F_EVENT_IDX (default false). */
  eventIdx?: boolean;
  /** Canary-fill guest memory and check buffers as they come back (default true). */
  canary?: boolean;
  /** IOMMU permission of RX buffers (default RW: DPDK's vhost asks RW for RX buffers). */
  rxPerm?: number;
  /** IOMMU permission of TX buffers (default RO). */
  txPerm?: number;
  /** Kicks through eventfds (default) or none (NOFD: the back-end must poll). */
  kicks?: 'eventfd' | 'none';
  /** Fake front-end virtual address of guest-physical 0 (default 0x7f0000000000). */
  uaddrBase?: number;
  /** Like QEMU's vhost_dev_start: send an UPDATE for each used ring before enabling (default true). */
  primeUsedRings?: boolean;
  /**
   * Static 4K mappings: 'rw' maps the rings read-write (default; dma_alloc_coherent, and
   * DPDK's vhost asks RW for every ring part), 'split' maps desc + avail read-only.
   */
  ringPerms?: 'rw' | 'split';
  /** Post RX pool buffers automatically (start() and every poll()); default true. */
  rxAutoRefill?: boolean;
  /** Static mappings: IOVA of guest-physical 0 (default 0x4000000000, 1 GiB aligned). */
  staticIovaBase?: number;
  /**
   * How misses that arrive together are answered: 'serial' (default) sends one UPDATE and
   * waits for its ack before the next, as QEMU 7.2's backend-channel handler does;
   * 'pipelined' sends the UPDATEs for every miss read in one go back to back and then
   * collects the acks — what a front-end can do for a back-end that batches its misses.
   */
  missReplies?: 'serial' | 'pipelined';
  /**
   * Live-migration dirty logging (default false): negotiate LOG_SHMFD (and require LOG_ALL to
   * be offered); start() then switches logging on as QEMU does when a migration starts —
   * SET_LOG_BASE with a memfd log for guest memory, SET_FEATURES with LOG_ALL, SET_VRING_ADDR
   * with VHOST_VRING_F_LOG. setDirtyLogging() turns it off and on again; syncDirtyLog() reads
   * and clears the bitmap.
   */
  dirtyLog?: boolean;
  connectTimeoutMs?: number;
}

export type ResolvedFrontendOptions = Required<Omit<FrontendOptions, 'socket'>> & { socket: string };

/** Bytes of the virtio-net header in front of every frame (VERSION_1: always the 12-byte form). */
export const NET_HDR = VIRTIO_NET_HDR_MRG_LEN;
export const DEFAULT_CONNECT_TIMEOUT_MS = 15_000;
const DEFAULT_UADDR = 0x7f0000000000;
const DEFAULT_STATIC_IOVA = 0x4000000000;

/** Fills in every default and refuses impossible combinations. */
export function resolveOptions(opts: FrontendOptions): ResolvedFrontendOptions {
  const pageSize = opts.iommu === 'dynamic' ? PAGE_4K : opts.pageSize ?? PAGE_4K;
  const queueSize = opts.queueSize ?? 256;
  const o: ResolvedFrontendOptions = {
    socket: opts.socket,
    iommu: opts.iommu ?? 'off',
    pageSize,
    memoryBytes: opts.memoryBytes ?? 64 * 1024 * 1024,
    queueSize,
    txSlots: opts.txSlots ?? 4 * queueSize,
    rxSlots: opts.rxSlots ?? 4 * queueSize,
    slotSize: opts.slotSize ?? 2048,
    mergeableRx: opts.mergeableRx ?? true,
    eventIdx: opts.eventIdx ?? false,
    canary: opts.canary ?? true,
    rxPerm: opts.rxPerm ?? IotlbPerm.RW,
    txPerm: opts.txPerm ?? IotlbPerm.RO,
    kicks: opts.kicks ?? 'eventfd',
    uaddrBase: opts.uaddrBase ?? DEFAULT_UADDR,
    primeUsedRings: opts.primeUsedRings ?? true,
    staticIovaBase: opts.staticIovaBase ?? DEFAULT_STATIC_IOVA,
    rxAutoRefill: opts.rxAutoRefill ?? true,
    ringPerms: opts.ringPerms ?? 'rw',
    missReplies: opts.missReplies ?? 'serial',
    dirtyLog: opts.dirtyLog ?? false,
    connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
  };
  if (o.slotSize < NET_HDR + 60 || o.slotSize % 4 !== 0) throw new Error(`slotSize ${o.slotSize} must be a multiple of 4 and hold a header and a 60-byte frame`);
  if (o.memoryBytes % PAGE_2M !== 0) throw new Error('memoryBytes must be a multiple of 2 MiB');
  if (o.iommu === 'static' && pageSize === PAGE_1G && o.memoryBytes > PAGE_1G) throw new Error('static 1G mappings: guest memory must fit one 1 GiB page');
  return o;
}

/**
 * The live state of a served device as `inspect` shows it. Built on request from the control
 * path's own view plus counters the workers already keep in shared memory; queue details
 * (indices, IOTLB entries) come from one snapshot message per worker, off the hot path.
 */
import { featureNames, NET_DEVICE_FEATURES, PROTOCOL_FEATURES } from '../protocol/index.js';
import type { QueueSnapshot } from '../datapath/contract.js';
import type { VhostUserServer } from '../device/server.js';

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

export interface StateRequest {
  entries?: boolean;
  queue?: number;
  /** Most IOTLB entries listed per queue. */
  limit?: number;
}

/** A ring's round trips while the IOMMU is negotiated, or once there were any (kept across connections). */
function roundTrips<T extends { count: number }>(iommu: boolean, miss: T): { miss: T } | null {
  return iommu || miss.count > 0 ? { miss } : null;
}

export async function deviceState(server: VhostUserServer, socketPath: string, strategy: string, request: StateRequest) {
  const device = server.device;
  const updates = device.ackLatency(false);
  const invalidates = device.ackLatency(true);
  const snapshots = new Map<number, QueueSnapshot>();
  for (const snap of await device.snapshot(request.entries ?? false)) snapshots.set(snap.index, snap);
  const queues = device.vrings
    .filter((v) => request.queue === undefined || v.index === request.queue)
    .map((v) => {
      const snap = snapshots.get(v.index);
      const iotlb = snap?.iotlb ?? null;
      if (iotlb && request.limit !== undefined) iotlb.entries = iotlb.entries.slice(0, request.limit);
      return {
        index: v.index,
        kind: v.index % 2 === 0 ? 'rx' : 'tx',
        size: v.size,
        descAddr: hex(v.descAddr),
        availAddr: hex(v.availAddr),
        usedAddr: hex(v.usedAddr),
        enabled: v.enabled,
        running: v.running,
        /** The worker thread serving the ring's pair (serve --workers), null before it has one. */
        worker: device.workerOf(v.index >> 1),
        broken: v.broken ?? snap?.broken ?? null,
        waitingForMapping: snap?.waitingForMapping ?? false,
        lastAvailIdx: snap?.lastAvailIdx ?? v.base,
        availIdx: snap?.availIdx ?? null,
        usedIdx: snap?.usedIdx ?? null,
        counters: device.counters(v.index),
        iotlb,
        /** Ring parked on a miss -> the covering UPDATE applied by its worker (over the device's life). */
        roundTrips: roundTrips(device.iommu, device.missLatency(v.index).summary()),
      };
    });
  return {
    socket: socketPath,
    connected: server.connected,
    peer: server.peer,
    connections: server.connectionCount,
    strategy,
    features: { bits: hex(device.features), names: featureNames(device.features, NET_DEVICE_FEATURES) },
    protocolFeatures: { bits: hex(device.protocolFeatures), names: featureNames(device.protocolFeatures, PROTOCOL_FEATURES) },
    iommu: device.iommu,
    /**
     * Worker threads, the CPUs they are pinned to (empty: the scheduler's choice), whether they
     * take turns with the control thread on CPUs, how long an idle worker polls before it
     * sleeps (-1: never), whether one whose TX ring waits on a miss yields its CPU, and which
     * thread reads IOTLB UPDATE / INVALIDATE.
     */
    threads: device.placement,
    /**
     * Per running worker: the poll window of its next idle spell in µs (adapted to the
     * guest's pauses without an IOMMU, the whole budget behind one; -1: it never sleeps)
     * and how often it has slept in poll(2).
     */
    idle: device.idling,
    status: device.status,
    /** The MTU the front-end set (NET_SET_MTU, applied to the tap); null if it set none. */
    mtu: device.mtu,
    /**
     * Live migration: whether writes into guest memory are being logged (LOG_ALL and a log set),
     * the log's size, and per running pair the pages marked and the writes that fell outside it.
     */
    dirtyLog: {
      logging: device.logging,
      logBytes: device.dirtyLog.config?.size ?? null,
      pagesMarked: [...snapshots.values()].reduce((n, s) => n + (s.index % 2 === 0 ? s.dirtyLog?.marks ?? 0 : 0), 0),
      outside: [...snapshots.values()].reduce((n, s) => n + (s.index % 2 === 0 ? s.dirtyLog?.outside ?? 0 : 0), 0),
    },
    memory: device.memory.regions.map((r) => ({
      guestAddr: hex(r.guestAddr), userAddr: hex(r.userAddr), size: r.size, mmapOffset: hex(r.mmapOffset),
    })),
    queues,
    /**
     * IOTLB message read -> its ack sent (INVALIDATE: once no worker can use the entry), and
     * how many of them the worker, or the IOTLB reader thread, read and acked from the lent socket.
     */
    roundTrips: {
      updateAck: updates.all.summary(),
      invalidateAck: invalidates.all.summary(),
      ackedByWorker: updates.byWorker + invalidates.byWorker,
      ackedByReaderThread: updates.byReaderThread + invalidates.byReaderThread,
    },
  };
}

export type DeviceState = Awaited<ReturnType<typeof deviceState>>;

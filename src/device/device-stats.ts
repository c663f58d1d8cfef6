/**
 * What `inspect` and `serve --stats-interval` read of a device: per-ring counters, miss round
 * trips and IOTLB ack latencies over the life of the device. Workers come and go (reconnects,
 * SET_FEATURES), so each total is what finished workers counted plus what the live one has.
 */
import type { QueueSnapshot } from '../datapath/contract.js';
import type { QueuePairHost } from '../datapath/queue-pair-host.js';
import { RING_COUNTERS, type RingCounterName } from '../datapath/stats.js';
import { IotlbType } from '../protocol/index.js';
import { LatencyHistogram } from '../stats/latency.js';
import type { QueuePairs } from './queue-pairs.js';

export class DeviceStats {
  private readonly pastCounters = new Map<number, Record<RingCounterName, number>>();
  private readonly pastMissLatency = new Map<number, LatencyHistogram>();
  /** IOTLB request read -> its ack sent by the session, over the life of this device. */
  private readonly sessionAcks = { update: new LatencyHistogram(), invalidate: new LatencyHistogram() };
  /** The same for requests workers acknowledged from a lent socket, of workers that finished. */
  private readonly pastWorkerAcks = { update: new LatencyHistogram(), invalidate: new LatencyHistogram() };

  constructor(private readonly workers: QueuePairs) {}

  /** The live workers' queues, in ring order; `entries` adds each IOTLB cache's entries. */
  async snapshot(entries: boolean): Promise<QueueSnapshot[]> {
    const result: QueueSnapshot[] = [];
    for (const pair of [...this.workers.values()].sort((a, b) => a.pairIndex - b.pairIndex)) {
      result.push(...(await pair.snapshot(entries)));
    }
    return result;
  }

  /** Counters of a ring over the life of this device: finished workers plus the live one. */
  counters(index: number): Record<RingCounterName, number> | null {
    const pair = this.workers.get(index >> 1);
    const live = pair ? pair.counters(index & 1) : null;
    const past = this.pastCounters.get(index);
    if (!live) return past ? { ...past } : null;
    if (past) for (const name of RING_COUNTERS) live[name] += past[name];
    return live;
  }

  /** A ring's miss round trips over the life of this device: finished workers plus the live one. */
  missLatency(index: number): LatencyHistogram {
    const total = new LatencyHistogram();
    const past = this.pastMissLatency.get(index);
    if (past) total.add(past);
    const pair = this.workers.get(index >> 1);
    if (pair) total.add(pair.missLatency(index & 1));
    return total;
  }

  /** The session acknowledged an IOTLB message `us` microseconds after reading it. */
  iotlbAcked(iotlbType: number, us: number): void {
    if (iotlbType === IotlbType.UPDATE) this.sessionAcks.update.record(us);
    else if (iotlbType === IotlbType.INVALIDATE) this.sessionAcks.invalidate.record(us);
  }

  /** IOTLB request read -> its ack sent, over the life of this device, by whichever thread acked it. */
  ackLatency(invalidate: boolean): { all: LatencyHistogram; byWorker: number } {
    const all = new LatencyHistogram();
    const worker = new LatencyHistogram();
    worker.add(invalidate ? this.pastWorkerAcks.invalidate : this.pastWorkerAcks.update);
    for (const pair of this.workers.values()) worker.add(pair.workerAckLatency(invalidate));
    all.add(invalidate ? this.sessionAcks.invalidate : this.sessionAcks.update);
    all.add(worker);
    return { all, byWorker: worker.summary().count };
  }

  /** Keeps a finishing worker's counts so totals survive reconnects. */
  retiring(pair: QueuePairHost): void {
    for (const ringInPair of [0, 1]) {
      const index = pair.pairIndex * 2 + ringInPair;
      const live = pair.counters(ringInPair);
      const past = this.pastCounters.get(index);
      if (past) for (const name of RING_COUNTERS) live[name] += past[name];
      this.pastCounters.set(index, live);
      // From the pair itself: it has already left the live list when it retires.
      const misses = new LatencyHistogram();
      const pastMisses = this.pastMissLatency.get(index);
      if (pastMisses) misses.add(pastMisses);
      misses.add(pair.missLatency(ringInPair));
      this.pastMissLatency.set(index, misses);
    }
    this.pastWorkerAcks.update.add(pair.workerAckLatency(false));
    this.pastWorkerAcks.invalidate.add(pair.workerAckLatency(true));
  }
}

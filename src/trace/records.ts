/**
 * The records a trace file holds, as the reader returns them and the writer takes them.
 * The byte layout lives in docs/trace-format.md and src/trace/format.ts.
 */

/** Which socket a vhost-user message travelled on. */
export type TraceChannel = 'frontend' | 'backend';
/** Who sent it: the front-end (QEMU, virtio-user) or the back-end (serve, DPDK vhost). */
export type TraceDirection = 'to-backend' | 'to-frontend';

export type PassedFdKind = 'memfd' | 'eventfd' | 'socket' | 'other';
export interface PassedFd {
  kind: PassedFdKind;
  /** Size in bytes for memfds (and regular files); 0 otherwise. */
  size: number;
}

export interface MessageRecord {
  type: 'message';
  /** Nanoseconds since the trace started. */
  timeNs: bigint;
  /** Connection number within the trace (one per accepted front-end). */
  connection: number;
  channel: TraceChannel;
  direction: TraceDirection;
  /** The whole message as sent: 12-byte header and payload. */
  bytes: Uint8Array;
  fds: PassedFd[];
}

/** Outcome of one datapath translation. */
export type TranslationResult = 'hit' | 'miss' | 'denied' | 'fault';

export interface TranslationRecord {
  type: 'translation';
  timeNs: bigint;
  connection: number;
  queue: number;
  iova: bigint;
  length: number;
  /** Access bits requested: 1 read, 2 write (src/iotlb/strategy.ts Access). */
  access: number;
  result: TranslationResult;
}

export type TraceRecord = MessageRecord | TranslationRecord;

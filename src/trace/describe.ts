/**
 * Human-readable and JSON views of trace records. Nothing here throws on bad input: a
 * message the codec refuses is shown with the ProtocolError's text instead.
 */
import Table from 'cli-table3';
import type { ChalkInstance } from 'chalk';
import {
  FrontendRequest, HEADER_SIZE, IotlbType, NET_DEVICE_FEATURES, PROTOCOL_FEATURES, ProtocolError,
  VRING_INDEX_MASK, VRING_NOFD_FLAG, decodeHeader, decodeMessage, featureNames, requestName,
  type Body, type VhostMessage,
} from '../protocol/index.js';
import { plain } from '../cli/color.js';
import type { MessageRecord, PassedFd, TranslationRecord } from './records.js';

export const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/** 4096 -> "4 KiB", 3 << 20 -> "3 MiB", 1500 -> "1500 B", 1536 -> "1.5 KiB". */
export function formatSize(bytes: bigint | number): string {
  const n = typeof bytes === 'bigint' ? bytes : BigInt(bytes);
  const units: Array<[string, bigint]> = [['EiB', 1n << 60n], ['PiB', 1n << 50n], ['TiB', 1n << 40n], ['GiB', 1n << 30n], ['MiB', 1n << 20n], ['KiB', 1n << 10n]];
  for (const [name, unit] of units) {
    if (n >= unit) {
      if (n % unit === 0n) return `${n / unit} ${name}`;
      const v = Number(n) / Number(unit);
      if (n >= unit && Number.isFinite(v) && Math.abs(v * 10 - Math.round(v * 10)) < 1e-9) return `${v.toFixed(1)} ${name}`;
    }
  }
  return `${n} B`;
}

/** Relative time, milliseconds with microsecond digits: "   12.345 ms". */
export function formatTime(timeNs: bigint): string {
  const us = timeNs / 1000n;
  const ms = us / 1000n;
  const frac = (us % 1000n).toString().padStart(3, '0');
  return `${ms}.${frac} ms`.padStart(13);
}

/** The channel as text, --filter and JSON name it: the front-end's socket or the back-end channel. */
export const channelLabel = (channel: 'frontend' | 'backend'): string => channel;
export const arrow = (direction: 'to-backend' | 'to-frontend'): string => (direction === 'to-backend' ? '→' : '←');

const PERM = ['none', 'RO', 'WO', 'RW'];
const IOTLB_TYPE: Record<number, string> = {
  [IotlbType.MISS]: 'MISS', [IotlbType.UPDATE]: 'UPDATE', [IotlbType.INVALIDATE]: 'INVALIDATE', [IotlbType.ACCESS_FAIL]: 'ACCESS_FAIL',
};
export const permName = (perm: number): string => PERM[perm] ?? `perm ${perm}`;
export const iotlbTypeName = (type: number): string => IOTLB_TYPE[type] ?? `type ${type}`;
export const accessName = (access: number): string => (['-', 'r', 'w', 'rw'][access] ?? String(access));

const STATUS_BITS: Array<[number, string]> = [[1, 'ACKNOWLEDGE'], [2, 'DRIVER'], [4, 'DRIVER_OK'], [8, 'FEATURES_OK'], [64, 'NEEDS_RESET'], [128, 'FAILED']];

function fdsText(fds: PassedFd[]): string {
  return fds.map((fd) => (fd.kind === 'memfd' || fd.size > 0 ? `${fd.kind}(${formatSize(fd.size)})` : fd.kind)).join(', ');
}

/** The decoded message, or the reason it cannot be decoded. */
export type Decoded = { ok: true; message: VhostMessage } | { ok: false; error: string; code?: string; field?: string; request?: number; name?: string; flags?: number };

export function decodeRecord(record: MessageRecord): Decoded {
  // The trace keeps fd kinds, not numbers; stand-ins let the codec check the count.
  const fds = record.fds.map((_, i) => 1000 + i);
  try {
    return { ok: true, message: decodeMessage(record.channel, record.bytes, fds) };
  } catch (err) {
    const out: Decoded = { ok: false, error: err instanceof Error ? err.message : String(err) };
    if (err instanceof ProtocolError) {
      out.code = err.code;
      out.field = err.field;
    }
    if (record.bytes.length >= HEADER_SIZE) {
      const h = decodeHeader(record.bytes);
      out.request = h.request;
      out.flags = h.flags;
      out.name = requestName(record.channel, h.request);
    }
    return out;
  }
}

const u64Requests: Partial<Record<number, (v: bigint) => string>> = {
  [FrontendRequest.SET_FEATURES]: (v) => features(v, 'virtio'),
  [FrontendRequest.SET_PROTOCOL_FEATURES]: (v) => features(v, 'protocol'),
};

function features(bits: bigint, which: 'virtio' | 'protocol'): string {
  const names = featureNames(bits, which === 'virtio' ? NET_DEVICE_FEATURES : PROTOCOL_FEATURES);
  return `${hex(bits)}${names.length ? ` ${names.join('|')}` : ''}`;
}

function vringWord(v: bigint): string {
  const index = Number(v & BigInt(VRING_INDEX_MASK));
  return (v & BigInt(VRING_NOFD_FLAG)) !== 0n ? `vring ${index} nofd (polling)` : `vring ${index}`;
}

/** Key fields of a decoded message as one short string (without the request name). */
export function summarizeBody(m: VhostMessage): string {
  const b = m.body;
  const F = FrontendRequest;
  if (m.isReply && b.kind === 'u64') {
    if (m.channel === 'frontend') {
      switch (m.request) {
        case F.GET_FEATURES: return features(b.value, 'virtio');
        case F.GET_PROTOCOL_FEATURES: return features(b.value, 'protocol');
        case F.GET_QUEUE_NUM: return `${b.value} queues`;
        case F.GET_MAX_MEM_SLOTS: return `${b.value} slots`;
      }
    }
    return b.value === 0n ? 'ack 0 (ok)' : `ack ${b.value} (failed)`;
  }
  switch (b.kind) {
    case 'none':
      return '';
    case 'u64': {
      if (m.channel === 'frontend') {
        const special = u64Requests[m.request];
        if (special) return special(b.value);
        if (m.request === F.SET_VRING_KICK || m.request === F.SET_VRING_CALL || m.request === F.SET_VRING_ERR) return vringWord(b.value);
        if (m.request === F.NET_SET_MTU) return `mtu ${b.value}`;
      }
      return `value ${b.value} (${hex(b.value)})`;
    }
    case 'vringState': {
      const what = m.channel === 'frontend'
        ? ({ [F.SET_VRING_NUM]: 'num', [F.SET_VRING_BASE]: 'base', [F.GET_VRING_BASE]: m.isReply ? 'base' : '', [F.SET_VRING_ENABLE]: 'enable', [F.SET_VRING_ENDIAN]: 'endian' } as Record<number, string>)[m.request]
        : undefined;
      if (what === '' || m.channel === 'backend') return `vring ${b.index}`;
      return `vring ${b.index} ${what ?? 'num'} ${b.num}`;
    }
    case 'vringAddr':
      return `vring ${b.index} desc ${hex(b.descUser)} avail ${hex(b.availUser)} used ${hex(b.usedUser)}` +
        `${b.logGuest ? ` log ${hex(b.logGuest)}` : ''}${b.flags ? ` flags ${hex(b.flags)}` : ''}`;
    case 'memTable':
      return `${b.regions.length} region${b.regions.length === 1 ? '' : 's'}`;
    case 'memRegion':
      return `guest ${hex(b.region.guestAddr)} size ${hex(b.region.size)} (${formatSize(b.region.size)}) user ${hex(b.region.userAddr)} offset ${hex(b.region.mmapOffset)}`;
    case 'log':
      return `size ${hex(b.size)} (${formatSize(b.size)}) offset ${hex(b.offset)}`;
    case 'iotlb': {
      const type = iotlbTypeName(b.iotlbType);
      if (b.iotlbType === IotlbType.MISS || b.iotlbType === IotlbType.ACCESS_FAIL) return `${type} iova ${hex(b.iova)} perm ${permName(b.perm)}`;
      if (b.iotlbType === IotlbType.INVALIDATE) return `${type} iova ${hex(b.iova)} size ${hex(b.size)} (${formatSize(b.size)})`;
      return `${type} iova ${hex(b.iova)} size ${hex(b.size)} (${formatSize(b.size)}) uaddr ${hex(b.userAddr)} perm ${permName(b.perm)}`;
    }
    case 'config':
      return `offset ${b.offset} size ${b.size} flags ${hex(b.flags)}`;
    case 'vringArea':
      return `${vringWord(b.u64)} size ${hex(b.size)} offset ${hex(b.offset)}`;
    case 'inflight':
      return `mmap size ${hex(b.mmapSize)} offset ${hex(b.mmapOffset)} queues ${b.numQueues} queue size ${b.queueSize}`;
    case 'status': {
      const names = STATUS_BITS.filter(([bit]) => (b.value & bit) !== 0).map(([, n]) => n);
      return `status ${hex(b.value)}${names.length ? ` ${names.join('|')}` : ''}`;
    }
    case 'sharedObject':
      return `uuid ${Buffer.from(b.uuid).toString('hex')}`;
    case 'deviceState':
      return `direction ${b.direction === 0 ? 'save' : b.direction === 1 ? 'load' : b.direction} phase ${b.phase}`;
    case 'raw':
      return `${b.bytes.length} payload bytes`;
  }
}

/** The memory regions of SET_MEM_TABLE as a table (for the lines under the message). */
export function regionTable(body: Extract<Body, { kind: 'memTable' }>, fds: PassedFd[], chalk: ChalkInstance = plain): string {
  const table = new Table({
    head: ['#', 'guest addr', 'size', 'user addr', 'mmap offset', 'fd'].map((h) => chalk.bold(h)),
    style: { head: [], border: [], compact: true },
    colAligns: ['right', 'right', 'right', 'right', 'right', 'left'],
  });
  body.regions.forEach((r, i) => {
    const fd = fds[i];
    table.push([String(i), hex(r.guestAddr), formatSize(r.size), hex(r.userAddr), hex(r.mmapOffset), fd ? fdsText([fd]) : '-']);
  });
  return table.toString();
}

export interface DescribeOptions {
  chalk?: ChalkInstance;
  /** Show the connection number (useful when a trace holds several). Default true. */
  connection?: boolean;
}

/**
 * One message as text: a line `time  #conn → frontend  NAME  fields  [flags]  fds`, followed
 * by a region table for SET_MEM_TABLE (so the result may hold several lines).
 */
export function describeMessage(record: MessageRecord, options: DescribeOptions = {}, decoded: Decoded = decodeRecord(record)): string {
  const c = options.chalk ?? plain;
  const parts: string[] = [c.dim(formatTime(record.timeNs))];
  if (options.connection !== false) parts.push(c.dim(`#${record.connection}`));
  const dirColor = record.direction === 'to-backend' ? c.cyan : c.magenta;
  parts.push(dirColor(`${arrow(record.direction)} ${channelLabel(record.channel).padEnd(8)}`));
  let extra = '';
  if (decoded.ok) {
    const m = decoded.message;
    parts.push(c.bold(m.name) + (m.isReply ? c.yellow(' reply') : ''));
    const fields = summarizeBody(m);
    if (fields) parts.push(fields);
    if (m.needsReply) parts.push(c.dim('[need-reply]'));
    if (m.body.kind === 'memTable' && m.body.regions.length > 0) extra = '\n' + regionTable(m.body, record.fds, c);
  } else {
    const reply = decoded.flags !== undefined && (decoded.flags & 0x4) !== 0;
    parts.push(c.bold(decoded.name ?? '(no header)') + (reply ? c.yellow(' reply') : ''));
    parts.push(c.red(`undecodable: ${decoded.error}${decoded.code ? ` [${decoded.code}${decoded.field ? ` ${decoded.field}` : ''}]` : ''}`));
    parts.push(c.dim(`(${record.bytes.length} bytes)`));
  }
  if (record.fds.length > 0) parts.push(c.green(`fds: ${fdsText(record.fds)}`));
  return parts.join('  ') + extra;
}

export function describeTranslation(record: TranslationRecord, options: DescribeOptions = {}): string {
  const c = options.chalk ?? plain;
  const res = record.result === 'hit' ? c.green(record.result) : record.result === 'miss' ? c.yellow(record.result) : c.red(record.result);
  const parts = [c.dim(formatTime(record.timeNs))];
  if (options.connection !== false) parts.push(c.dim(`#${record.connection}`));
  parts.push(c.blue(`⇢ q${record.queue}`.padEnd(9)), `translate iova ${hex(record.iova)} len ${record.length} ${accessName(record.access)}`, res);
  return parts.join('  ');
}

/** Converts bigints (anywhere in a value) to "0x..." strings and byte arrays to hex, for JSON. */
export function jsonSafe(value: unknown): unknown {
  if (typeof value === 'bigint') return hex(value);
  if (value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonSafe(v);
    return out;
  }
  return value;
}

/** A message record as a plain JSON-ready object (bigints as hex strings). */
export function messageJson(record: MessageRecord, decoded: Decoded = decodeRecord(record)): Record<string, unknown> {
  const base: Record<string, unknown> = {
    type: 'message',
    timeNs: hex(record.timeNs),
    timeMs: Number(record.timeNs) / 1e6,
    connection: record.connection,
    channel: record.channel,
    direction: record.direction,
    fds: record.fds,
    bytes: Buffer.from(record.bytes).toString('hex'),
  };
  if (decoded.ok) {
    const m = decoded.message;
    Object.assign(base, { request: m.request, name: m.name, flags: m.flags, isReply: m.isReply, needsReply: m.needsReply, body: jsonSafe(m.body) });
    if (m.body.kind === 'iotlb') Object.assign(base, { iotlbType: iotlbTypeName(m.body.iotlbType), perm: permName(m.body.perm) });
    if (m.body.kind === 'u64' && m.channel === 'frontend') {
      const table = m.request === FrontendRequest.GET_FEATURES || m.request === FrontendRequest.SET_FEATURES ? NET_DEVICE_FEATURES
        : m.request === FrontendRequest.GET_PROTOCOL_FEATURES || m.request === FrontendRequest.SET_PROTOCOL_FEATURES ? PROTOCOL_FEATURES : undefined;
      if (table && (m.isReply || m.request === FrontendRequest.SET_FEATURES || m.request === FrontendRequest.SET_PROTOCOL_FEATURES)) {
        base.features = featureNames(m.body.value, table);
      }
    }
  } else {
    Object.assign(base, {
      request: decoded.request ?? null, name: decoded.name ?? null, flags: decoded.flags ?? null,
      error: { message: decoded.error, code: decoded.code ?? null, field: decoded.field ?? null },
    });
  }
  return base;
}

export function translationJson(record: TranslationRecord): Record<string, unknown> {
  return {
    type: 'translation', timeNs: hex(record.timeNs), timeMs: Number(record.timeNs) / 1e6, connection: record.connection,
    queue: record.queue, iova: hex(record.iova), length: record.length, access: accessName(record.access), result: record.result,
  };
}

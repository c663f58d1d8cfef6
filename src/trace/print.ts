/**
 * The engine behind `trace decode`: filtering, per-record output (text or JSON lines),
 * translation run summaries and statistics. The command only parses flags and prints.
 */
import Table from 'cli-table3';
import type { ChalkInstance } from 'chalk';
import { IotlbType, knownRequests, requestName } from '../protocol/index.js';
import { plain } from '../cli/color.js';
import {
  channelLabel, decodeRecord, describeMessage, describeTranslation, formatTime, hex, messageJson,
  translationJson, type Decoded,
} from './describe.js';
import { TraceFlags, type TraceHeader } from './format.js';
import type { MessageRecord, TraceChannel, TraceRecord, TranslationRecord, TranslationResult } from './records.js';
import { ROUND_TRIP_KINDS, RoundTrips, formatUs, renderHistogram, type RoundTripKind } from './round-trips.js';

export interface MessageFilter {
  channels: Set<TraceChannel>;
  /** Upper-case request names. */
  requests: Set<string>;
}

const CHANNEL_ALIASES: Record<string, TraceChannel> = { main: 'frontend', frontend: 'frontend', 'front-end': 'frontend', backend: 'backend', 'back-end': 'backend' };

/** Every request name of both channels, upper case. */
export function allRequestNames(): Set<string> {
  const names = new Set<string>();
  for (const ch of ['frontend', 'backend'] as const) for (const r of knownRequests(ch)) names.add(requestName(ch, r));
  return names;
}

/**
 * Parses `--filter` values: channel names (frontend, backend; `main` is accepted for frontend)
 * or request names (any case).
 * Several of one kind are alternatives; a channel and a request filter must both match.
 * Throws an Error naming the bad value and the accepted ones.
 */
export function parseFilters(values: readonly string[]): MessageFilter {
  const filter: MessageFilter = { channels: new Set(), requests: new Set() };
  const names = allRequestNames();
  for (const raw of values) {
    for (const value of raw.split(',').map((v) => v.trim()).filter(Boolean)) {
      const lower = value.toLowerCase();
      const channel = CHANNEL_ALIASES[lower];
      if (channel) {
        filter.channels.add(channel);
        continue;
      }
      const upper = value.toUpperCase().replace(/^VHOST_USER_(BACKEND_|SLAVE_)?/, '');
      if (!names.has(upper)) {
        throw new Error(`unknown --filter value "${value}": use frontend, backend or a request name (e.g. ${[...names].slice(0, 4).join(', ')}, ...)`);
      }
      filter.requests.add(upper);
    }
  }
  return filter;
}

export function matchesFilter(filter: MessageFilter, record: MessageRecord, decoded: Decoded): boolean {
  if (filter.channels.size > 0 && !filter.channels.has(record.channel)) return false;
  if (filter.requests.size > 0) {
    const name = decoded.ok ? decoded.message.name : decoded.name;
    if (!name || !filter.requests.has(name.toUpperCase())) return false;
  }
  return true;
}

const RESULTS: readonly TranslationResult[] = ['hit', 'miss', 'denied', 'fault'];

/** Counters for `--stats`. */
export class TraceStats {
  messages = 0;
  undecodable = 0;
  readonly connections = new Set<number>();
  /** key "channel\u0000name" -> [requests, replies] */
  readonly perRequest = new Map<string, { channel: TraceChannel; name: string; requests: number; replies: number }>();
  readonly iotlb = { miss: 0, update: 0, invalidate: 0, accessFail: 0 };
  readonly translations = { total: 0, hit: 0, miss: 0, denied: 0, fault: 0 };
  /** IOTLB round trips; fed every message, whatever the filter (a filter would cut round trips in half). */
  readonly roundTrips = new RoundTrips();
  firstNs: bigint | null = null;
  lastNs = 0n;

  private time(t: bigint): void {
    if (this.firstNs === null) this.firstNs = t;
    if (t > this.lastNs) this.lastNs = t;
  }

  addMessage(record: MessageRecord, decoded: Decoded): void {
    this.messages++;
    this.connections.add(record.connection);
    this.time(record.timeNs);
    const name = decoded.ok ? decoded.message.name : decoded.name ?? '(no header)';
    if (!decoded.ok) this.undecodable++;
    const key = `${record.channel}\u0000${name}`;
    let row = this.perRequest.get(key);
    if (!row) this.perRequest.set(key, (row = { channel: record.channel, name, requests: 0, replies: 0 }));
    if (decoded.ok ? decoded.message.isReply : ((decoded.flags ?? 0) & 0x4) !== 0) row.replies++;
    else row.requests++;
    if (decoded.ok && decoded.message.body.kind === 'iotlb' && !decoded.message.isReply) {
      switch (decoded.message.body.iotlbType) {
        case IotlbType.MISS: this.iotlb.miss++; break;
        case IotlbType.UPDATE: this.iotlb.update++; break;
        case IotlbType.INVALIDATE: this.iotlb.invalidate++; break;
        case IotlbType.ACCESS_FAIL: this.iotlb.accessFail++; break;
      }
    }
  }

  addTranslation(record: TranslationRecord): void {
    this.translations.total++;
    this.translations[record.result]++;
    this.connections.add(record.connection);
    this.time(record.timeNs);
  }

  /** The round-trip table and a histogram per kind with samples; nothing for a trace without IOTLB traffic. */
  private renderRoundTrips(chalk: ChalkInstance): string[] {
    const report = this.roundTrips.report();
    if (ROUND_TRIP_KINDS.every((k) => report[k].count === 0 && report[k].unanswered === 0)) return [];
    const b = (s: string): string => chalk.bold(s);
    const label: Record<RoundTripKind, string> = {
      miss: 'miss → update', updateAck: 'update → ack', invalidateAck: 'invalidate → ack', frontendTurn: 'front-end turn',
    };
    const table = new Table({
      head: ['IOTLB round trip', 'count', 'mean', 'p50', 'p90', 'p99', 'max', 'unanswered'].map(b),
      style: { head: [], border: [], compact: true },
      colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    });
    for (const k of ROUND_TRIP_KINDS) {
      const r = report[k];
      const us = (v: number): string => (r.count === 0 ? '-' : formatUs(v));
      table.push([label[k], String(r.count), us(r.meanUs), us(r.p50Us), us(r.p90Us), us(r.p99Us), us(r.maxUs), String(r.unanswered)]);
    }
    const out = [table.toString()];
    if (report.frontendTurn.count > 0) {
      out.push(chalk.dim('front-end turn: the back-end\'s last reply → the front-end\'s next UPDATE answering a miss that was ' +
        'already waiting (the front-end\'s own time per answer)'));
    }
    if (report.miss.coveredBefore > 0) {
      out.push(chalk.yellow(`note: ${report.miss.coveredBefore} unanswered miss${report.miss.coveredBefore === 1 ? ' has' : 'es have'} a covering UPDATE ` +
        'stamped up to 1 ms before them: the backend channel\'s clock runs ahead of the frontend channel\'s, or the page was already mapped'));
    }
    for (const k of ROUND_TRIP_KINDS) {
      if (report[k].count === 0) continue;
      out.push(b(`${label[k]} (${report[k].count}):`), ...renderHistogram(report[k].histogram, chalk.cyan));
    }
    return out;
  }

  /** Hits / all translations, or null when there are none. */
  get hitRate(): number | null {
    return this.translations.total === 0 ? null : this.translations.hit / this.translations.total;
  }

  toJson(): Record<string, unknown> {
    return {
      type: 'stats',
      messages: this.messages,
      undecodable: this.undecodable,
      connections: this.connections.size,
      durationNs: hex(this.firstNs === null ? 0n : this.lastNs - this.firstNs),
      requests: [...this.perRequest.values()].sort(byChannelName),
      iotlb: { ...this.iotlb },
      translations: { ...this.translations, hitRate: this.hitRate },
      roundTrips: this.roundTrips.report(),
    };
  }

  /** Text tables. */
  render(chalk: ChalkInstance = plain): string {
    const style = { head: [], border: [], compact: true };
    const b = (s: string): string => chalk.bold(s);
    const out: string[] = [];
    const dur = this.firstNs === null ? 0n : this.lastNs - this.firstNs;
    out.push(`${b('messages')} ${this.messages}${this.undecodable ? chalk.red(` (${this.undecodable} undecodable)`) : ''}` +
      `, ${b('connections')} ${this.connections.size}, ${b('span')} ${formatTime(dur).trim()}`);
    const requests = new Table({ head: ['channel', 'request', 'requests', 'replies'].map(b), style, colAligns: ['left', 'left', 'right', 'right'] });
    for (const row of [...this.perRequest.values()].sort(byChannelName)) {
      requests.push([channelLabel(row.channel), row.name, String(row.requests), String(row.replies)]);
    }
    out.push(requests.toString());
    const iotlb = new Table({ head: ['IOTLB', 'count'].map(b), style, colAligns: ['left', 'right'] });
    iotlb.push(['miss (back-end → front-end)', String(this.iotlb.miss)], ['update', String(this.iotlb.update)],
      ['invalidate', String(this.iotlb.invalidate)], ['access fail', String(this.iotlb.accessFail)]);
    out.push(iotlb.toString());
    out.push(...this.renderRoundTrips(chalk));
    if (this.translations.total > 0) {
      const t = new Table({ head: ['translations', 'count'].map(b), style, colAligns: ['left', 'right'] });
      t.push(['total', String(this.translations.total)]);
      for (const r of RESULTS) t.push([r, String(this.translations[r])]);
      t.push(['hit rate', `${(this.hitRate! * 100).toFixed(2)}%`]);
      out.push(t.toString());
    }
    return out.join('\n');
  }
}

function byChannelName(a: { channel: string; name: string }, b: { channel: string; name: string }): number {
  return a.channel === b.channel ? a.name.localeCompare(b.name) : a.channel === 'frontend' ? -1 : 1;
}

/** Consecutive translations between two printed messages, shown as one line. */
class TranslationRun {
  count = 0;
  first = 0n;
  last = 0n;
  readonly results = { hit: 0, miss: 0, denied: 0, fault: 0 };
  readonly queues = new Set<number>();

  add(r: TranslationRecord): void {
    if (this.count === 0) this.first = r.timeNs;
    this.last = r.timeNs;
    this.count++;
    this.results[r.result]++;
    this.queues.add(r.queue);
  }

  text(chalk: ChalkInstance): string {
    const qs = [...this.queues].sort((a, b) => a - b).map((q) => `q${q}`).join(',');
    const res = RESULTS.filter((r) => this.results[r] > 0).map((r) => `${this.results[r]} ${r}`).join(', ');
    return chalk.dim(`${formatTime(this.first)}  … ${this.count} translation${this.count === 1 ? '' : 's'} on ${qs}: ${res}`);
  }

  json(): Record<string, unknown> {
    return {
      type: 'translations', fromNs: hex(this.first), toNs: hex(this.last), count: this.count, ...this.results,
      queues: [...this.queues].sort((a, b) => a - b),
    };
  }
}

export interface DecodeOptions {
  json?: boolean;
  filter?: MessageFilter;
  /** Print statistics only (no per-record lines). */
  stats?: boolean;
  /** Print every translation record instead of one summary line per run. */
  translations?: boolean;
  chalk?: ChalkInstance;
}

/** A description of the header for the first output line. */
export function headerLine(header: TraceHeader, source: string): string {
  const synthetic = (header.flags & TraceFlags.Synthetic) !== 0;
  const start = header.startTimeNs === 0n ? 'start time unknown' : `started ${new Date(Number(header.startTimeNs / 1_000_000n)).toISOString()}`;
  return `${source}: trace format v${header.version}, ${synthetic ? 'synthetic, ' : ''}${start}`;
}

/**
 * Walks the records, writing one line (or JSON object) per shown record via `write`.
 * Errors from the record source (TraceFormatError) propagate after everything before them
 * has been written. Returns the statistics (over the messages that pass the filter and all
 * translations).
 */
export async function decodeTrace(
  records: AsyncIterable<TraceRecord> | Iterable<TraceRecord>,
  options: DecodeOptions,
  write: (line: string) => void,
): Promise<TraceStats> {
  const chalk = options.chalk ?? plain;
  const stats = new TraceStats();
  const show = !options.stats;
  let run = new TranslationRun();
  const flushRun = (): void => {
    if (run.count === 0) return;
    if (show) write(options.json ? JSON.stringify(run.json()) : run.text(chalk));
    run = new TranslationRun();
  };
  const filter = options.filter;
  try {
    for await (const record of records) {
      if (record.type === 'translation') {
        stats.addTranslation(record);
        if (!show) continue;
        if (options.translations) write(options.json ? JSON.stringify(translationJson(record)) : describeTranslation(record, { chalk }));
        else run.add(record);
        continue;
      }
      const decoded = decodeRecord(record);
      stats.roundTrips.message(record, decoded);
      if (filter && !matchesFilter(filter, record, decoded)) continue;
      stats.addMessage(record, decoded);
      if (!show) continue;
      flushRun();
      write(options.json ? JSON.stringify(messageJson(record, decoded)) : describeMessage(record, { chalk }, decoded));
    }
  } finally {
    flushRun();
  }
  return stats;
}

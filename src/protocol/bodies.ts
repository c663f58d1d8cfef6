/**
 * Typed payloads and their byte layouts. One reader and one writer per payload kind;
 * which kinds a request may carry is decided in requests.ts, not here.
 */
import { ProtocolError } from './errors.js';

/** Largest payload we accept: rust-vmm's bound; above every fixed payload (GET_SHMEM_CONFIG reply is 2056). */
export const MAX_PAYLOAD = 4096;
/** Most fds one message may carry (VHOST_MEMORY_BASELINE_NREGIONS / VHOST_USER_BACKEND_MAX_FDS). */
export const MAX_FDS = 8;
/** SET_MEM_TABLE carries at most this many regions (QEMU's VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_REGIONS = 8;
/** Largest config space access (QEMU VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
export const CONFIG_HEADER_SIZE = 12;
export const MEM_REGION_SIZE = 32;
export const MEM_TABLE_HEADER_SIZE = 8;

/** SET_VRING_KICK/CALL/ERR and host-notifier u64: bits 0-7 are the vring index... */
export const VRING_INDEX_MASK = 0xff;
/** ...and bit 8 says no fd came with the message (poll instead). */
export const VRING_NOFD_FLAG = 0x100;
/** vringAddr.flags bit: log used-ring writes (VHOST_VRING_F_LOG). */
export const VRING_F_LOG = 0x1;

/** struct vhost_iotlb_msg type field. */
export const IotlbType = { MISS: 1, UPDATE: 2, INVALIDATE: 3, ACCESS_FAIL: 4 } as const;
/** struct vhost_iotlb_msg perm field. */
export const IotlbPerm = { NONE: 0, RO: 1, WO: 2, RW: 3 } as const;
/** VhostUserConfig flags. */
export const ConfigFlags = { WRITABLE: 0, LIVE_MIGRATION: 1 } as const;
/** SET_DEVICE_STATE_FD transfer parameters. */
export const DeviceStateDirection = { SAVE: 0, LOAD: 1 } as const;
export const DeviceStatePhase = { STOPPED: 0 } as const;

export interface MemoryRegion {
  guestAddr: bigint;
  size: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
}

export type Body =
  | { kind: 'none' }
  | { kind: 'u64'; value: bigint }
  | { kind: 'vringState'; index: number; num: number }
  | { kind: 'vringAddr'; index: number; flags: number; descUser: bigint; usedUser: bigint; availUser: bigint; logGuest: bigint }
  | { kind: 'memTable'; regions: MemoryRegion[] }
  | { kind: 'memRegion'; region: MemoryRegion }
  | { kind: 'log'; size: bigint; offset: bigint }
  | { kind: 'iotlb'; iova: bigint; size: bigint; userAddr: bigint; perm: number; iotlbType: number }
  | { kind: 'config'; offset: number; size: number; flags: number; payload: Uint8Array }
  | { kind: 'vringArea'; u64: bigint; size: bigint; offset: bigint }
  | { kind: 'inflight'; mmapSize: bigint; mmapOffset: bigint; numQueues: number; queueSize: number }
  | { kind: 'status'; value: number }
  | { kind: 'sharedObject'; uuid: Uint8Array }
  | { kind: 'deviceState'; direction: number; phase: number }
  | { kind: 'raw'; bytes: Uint8Array };

export type BodyKind = Body['kind'];

/** Wire sizes of the kinds whose size never varies. */
export const FIXED_SIZES: Partial<Record<BodyKind, number>> = {
  none: 0,
  u64: 8,
  vringState: 8,
  vringAddr: 40,
  memRegion: 8 + MEM_REGION_SIZE, // u64 padding + region
  log: 16,
  iotlb: 32, // u64 iova, size, uaddr; u8 perm, type; 6 bytes padding
  vringArea: 24,
  inflight: 24, // u64, u64, u16, u16, 4 bytes padding (struct is not packed)
  status: 8, // the spec carries device status in a u64
  sharedObject: 16,
  deviceState: 8,
};

function readRegion(view: DataView, at: number): MemoryRegion {
  return {
    guestAddr: view.getBigUint64(at, true),
    size: view.getBigUint64(at + 8, true),
    userAddr: view.getBigUint64(at + 16, true),
    mmapOffset: view.getBigUint64(at + 24, true),
  };
}

function writeRegion(view: DataView, at: number, r: MemoryRegion): void {
  setU64(view, at, 'region.guestAddr', r.guestAddr);
  setU64(view, at + 8, 'region.size', r.size);
  setU64(view, at + 16, 'region.userAddr', r.userAddr);
  setU64(view, at + 24, 'region.mmapOffset', r.mmapOffset);
}

function readMemTable(view: DataView, size: number): Body {
  const nregions = view.getUint32(0, true);
  if (nregions > MAX_MEM_REGIONS) {
    throw new ProtocolError('TOO_MANY_REGIONS', 'nregions', nregions,
      `memory table has ${nregions} regions, at most ${MAX_MEM_REGIONS} allowed`);
  }
  // QEMU sends exactly nregions entries; DPDK-style senders send the whole 8-entry struct.
  const exact = MEM_TABLE_HEADER_SIZE + nregions * MEM_REGION_SIZE;
  const full = MEM_TABLE_HEADER_SIZE + MAX_MEM_REGIONS * MEM_REGION_SIZE;
  if (size !== exact && size !== full) {
    throw new ProtocolError('BAD_SIZE', 'nregions', { nregions, size },
      `memory table with ${nregions} regions must be ${exact} (or ${full}) bytes, got ${size}`);
  }
  const regions: MemoryRegion[] = [];
  for (let i = 0; i < nregions; i++) regions.push(readRegion(view, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE));
  return { kind: 'memTable', regions };
}

function readConfig(view: DataView, size: number): Body {
  const offset = view.getUint32(0, true);
  const cfgSize = view.getUint32(4, true);
  const flags = view.getUint32(8, true);
  if (cfgSize > MAX_CONFIG_SIZE) {
    throw new ProtocolError('BAD_CONFIG_SIZE', 'config.size', cfgSize,
      `config access of ${cfgSize} bytes exceeds ${MAX_CONFIG_SIZE}`);
  }
  if (size !== CONFIG_HEADER_SIZE + cfgSize) {
    throw new ProtocolError('BAD_SIZE', 'size', size,
      `config payload with size field ${cfgSize} must be ${CONFIG_HEADER_SIZE + cfgSize} bytes, got ${size}`);
  }
  const payload = copyBytes(view, CONFIG_HEADER_SIZE, cfgSize);
  return { kind: 'config', offset, size: cfgSize, flags, payload };
}

function copyBytes(view: DataView, at: number, length: number): Uint8Array {
  // Copy so decoded messages never alias the framer's reusable buffer.
  return new Uint8Array(view.buffer, view.byteOffset + at, length).slice();
}

function readIotlb(view: DataView): Body {
  const perm = view.getUint8(24);
  const iotlbType = view.getUint8(25);
  if (perm > IotlbPerm.RW) throw new ProtocolError('BAD_VALUE', 'iotlb.perm', perm, `IOTLB perm ${perm} is not 0-3`);
  if (iotlbType < IotlbType.MISS || iotlbType > IotlbType.ACCESS_FAIL) {
    throw new ProtocolError('BAD_VALUE', 'iotlb.type', iotlbType, `IOTLB type ${iotlbType} is not 1-4`);
  }
  return {
    kind: 'iotlb',
    iova: view.getBigUint64(0, true),
    size: view.getBigUint64(8, true),
    userAddr: view.getBigUint64(16, true),
    perm,
    iotlbType,
  };
}

/**
 * Reads a payload of the given kind. `view` covers exactly the payload; the caller already
 * checked that fixed-size kinds got their size.
 */
export function readBody(kind: BodyKind, view: DataView): Body {
  const size = view.byteLength;
  switch (kind) {
    case 'none':
      return { kind };
    case 'u64':
      return { kind, value: view.getBigUint64(0, true) };
    case 'vringState':
      return { kind, index: view.getUint32(0, true), num: view.getUint32(4, true) };
    case 'vringAddr':
      return {
        kind,
        index: view.getUint32(0, true),
        flags: view.getUint32(4, true),
        descUser: view.getBigUint64(8, true),
        usedUser: view.getBigUint64(16, true),
        availUser: view.getBigUint64(24, true),
        logGuest: view.getBigUint64(32, true),
      };
    case 'memTable':
      return readMemTable(view, size);
    case 'memRegion':
      return { kind, region: readRegion(view, 8) };
    case 'log':
      return { kind, size: view.getBigUint64(0, true), offset: view.getBigUint64(8, true) };
    case 'iotlb':
      return readIotlb(view);
    case 'config':
      return readConfig(view, size);
    case 'vringArea':
      return { kind, u64: view.getBigUint64(0, true), size: view.getBigUint64(8, true), offset: view.getBigUint64(16, true) };
    case 'inflight':
      return {
        kind,
        mmapSize: view.getBigUint64(0, true),
        mmapOffset: view.getBigUint64(8, true),
        numQueues: view.getUint16(16, true),
        queueSize: view.getUint16(18, true),
      };
    case 'status': {
      const value = view.getBigUint64(0, true);
      if (value > 0xffn) throw new ProtocolError('BAD_VALUE', 'status', value, `device status ${value} does not fit 8 bits`);
      return { kind, value: Number(value) };
    }
    case 'sharedObject':
      return { kind, uuid: copyBytes(view, 0, 16) };
    case 'deviceState':
      return { kind, direction: view.getUint32(0, true), phase: view.getUint32(4, true) };
    case 'raw':
      return { kind, bytes: copyBytes(view, 0, size) };
  }
}

/** Payload size the encoder will emit for a body (memTable: only the used entries, as QEMU does). */
export function bodySize(body: Body): number {
  switch (body.kind) {
    case 'memTable':
      return MEM_TABLE_HEADER_SIZE + body.regions.length * MEM_REGION_SIZE;
    case 'config':
      return CONFIG_HEADER_SIZE + body.payload.length;
    case 'raw':
      return body.bytes.length;
    default:
      return FIXED_SIZES[body.kind]!;
  }
}

function checkUint(field: string, value: number, bits: 8 | 16 | 32): void {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new ProtocolError('BAD_VALUE', field, value, `${field} = ${value} does not fit u${bits}`);
  }
}

/** DataView silently wraps out-of-range bigints; refuse them instead. */
function setU64(view: DataView, at: number, field: string, value: bigint): void {
  if (value < 0n || value >= 1n << 64n) {
    throw new ProtocolError('BAD_VALUE', field, value, `${field} = ${value} does not fit u64`);
  }
  view.setBigUint64(at, value, true);
}

/** Writes a body into `view` (exactly bodySize(body) bytes, zero-filled by the caller). */
export function writeBody(body: Body, view: DataView): void {
  switch (body.kind) {
    case 'none':
      return;
    case 'u64':
      setU64(view, 0, 'value', body.value);
      return;
    case 'vringState':
      checkUint('index', body.index, 32);
      checkUint('num', body.num, 32);
      view.setUint32(0, body.index, true);
      view.setUint32(4, body.num, true);
      return;
    case 'vringAddr':
      checkUint('index', body.index, 32);
      checkUint('flags', body.flags, 32);
      view.setUint32(0, body.index, true);
      view.setUint32(4, body.flags, true);
      setU64(view, 8, 'descUser', body.descUser);
      setU64(view, 16, 'usedUser', body.usedUser);
      setU64(view, 24, 'availUser', body.availUser);
      setU64(view, 32, 'logGuest', body.logGuest);
      return;
    case 'memTable':
      if (body.regions.length > MAX_MEM_REGIONS) {
        throw new ProtocolError('TOO_MANY_REGIONS', 'nregions', body.regions.length,
          `memory table has ${body.regions.length} regions, at most ${MAX_MEM_REGIONS} allowed`);
      }
      view.setUint32(0, body.regions.length, true);
      body.regions.forEach((r, i) => writeRegion(view, MEM_TABLE_HEADER_SIZE + i * MEM_REGION_SIZE, r));
      return;
    case 'memRegion':
      writeRegion(view, 8, body.region);
      return;
    case 'log':
      setU64(view, 0, 'log.size', body.size);
      setU64(view, 8, 'log.offset', body.offset);
      return;
    case 'iotlb':
      checkUint('iotlb.perm', body.perm, 8);
      checkUint('iotlb.type', body.iotlbType, 8);
      setU64(view, 0, 'iotlb.iova', body.iova);
      setU64(view, 8, 'iotlb.size', body.size);
      setU64(view, 16, 'iotlb.userAddr', body.userAddr);
      view.setUint8(24, body.perm);
      view.setUint8(25, body.iotlbType);
      return;
    case 'config':
      if (body.payload.length > MAX_CONFIG_SIZE || body.size !== body.payload.length) {
        throw new ProtocolError('BAD_CONFIG_SIZE', 'config.size', body.size,
          `config size ${body.size} must equal payload length ${body.payload.length} and be <= ${MAX_CONFIG_SIZE}`);
      }
      checkUint('config.offset', body.offset, 32);
      checkUint('config.flags', body.flags, 32);
      view.setUint32(0, body.offset, true);
      view.setUint32(4, body.size, true);
      view.setUint32(8, body.flags, true);
      new Uint8Array(view.buffer, view.byteOffset + CONFIG_HEADER_SIZE, body.size).set(body.payload);
      return;
    case 'vringArea':
      setU64(view, 0, 'vringArea.u64', body.u64);
      setU64(view, 8, 'vringArea.size', body.size);
      setU64(view, 16, 'vringArea.offset', body.offset);
      return;
    case 'inflight':
      checkUint('inflight.numQueues', body.numQueues, 16);
      checkUint('inflight.queueSize', body.queueSize, 16);
      setU64(view, 0, 'inflight.mmapSize', body.mmapSize);
      setU64(view, 8, 'inflight.mmapOffset', body.mmapOffset);
      view.setUint16(16, body.numQueues, true);
      view.setUint16(18, body.queueSize, true);
      return;
    case 'status':
      checkUint('status', body.value, 8);
      view.setBigUint64(0, BigInt(body.value), true);
      return;
    case 'sharedObject':
      if (body.uuid.length !== 16) throw new ProtocolError('BAD_VALUE', 'uuid', body.uuid.length, 'UUID must be 16 bytes');
      new Uint8Array(view.buffer, view.byteOffset, 16).set(body.uuid);
      return;
    case 'deviceState':
      checkUint('deviceState.direction', body.direction, 32);
      checkUint('deviceState.phase', body.phase, 32);
      view.setUint32(0, body.direction, true);
      view.setUint32(4, body.phase, true);
      return;
    case 'raw':
      new Uint8Array(view.buffer, view.byteOffset, body.bytes.length).set(body.bytes);
      return;
  }
}

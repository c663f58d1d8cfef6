/**
 * One row per front-end request. The dispatcher (session.ts) does the generic work — fds
 * nobody took are closed, NEED_REPLY is answered, errors become REPLY_ACK failures — so each
 * handler only checks semantics against the device state and changes it.
 * The table is typed so that a request without a row does not compile.
 */
import { ADDRESS_LIMIT } from '../iotlb/address.js';
import { FrontendRequest, IotlbType, VirtioFeature, VRING_INDEX_MASK, VRING_NOFD_FLAG, type Body, type VhostMessage } from '../protocol/index.js';
import { ProtocolFeature } from '../protocol/features.js';
import type { NetDevice } from './device.js';
import { DeviceError, toSafeNumber } from './errors.js';
import { MAX_MEM_SLOTS } from './offered-features.js';

export interface HandlerContext {
  /** Takes ownership of the message's i-th fd; fds not taken are closed after the handler. */
  takeFd(i: number): number;
}

/** A handler returns the reply body for requests that have one. */
export type Handler = (device: NetDevice, msg: VhostMessage, ctx: HandlerContext) => Promise<Body | void> | Body | void;

type RequestName = keyof typeof FrontendRequest;

function u64(msg: VhostMessage): bigint {
  if (msg.body.kind !== 'u64') throw new DeviceError(`${msg.name}: expected a u64 payload, got ${msg.body.kind}`);
  return msg.body.value;
}

function vringState(msg: VhostMessage): { index: number; num: number } {
  if (msg.body.kind !== 'vringState') throw new DeviceError(`${msg.name}: expected a vring state payload`);
  return msg.body;
}

const reply = (value: bigint | number): Body => ({ kind: 'u64', value: BigInt(value) });

function requireOwner(device: NetDevice, msg: VhostMessage): void {
  if (!device.owner) throw new DeviceError(`${msg.name} before SET_OWNER`);
}

/** SET_VRING_KICK / CALL / ERR share the index|NOFD encoding. */
function vringFd(device: NetDevice, msg: VhostMessage, ctx: HandlerContext): { vring: ReturnType<NetDevice['vring']>; fd: number } {
  const value = u64(msg);
  if ((value & ~BigInt(VRING_INDEX_MASK | VRING_NOFD_FLAG)) !== 0n) {
    throw new DeviceError(`${msg.name}: reserved bits set in 0x${value.toString(16)}`);
  }
  const vring = device.vring(Number(value & BigInt(VRING_INDEX_MASK)), msg.name);
  const noFd = (value & BigInt(VRING_NOFD_FLAG)) !== 0n;
  return { vring, fd: noFd ? -1 : ctx.takeFd(0) };
}

const unsupported: Handler = (_device, msg) => {
  throw new DeviceError(`${msg.name} is not supported by this device (its protocol feature was not offered)`);
};

export const handlers = {
  GET_FEATURES: (device) => reply(device.offeredFeatures),

  SET_FEATURES: async (device, msg) => {
    const features = u64(msg);
    const unknown = features & ~device.offeredFeatures;
    if (unknown !== 0n) throw new DeviceError(`SET_FEATURES: bits 0x${unknown.toString(16)} were not offered`);
    // LOG_ALL is the one bit a running device may toggle: it starts and ends a migration.
    const logAll = 1n << BigInt(VirtioFeature.LOG_ALL);
    if (device.vrings.some((v) => v.running) && (features & ~logAll) !== (device.features & ~logAll)) {
      throw new DeviceError('SET_FEATURES: features other than LOG_ALL cannot change while rings run');
    }
    const hadIommu = device.iommu;
    device.features = features;
    device.featuresSet = true;
    if (device.iommu && !hadIommu) device.iommuNegotiated();
    await device.dropIdleWorkers();
    device.forgetIotlbIfStopped();
    // Replied (REPLY_ACK) or followed by GET_FEATURES only once every worker logs: QEMU
    // counts on every write after this reply being in the log.
    await device.applyDirtyLog();
  },

  SET_OWNER: (device) => {
    device.owner = true;
  },

  RESET_OWNER: async (device) => {
    for (const vring of device.vrings) {
      vring.enabled = false;
      await device.reconcile(vring);
    }
  },

  SET_MEM_TABLE: async (device, msg, ctx) => {
    requireOwner(device, msg);
    if (msg.body.kind !== 'memTable') throw new DeviceError('SET_MEM_TABLE: expected a memory table');
    const fds = msg.body.regions.map((_, i) => ctx.takeFd(i));
    try {
      device.memory.replace(msg.body.regions, fds);
    } catch (err) {
      // The table was refused whole: the fds it came with are ours to close.
      for (const fd of fds) device.closeQuietly(fd);
      throw err;
    }
    await device.memoryChanged();
  },

  SET_LOG_BASE: async (device, msg, ctx) => {
    requireOwner(device, msg);
    if (msg.body.kind !== 'log') throw new DeviceError('SET_LOG_BASE: expected a log size and offset');
    const fd = ctx.takeFd(0);
    await device.setDirtyLog(fd, msg.body.size, msg.body.offset);
    return reply(0);
  },

  /** An eventfd the front-end may want signalled after log writes; QEMU relies on the shared log alone. */
  SET_LOG_FD: (device, msg, ctx) => {
    requireOwner(device, msg);
    device.setLogFd(ctx.takeFd(0));
  },

  SET_VRING_NUM: (device, msg) => {
    const { index, num } = vringState(msg);
    const vring = device.vring(index, msg.name);
    if (vring.running) throw new DeviceError(`SET_VRING_NUM: vring ${index} is running`);
    // Packed rings may have any size; split rings need a power of two.
    if (num === 0 || num > 32768 || (!device.packed && (num & (num - 1)) !== 0)) {
      throw new DeviceError(`SET_VRING_NUM: size ${num} is not ${device.packed ? 'in' : 'a power of two in'} 1..32768`);
    }
    vring.size = num;
  },

  SET_VRING_ADDR: (device, msg) => {
    if (msg.body.kind !== 'vringAddr') throw new DeviceError('SET_VRING_ADDR: expected a vring address');
    const vring = device.vring(msg.body.index, msg.name);
    const desc = toSafeNumber(msg.body.descUser, 'SET_VRING_ADDR.desc_user_addr');
    const avail = toSafeNumber(msg.body.availUser, 'SET_VRING_ADDR.avail_user_addr');
    const used = toSafeNumber(msg.body.usedUser, 'SET_VRING_ADDR.used_user_addr');
    if (vring.running) {
      // QEMU resends the same addresses to a running ring to switch used-ring logging on or
      // off (VHOST_VRING_F_LOG) when a migration starts or ends; the workers log every ring
      // write while LOG_ALL is on, so only a real move is refused.
      if (desc === vring.descAddr && avail === vring.availAddr && used === vring.usedAddr) return;
      throw new DeviceError(`SET_VRING_ADDR: vring ${vring.index} is running`);
    }
    vring.descAddr = desc;
    vring.availAddr = avail;
    vring.usedAddr = used;
    vring.addressSet = true;
    vring.broken = null;
  },

  SET_VRING_BASE: (device, msg) => {
    const { index, num } = vringState(msg);
    const vring = device.vring(index, msg.name);
    if (vring.running) throw new DeviceError(`SET_VRING_BASE: vring ${index} is running`);
    if (device.packed) {
      // vhost-user.rst: bits 0-14 avail index, 15 avail wrap counter, 16-30 used index, 31 used wrap counter.
      const avail = num & 0x7fff;
      const used = (num >>> 16) & 0x7fff;
      if (vring.size > 0 && (avail >= vring.size || used >= vring.size)) {
        throw new DeviceError(`SET_VRING_BASE: packed base 0x${num.toString(16)} has an index beyond queue size ${vring.size}`);
      }
    } else if (num > 0xffff) {
      throw new DeviceError(`SET_VRING_BASE: base ${num} does not fit a 16-bit ring index`);
    }
    vring.base = num;
  },

  GET_VRING_BASE: async (device, msg): Promise<Body> => {
    const { index } = vringState(msg);
    const vring = device.vring(index, msg.name);
    vring.kickSet = false;
    await device.reconcile(vring);
    if (vring.kickFd >= 0) device.closeQuietly(vring.kickFd);
    vring.kickFd = -1;
    vring.broken = null;
    return { kind: 'vringState', index, num: vring.base };
  },

  SET_VRING_KICK: async (device, msg, ctx) => {
    const { vring, fd } = vringFd(device, msg, ctx);
    if (vring.running) {
      vring.kickSet = false;
      await device.reconcile(vring);
    }
    if (vring.kickFd >= 0) device.closeQuietly(vring.kickFd);
    vring.kickFd = fd;
    vring.kickSet = true;
    // Without protocol features a ring is enabled as soon as it is kicked (spec: "Ring states").
    if (!device.has(VirtioFeature.PROTOCOL_FEATURES)) vring.enabled = true;
    await device.reconcile(vring);
  },

  SET_VRING_CALL: async (device, msg, ctx) => {
    const { vring, fd } = vringFd(device, msg, ctx);
    await device.setCall(vring, fd);
  },

  SET_VRING_ERR: (device, msg, ctx) => {
    const { vring, fd } = vringFd(device, msg, ctx);
    if (vring.errFd >= 0) device.closeQuietly(vring.errFd);
    vring.errFd = fd;
  },

  GET_PROTOCOL_FEATURES: (device) => reply(device.offeredProtocolFeatures),

  SET_PROTOCOL_FEATURES: (device, msg) => {
    const features = u64(msg);
    const unknown = features & ~device.offeredProtocolFeatures;
    if (unknown !== 0n) throw new DeviceError(`SET_PROTOCOL_FEATURES: bits 0x${unknown.toString(16)} were not offered`);
    device.protocolFeatures = features;
  },

  GET_QUEUE_NUM: (device) => reply(device.options.queuePairs),

  SET_VRING_ENABLE: async (device, msg) => {
    const { index, num } = vringState(msg);
    const vring = device.vring(index, msg.name);
    if (num > 1) throw new DeviceError(`SET_VRING_ENABLE: num ${num} is neither 0 nor 1`);
    vring.enabled = num === 1;
    await device.reconcile(vring);
  },

  SEND_RARP: (device, msg) => {
    if (!device.hasProtocol(ProtocolFeature.RARP)) throw new DeviceError('SEND_RARP without the RARP protocol feature');
    device.announce(u64(msg));
  },

  NET_SET_MTU: (device, msg) => {
    if (!device.hasProtocol(ProtocolFeature.NET_MTU)) throw new DeviceError('NET_SET_MTU without the NET_MTU protocol feature');
    const mtu = u64(msg);
    // virtio 1.2 §5.1.4: the device MTU field is at least 68; a tap takes up to 65535.
    if (mtu < 68n || mtu > 65535n) throw new DeviceError(`NET_SET_MTU: ${mtu} is not in 68..65535`);
    device.setMtu(Number(mtu));
  },

  SET_BACKEND_REQ_FD: async (device, msg, ctx) => {
    if (!device.hasProtocol(ProtocolFeature.BACKEND_REQ)) throw new DeviceError('SET_BACKEND_REQ_FD without the BACKEND_REQ protocol feature');
    await device.setBackendChannel(ctx.takeFd(0));
  },

  IOTLB_MSG: async (device, msg) => {
    if (msg.body.kind !== 'iotlb') throw new DeviceError('IOTLB_MSG: expected an IOTLB message');
    if (!device.iommu) throw new DeviceError('IOTLB_MSG while ACCESS_PLATFORM is not negotiated');
    const { iova, size, userAddr, perm, iotlbType } = msg.body;
    if (iotlbType === IotlbType.UPDATE) {
      if (size === 0n) throw new DeviceError('IOTLB_MSG update: size is 0');
      if (perm < 1 || perm > 3) throw new DeviceError(`IOTLB_MSG update: perm ${perm} is not RO, WO or RW`);
      const start = toSafeNumber(iova, 'IOTLB_MSG.iova');
      const length = toSafeNumber(size, 'IOTLB_MSG.size');
      const uaddr = toSafeNumber(userAddr, 'IOTLB_MSG.uaddr');
      if (start + length > ADDRESS_LIMIT || uaddr + length > ADDRESS_LIMIT) throw new DeviceError('IOTLB_MSG update: iova or uaddr + size wraps');
      await device.iotlbUpdate(start, length, uaddr, perm);
    } else if (iotlbType === IotlbType.INVALIDATE) {
      // An invalidation may name the whole 64-bit space; clamping it only widens what is dropped.
      const limit = BigInt(ADDRESS_LIMIT);
      const start = iova >= limit ? limit - 1n : iova;
      const end = iova + size >= limit ? limit : iova + size;
      await device.iotlbInvalidate(Number(start), Math.max(1, Number(end - start)));
    } else {
      throw new DeviceError(`IOTLB_MSG: type ${iotlbType} is not UPDATE or INVALIDATE`);
    }
  },

  SET_VRING_ENDIAN: unsupported,
  GET_CONFIG: unsupported,
  SET_CONFIG: unsupported,
  CREATE_CRYPTO_SESSION: unsupported,
  CLOSE_CRYPTO_SESSION: unsupported,
  POSTCOPY_ADVISE: unsupported,
  POSTCOPY_LISTEN: unsupported,
  POSTCOPY_END: unsupported,
  GET_INFLIGHT_FD: unsupported,
  SET_INFLIGHT_FD: unsupported,
  GPU_SET_SOCKET: unsupported,

  RESET_DEVICE: async (device) => {
    await device.resetRings();
  },

  VRING_KICK: unsupported,

  GET_MAX_MEM_SLOTS: () => reply(MAX_MEM_SLOTS),

  ADD_MEM_REG: async (device, msg, ctx) => {
    requireOwner(device, msg);
    if (msg.body.kind !== 'memRegion') throw new DeviceError('ADD_MEM_REG: expected a memory region');
    const fd = ctx.takeFd(0);
    let changed: boolean;
    try {
      changed = device.memory.add(msg.body.region, fd);
    } catch (err) {
      device.closeQuietly(fd);
      throw err;
    }
    if (changed) await device.memoryChanged();
  },

  REM_MEM_REG: async (device, msg) => {
    if (msg.body.kind !== 'memRegion') throw new DeviceError('REM_MEM_REG: expected a memory region');
    if (device.memory.remove(msg.body.region)) await device.memoryChanged();
  },

  SET_STATUS: (device, msg) => {
    if (msg.body.kind !== 'status' && msg.body.kind !== 'u64') throw new DeviceError('SET_STATUS: expected a status');
    device.status = Number(msg.body.kind === 'status' ? msg.body.value : msg.body.value & 0xffn);
  },

  GET_STATUS: (device): Body => ({ kind: 'status', value: device.status }),

  GET_SHARED_OBJECT: unsupported,
  SET_DEVICE_STATE_FD: unsupported,
  CHECK_DEVICE_STATE: unsupported,
  GET_SHMEM_CONFIG: unsupported,
} satisfies Record<RequestName, Handler>;

export function handlerFor(request: number): Handler | undefined {
  const name = FrontendRequest[request] as RequestName | undefined;
  return name === undefined ? undefined : (handlers as Record<RequestName, Handler>)[name];
}

/**
 * Feature bit numbers: virtio device-independent bits, virtio-net bits, the vhost bits
 * (LOG_ALL, PROTOCOL_FEATURES) and the vhost-user protocol feature bits.
 * Tables map name -> bit number; the first name listed for a bit is the one featureNames prints,
 * later entries are aliases kept so old spellings (SLAVE_*, IOMMU_PLATFORM) still resolve.
 */

export type FeatureTable = Readonly<Record<string, number>>;

/** Device-independent virtio bits (virtio 1.x section 6) plus the vhost-specific ones. */
export const VirtioFeature = {
  NOTIFY_ON_EMPTY: 24,
  LOG_ALL: 26, // vhost: dirty logging of all guest writes
  ANY_LAYOUT: 27,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  PROTOCOL_FEATURES: 30, // vhost-user: GET/SET_PROTOCOL_FEATURES supported (reused UNUSED bit)
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  IOMMU_PLATFORM: 33, // older name of ACCESS_PLATFORM; turns ring addresses into IOVAs
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
  ADMIN_VQ: 41,
} as const;

/** virtio-net device bits (virtio 1.3 section 5.1.3). */
export const NetFeature = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  GSO: 6, // legacy only
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  CTRL_RX_EXTRA: 20,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
  DEVICE_STATS: 50,
  VQ_NOTF_COAL: 52,
  NOTF_COAL: 53,
  GUEST_USO4: 54,
  GUEST_USO6: 55,
  HOST_USO: 56,
  HASH_REPORT: 57,
  GUEST_HDRLEN: 59,
  RSS: 60,
  RSC_EXT: 61,
  STANDBY: 62,
  SPEED_DUPLEX: 63,
} as const;

/** Everything GET_FEATURES/SET_FEATURES can carry for a net device. */
export const NET_DEVICE_FEATURES: FeatureTable = { ...NetFeature, ...VirtioFeature };

/** vhost-user protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  MTU: 4, // the spec's #define spelling
  BACKEND_REQ: 5,
  SLAVE_REQ: 5, // previous name
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  SLAVE_SEND_FD: 10, // previous name
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
  GET_VRING_BASE_INFLIGHT: 20,
  SHMEM: 21,
} as const;

export const PROTOCOL_FEATURES: FeatureTable = ProtocolFeature;

/** The 64-bit mask for one bit number. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

export function hasFeature(bits: bigint, bit: number): boolean {
  return (bits & featureBit(bit)) !== 0n;
}

/** Mask of several bit numbers, e.g. featureMask(VirtioFeature.VERSION_1, NetFeature.MAC). */
export function featureMask(...bitNumbers: number[]): bigint {
  return bitNumbers.reduce((mask, bit) => mask | featureBit(bit), 0n);
}

/** Names of the set bits, lowest first; bits the table lacks print as "bit N". */
export function featureNames(bits: bigint, table: FeatureTable): string[] {
  const byBit = new Map<number, string>();
  for (const [name, bit] of Object.entries(table)) if (!byBit.has(bit)) byBit.set(bit, name);
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (hasFeature(bits, bit)) names.push(byBit.get(bit) ?? `bit ${bit}`);
  }
  return names;
}

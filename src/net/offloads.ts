/**
 * virtio-net transmit offloads (virtio 1.2 §5.1.6.2): which ones an endpoint honours, and the
 * check every guest header passes before it reaches the kernel. A tap opened with
 * IFF_VNET_HDR takes the header as is, so a TCP segment of up to 64 KiB with a partial
 * checksum crosses untouched and the kernel segments and checksums it (as QEMU's own
 * `-netdev tap` does). A header the negotiated features do not allow, or whose offsets
 * point past the frame, is refused: the frame is dropped and counted, never handed on
 * (the class of CVE-2021-3839's unchecked header fields). The other way, each header the tap
 * hands back is fitted to the receive offloads the guest negotiated (fitRxHeader).
 */
import { featureMask, hasFeature, NetFeature } from '../protocol/features.js';

/** Receive offloads a tap may use (TUN_F_* of linux/if_tun.h), from the guest's GUEST_* features. */
export const TunOffload = { Csum: 1, Tso4: 2, Tso6: 4, TsoEcn: 8 } as const;

/** Feature bits a device offers when its endpoint's frames come with headers (the tap). */
export const RX_OFFLOAD_FEATURES = featureMask(NetFeature.GUEST_CSUM, NetFeature.GUEST_TSO4, NetFeature.GUEST_TSO6, NetFeature.GUEST_ECN);

/**
 * The TUN_F_* flags for a guest with `features`: a tap then hands us only what the guest can
 * take (the kernel needs TUN_F_CSUM for any TSO, as the spec needs GUEST_CSUM).
 */
export function tunOffloadsOf(features: bigint): number {
  if (!hasFeature(features, NetFeature.GUEST_CSUM)) return 0;
  let flags: number = TunOffload.Csum;
  if (hasFeature(features, NetFeature.GUEST_TSO4)) flags |= TunOffload.Tso4;
  if (hasFeature(features, NetFeature.GUEST_TSO6)) flags |= TunOffload.Tso6;
  if ((flags & (TunOffload.Tso4 | TunOffload.Tso6)) !== 0 && hasFeature(features, NetFeature.GUEST_ECN)) flags |= TunOffload.TsoEcn;
  return flags;
}

/** Transmit offloads the guest may use, from the negotiated features. */
export const TxOffload = { Csum: 1, Tso4: 2, Tso6: 4, Ecn: 8 } as const;

/** Feature bits a device offers when its endpoint takes headers (the tap). */
export const TX_OFFLOAD_FEATURES = featureMask(NetFeature.CSUM, NetFeature.HOST_TSO4, NetFeature.HOST_TSO6, NetFeature.HOST_ECN);

export function txOffloadsOf(features: bigint): number {
  let bits = 0;
  if (hasFeature(features, NetFeature.CSUM)) bits |= TxOffload.Csum;
  // The spec makes HOST_TSO* require CSUM: a segment's checksum is always partial.
  if (bits !== 0 && hasFeature(features, NetFeature.HOST_TSO4)) bits |= TxOffload.Tso4;
  if (bits !== 0 && hasFeature(features, NetFeature.HOST_TSO6)) bits |= TxOffload.Tso6;
  if ((bits & (TxOffload.Tso4 | TxOffload.Tso6)) !== 0 && hasFeature(features, NetFeature.HOST_ECN)) bits |= TxOffload.Ecn;
  return bits;
}

/** virtio_net_hdr fields (little-endian, VERSION_1 and the tap's default alike). */
const FLAG_NEEDS_CSUM = 1;
const FLAG_DATA_VALID = 2;
const GSO_NONE = 0;
const GSO_TCPV4 = 1;
const GSO_TCPV6 = 4;
const GSO_ECN = 0x80;
/** An Ethernet header, the least a checksum or a segment can start after. */
const ETH_HLEN = 14;

/**
 * Why the header `h` (its first 10 bytes) cannot go with a frame of `len` bytes under
 * `allowed` offloads, or '' if it can. Called per frame: no allocation on the valid path.
 */
export function txHeaderProblem(h: Uint8Array, len: number, allowed: number): string {
  const flags = h[0]!;
  const gsoType = h[1]!;
  const hdrLen = h[2]! | (h[3]! << 8);
  const gsoSize = h[4]! | (h[5]! << 8);
  const csumStart = h[6]! | (h[7]! << 8);
  const csumOffset = h[8]! | (h[9]! << 8);
  if ((flags & ~(FLAG_NEEDS_CSUM | FLAG_DATA_VALID)) !== 0) return `flags 0x${flags.toString(16)} has unknown bits`;
  if ((flags & FLAG_NEEDS_CSUM) !== 0) {
    if ((allowed & TxOffload.Csum) === 0) return 'NEEDS_CSUM without CSUM negotiated';
    if (csumStart < ETH_HLEN || csumStart + csumOffset + 2 > len) {
      return `csum_start ${csumStart} + csum_offset ${csumOffset} lies outside the ${len}-byte frame`;
    }
  }
  const type = gsoType & ~GSO_ECN;
  if (type === GSO_NONE) return (gsoType & GSO_ECN) !== 0 ? 'ECN bit without a GSO type' : '';
  if (type === GSO_TCPV4 ? (allowed & TxOffload.Tso4) === 0 : type === GSO_TCPV6 ? (allowed & TxOffload.Tso6) === 0 : true) {
    return `gso_type ${gsoType} not negotiated`;
  }
  if ((gsoType & GSO_ECN) !== 0 && (allowed & TxOffload.Ecn) === 0) return 'GSO ECN bit without HOST_ECN negotiated';
  if ((flags & FLAG_NEEDS_CSUM) === 0) return 'a GSO frame without NEEDS_CSUM';
  if (gsoSize === 0) return 'gso_size 0';
  if (hdrLen > len) return `hdr_len ${hdrLen} beyond the ${len}-byte frame`;
  return '';
}

/**
 * Fits the header `h` of a frame the tap handed us to what the guest takes (`tunFlags`,
 * TUN_F_* from tunOffloadsOf), as the spec asks: flags only with GUEST_CSUM, a GSO type only
 * with its GUEST_* feature (virtio 1.2 §5.1.6.4.1). DATA_VALID (the kernel checked the
 * checksum: a frame bridged from a NIC that verified it) is cleared for a guest without
 * GUEST_CSUM, which then checks the complete checksum itself. False for what cannot be
 * delivered: a partial checksum or a segment the guest did not negotiate, which the kernel
 * hands out only for frames queued in the tap before TUNSETOFFLOAD (while an earlier guest
 * with more offloads was connected). Called per frame: two loads when the header is plain.
 */
export function fitRxHeader(h: Uint8Array, tunFlags: number): boolean {
  const flags = h[0]!;
  const gsoType = h[1]!;
  if ((flags | gsoType) === 0) return true;
  if ((flags & ~(FLAG_NEEDS_CSUM | FLAG_DATA_VALID)) !== 0) return false;
  if ((tunFlags & TunOffload.Csum) === 0) {
    if (flags !== FLAG_DATA_VALID || gsoType !== GSO_NONE) return false;
    h[0] = 0;
    return true;
  }
  const type = gsoType & ~GSO_ECN;
  if (type === GSO_NONE) return gsoType === GSO_NONE;
  const allowed = type === GSO_TCPV4 ? TunOffload.Tso4 : type === GSO_TCPV6 ? TunOffload.Tso6 : 0;
  if (allowed === 0 || (tunFlags & allowed) === 0) return false;
  return (gsoType & GSO_ECN) === 0 || (tunFlags & TunOffload.TsoEcn) !== 0;
}

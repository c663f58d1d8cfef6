// TAP devices for the net/tap endpoint.
import { native } from './native.js';
import { checkString } from './errors.js';

/**
 * Opens /dev/net/tun (O_NONBLOCK|O_CLOEXEC) and attaches a tap (IFF_TAP|IFF_NO_PI, plus
 * IFF_VNET_HDR when vnetHdr, IFF_MULTI_QUEUE when multiQueue: each open of the same name
 * then adds a queue, and the kernel spreads the flows it sends over them). An empty name lets
 * the kernel pick; the actual name is returned. Needs CAP_NET_ADMIN unless the device
 * already exists and is owned by the caller.
 */
export function openTap(name: string, vnetHdr = false, multiQueue = false): { fd: number; name: string } {
  checkString('openTap name', name, 15); // IFNAMSIZ - 1
  if (typeof vnetHdr !== 'boolean') throw new TypeError('openTap vnetHdr must be a boolean');
  return native().openTap(name, vnetHdr, multiQueue);
}

/**
 * A tap opened with IFF_VNET_HDR: the size of the virtio-net header that leads every frame
 * read or written (10, or 12 with num_buffers), and which offloads (TUN_F_CSUM, TUN_F_TSO4...)
 * the kernel may use in frames it gives us. Frames we write may carry any GSO type.
 */
export function setTapOffload(fd: number, vnetHdrSize: number, offloadFlags: number): void {
  if (vnetHdrSize !== 10 && vnetHdrSize !== 12) throw new RangeError(`setTapOffload: header size ${vnetHdrSize} is not 10 or 12`);
  native().setTapOffload(fd, vnetHdrSize, offloadFlags >>> 0);
}

/** Sets a network interface's MTU (SIOCSIFMTU), e.g. the tap's to what the guest was given. */
export function setInterfaceMtu(name: string, mtu: number): void {
  checkString('setInterfaceMtu name', name, 15);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`setInterfaceMtu: ${mtu} is not in 68..65535`);
  native().setInterfaceMtu(name, mtu);
}

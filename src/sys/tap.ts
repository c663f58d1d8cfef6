// TAP devices for the net/tap endpoint.
import { native } from './native.js';
import { checkString } from './errors.js';

/**
 * Opens /dev/net/tun (O_NONBLOCK|O_CLOEXEC) and attaches a tap (IFF_TAP|IFF_NO_PI, plus
 * IFF_VNET_HDR when vnetHdr). An empty name lets the kernel pick; the actual name is returned.
 * Needs CAP_NET_ADMIN unless the device already exists and is owned by the caller.
 */
export function openTap(name: string, vnetHdr = false): { fd: number; name: string } {
  checkString('openTap name', name, 15); // IFNAMSIZ - 1
  if (typeof vnetHdr !== 'boolean') throw new TypeError('openTap vnetHdr must be a boolean');
  return native().openTap(name, vnetHdr);
}

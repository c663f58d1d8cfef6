/**
 * The link a tap gives the device: the MTU the front-end gives the guest (NET_SET_MTU) and
 * the announcement after a migration (SEND_RARP). Other endpoints have no network to apply
 * them to, so they are refused there (offered-features.ts offers neither without a tap).
 */
import { setInterfaceMtu } from '../sys/index.js';
import { announceOnTap } from '../net/announce.js';
import type { NetMode } from '../datapath/contract.js';
import { DeviceError } from './errors.js';

export class TapLink {
  /** The MTU applied to the tap by the front-end; null: not set (the tap has serve --mtu, or its own). */
  mtu: number | null = null;

  /** @param maxMtu serve --mtu: the tap's MTU from the start, and the most a front-end may set. */
  constructor(private readonly net: NetMode, private readonly log: (level: string, text: string) => void, private readonly maxMtu?: number) {}

  setMtu(mtu: number): void {
    if (this.net.kind !== 'tap') throw new DeviceError('NET_SET_MTU: only a tap has an MTU to set');
    if (this.maxMtu !== undefined && mtu > this.maxMtu) {
      throw new DeviceError(`NET_SET_MTU ${mtu}: above the tap's MTU ${this.maxMtu} (serve --mtu)`);
    }
    try {
      setInterfaceMtu(this.net.name, mtu);
    } catch (err) {
      throw new DeviceError(`NET_SET_MTU ${mtu}: the tap ${this.net.name} refused it: ${(err as Error).message}`);
    }
    this.mtu = mtu;
    this.log('info', `MTU ${mtu} (tap ${this.net.name})`);
  }

  /** SEND_RARP: a RARP from the guest's MAC into the tap, as if the guest had sent it. */
  announce(payload: bigint): void {
    if (this.net.kind !== 'tap') throw new DeviceError('SEND_RARP: only a tap has a network to announce to');
    try {
      announceOnTap(this.net.fds[0]!, payload);
    } catch (err) {
      throw new DeviceError(`SEND_RARP: the tap refused the frame: ${(err as Error).message}`);
    }
  }
}

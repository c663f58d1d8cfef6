/** Control-path view of one virtqueue: what the front-end has told us about it. */
export class VringState {
  size = 0;
  descAddr = 0;
  availAddr = 0;
  usedAddr = 0;
  addressSet = false;
  /** Last available index: from SET_VRING_BASE, or from the worker when the ring stops. */
  base = 0;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** A kick fd (or NOFD) has arrived and GET_VRING_BASE has not stopped the ring since. */
  kickSet = false;
  enabled = false;
  /** The worker is processing this ring. */
  running = false;
  broken: string | null = null;

  constructor(readonly index: number) {}

  /** A ring runs once it is fully described, kicked into life and enabled. */
  get ready(): boolean {
    return this.kickSet && this.enabled && this.addressSet && this.size > 0 && this.broken === null;
  }
}

/**
 * Canaries: how the test front-end catches a device writing where it must not. All guest
 * memory starts as a position-dependent pattern (canaryByte); a pool buffer goes back to the
 * pattern when the device returns it, after a check — TX: the device left the posted bytes
 * as they were and wrote nothing past them; RX: nothing written past the used length.
 * verify() checks every byte the device was not given at that moment.
 */

export interface CanaryViolation {
  gpa: number;
  expected: number;
  actual: number;
  where: string;
}

/** Violations kept at most (the first ones tell the story). */
const MAX_VIOLATIONS = 100;

/** Canary pattern byte of guest-physical address a. */
export function canaryByte(a: number): number {
  return ((a * 131) ^ (a >>> 7) ^ (a >>> 15) ^ 0x5a) & 0xff;
}

export class Canaries {
  /** Violations found while the data path ran. */
  readonly violations: CanaryViolation[] = [];
  /** Extra guest ranges verify() skips (special test buffers): [start, end). */
  private readonly holes: Array<[number, number]> = [];
  /** Posted TX slot contents, to check the device left them alone; null when checks are off. */
  private txSaved: Uint8Array | null = null;

  /** `memory`: guest-physical [0, memory.length). Filled with the pattern if `enabled`. */
  constructor(private readonly memory: Uint8Array, enabled: boolean, private readonly slotSize: number, txSlots: number) {
    if (!enabled) return;
    this.fill(0, memory.length);
    this.txSaved = new Uint8Array(txSlots * slotSize);
  }

  /** Whether buffers are checked as they come back. */
  get enabled(): boolean {
    return this.txSaved !== null;
  }

  /** Stops checking returned buffers (pool slots no longer hold canary between uses). */
  disable(): void {
    this.txSaved = null;
  }

  fill(start: number, end: number): void {
    const m = this.memory;
    for (let a = start; a < end; a++) m[a] = canaryByte(a);
  }

  /** First address in [start, end) that is not canary, or -1. */
  mismatch(start: number, end: number): number {
    const m = this.memory;
    for (let a = start; a < end; a++) if (m[a] !== canaryByte(a)) return a;
    return -1;
  }

  /** Excludes [start, end) from verify() (a test buffer whose contents are checked otherwise). */
  hole(start: number, end: number): void {
    this.holes.push([start, end]);
  }

  /** A TX pool slot is about to be posted with `len` bytes: remember them. */
  saveTx(slot: number, gpa: number, len: number): void {
    if (this.txSaved !== null) this.txSaved.set(this.memory.subarray(gpa, gpa + len), slot * this.slotSize);
  }

  /** The device returned a TX slot: its posted bytes unchanged, canary after them; back to canary. */
  checkTx(slot: number, gpa: number, len: number): void {
    const saved = this.txSaved;
    if (saved === null) return;
    const base = slot * this.slotSize;
    const m = this.memory;
    for (let i = 0; i < len; i++) {
      if (m[gpa + i] !== saved[base + i]) {
        this.violations.push({ gpa: gpa + i, expected: saved[base + i], actual: m[gpa + i], where: `TX buffer (slot ${slot}) changed by the device` });
        break;
      }
    }
    const bad = this.mismatch(gpa + len, gpa + this.slotSize);
    if (bad >= 0) this.violation(bad, `TX slot ${slot} past its ${len} posted bytes`);
    this.fill(gpa, gpa + len);
  }

  /** The device returned an RX slot with `len` bytes used: canary after them; back to canary. */
  checkRx(slot: number, gpa: number, len: number): void {
    if (!this.enabled) return;
    const bad = this.mismatch(gpa + len, gpa + this.slotSize);
    if (bad >= 0) this.violation(bad, `RX slot ${slot}: written past the used length ${len}`);
    this.fill(gpa, gpa + len);
  }

  /**
   * Checks every byte of guest memory outside `skip` (rings, buffers the device holds) and
   * the declared holes: all must still be canary. Returns the violations, those recorded
   * while running first.
   */
  verify(skip: Array<[number, number]>): CanaryViolation[] {
    const holes = [...skip, ...this.holes].sort((a, b) => a[0] - b[0]);
    const found: CanaryViolation[] = [...this.violations];
    const check = (s: number, e: number): void => {
      // 64 KiB at a time, so a badly damaged memory stops at MAX_VIOLATIONS soon.
      let x = s;
      while (x < e && found.length < MAX_VIOLATIONS) {
        const bad = this.mismatch(x, Math.min(e, x + 65536));
        if (bad < 0) {
          x += 65536;
          continue;
        }
        found.push({ gpa: bad, expected: canaryByte(bad), actual: this.memory[bad], where: 'outside every buffer given to the device' });
        x = bad + 1;
      }
    };
    let a = 0;
    for (const [s, e] of holes) {
      if (s > a) check(a, s);
      a = Math.max(a, e);
    }
    if (a < this.memory.length) check(a, this.memory.length);
    return found;
  }

  private violation(gpa: number, where: string): void {
    if (this.violations.length < MAX_VIOLATIONS) this.violations.push({ gpa, expected: canaryByte(gpa), actual: this.memory[gpa], where });
  }
}

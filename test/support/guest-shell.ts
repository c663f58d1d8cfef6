// Commands typed into a guest booted with mode 'shell' (the repo's guest image drops to a
// busybox shell on its serial console), for tests that need one guest to do several things
// across events outside it: a back-end restart, a reboot.
//
//   const sh = new GuestShell(guest);
//   await sh.ready();                                  // the shell of the first boot
//   const out = await sh.run('cat /sys/class/net/eth0/carrier');
//
// Each command's end is a marker line with a number of its own and the command's exit code;
// the console's echo of the typed line never matches it (the echo shows `$?`, not a number).
import type { Guest } from '../peers/qemu.js';
import { sleep } from '../peers/util.js';

export interface ShellResult {
  rc: number;
  /** Lines seen while it ran: what it printed, and the console's echo of the typed line (wrapped at the console's width). */
  output: string[];
}

export class GuestShell {
  private sequence = 0;

  constructor(private readonly guest: Guest) {}

  /** Waits until the shell of boot number `boot` (1 = the first) is up. */
  async ready(boot = 1, timeoutMs = 90_000): Promise<void> {
    await this.waitLine((line) => line.startsWith('VIT-SHELL'), boot, timeoutMs, `shell of boot ${boot}`);
  }

  async run(command: string, timeoutMs = 60_000): Promise<ShellResult> {
    const id = ++this.sequence;
    const start = this.guest.lines.length;
    const marker = new RegExp(`^VIT-SH-${id} rc=(\\d+)$`);
    this.guest.write(`${command}; echo "VIT-SH-${id} rc=$?"\n`);
    const at = await this.waitLine((line) => marker.test(line.trim()), 1, timeoutMs, `\`${command}\``, start);
    const lines = this.guest.lines.slice(start, at);
    return {
      rc: Number(this.guest.lines[at]!.trim().match(marker)![1]),
      output: lines.map((l) => l.trim()).filter(Boolean),
    };
  }

  /** Runs `command` and fails with its output unless it exits 0. */
  async ok(command: string, timeoutMs?: number): Promise<string[]> {
    const r = await this.run(command, timeoutMs);
    if (r.rc !== 0) throw new Error(`guest: \`${command}\` exited ${r.rc}:\n${r.output.join('\n')}`);
    return r.output;
  }

  /** Index of the `nth` line from `from` on that satisfies `match`. */
  private async waitLine(match: (line: string) => boolean, nth: number, timeoutMs: number, what: string, from = 0): Promise<number> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      let seen = 0;
      const lines = this.guest.lines;
      for (let i = from; i < lines.length; i++) if (match(lines[i]!) && ++seen === nth) return i;
      if (this.guest.process.exitCode !== null || this.guest.process.signalCode !== null) {
        throw new Error(`guest exited while waiting for ${what}:\n${lines.slice(-20).join('\n')}`);
      }
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}:\n${lines.slice(-20).join('\n')}`);
      await sleep(50);
    }
  }
}

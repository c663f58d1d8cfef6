/**
 * How long an idle worker polls its rings before it sleeps, adapted to how long its idle
 * spells last, as KVM adapts a halted vCPU's poll (`halt_poll_ns`): polling pays only when
 * the next piece of work usually comes before the window ends, for then it spares a sleep and
 * a wake-up across CPUs. When it comes later the poll only took a CPU from the threads the
 * work waits on (the guest's vCPU, the front-end's main loop), which on a machine with few
 * CPUs is what sets the pace.
 *
 * An idle spell is timed from the window's start to the work that ends it (asleep or not):
 *   within the window         polling caught it: keep the window;
 *   longer than the budget    polling could not have: halve the window (down to 0);
 *   between the two           a longer window would have: double it (from GROW_START_MS),
 *                             up to the budget (`serve --busy-poll-us`).
 * A budget of 0 never polls and one below 0 never sleeps: neither adapts.
 */

/** The smallest window a grow starts from, and below which a shrink stops polling. */
export const GROW_START_MS = 0.01;

export class PollWindow {
  /** How long the current idle spell may be polled, in ms. */
  windowMs: number;

  /** `budgetMs`: the longest window (Infinity: never sleep; 0: never poll). */
  constructor(readonly budgetMs: number) {
    this.windowMs = budgetMs;
  }

  /** An idle spell of `idleMs`, timed from the window's start, ended with work. */
  spellEnded(idleMs: number): void {
    const budget = this.budgetMs;
    if (!(budget > 0) || budget === Infinity || idleMs <= this.windowMs) return;
    if (idleMs > budget) {
      const half = this.windowMs / 2;
      this.windowMs = half < GROW_START_MS ? 0 : half;
    } else {
      this.windowMs = Math.min(budget, Math.max(GROW_START_MS, this.windowMs * 2));
    }
  }
}

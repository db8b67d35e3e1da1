/**
 * The idle timer behind `--exit-idle-time`.
 * @module
 */
import { type Clock, MAX_DELAY_MS, REAL_CLOCK } from "./timer.ts";

/**
 * Calls `onIdle` once the timer has stayed armed for the whole span. Armed and disarmed at every
 * connection, it keeps one timer pending at most: a timer that comes due early (the span was
 * started again meanwhile) waits again for what is left.
 */
export class IdleTimer {
  #deadline = 0;
  #armed = false;
  #pending = false;

  /**
   * @param spanUsec the idle span in microseconds; Infinity never fires.
   * @param onIdle called when the span has passed while armed.
   * @param clock the time (tests give their own).
   */
  constructor(
    readonly spanUsec: number,
    private readonly onIdle: () => void,
    private readonly clock: Clock = REAL_CLOCK,
  ) {}

  /** Starts (or restarts) the span. */
  arm(): void {
    if (this.spanUsec === Infinity) return;
    this.#armed = true;
    this.#deadline = this.clock.now() + this.spanUsec / 1000;
    if (!this.#pending) this.#schedule();
  }

  /** Stops the span; nothing fires until the next {@link arm}. */
  disarm(): void {
    this.#armed = false;
  }

  #schedule(): void {
    const left = this.#deadline - this.clock.now();
    if (left <= 0) {
      this.#armed = false;
      return this.onIdle();
    }
    this.#pending = true;
    // Whole milliseconds (1.5 ms is one wait of 2, not 1 and then 0), longer spans in steps.
    this.clock.after(Math.min(Math.ceil(left), MAX_DELAY_MS), () => {
      this.#pending = false;
      if (this.#armed) this.#schedule();
    });
  }
}

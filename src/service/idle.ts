/**
 * The idle timer behind `--exit-idle-time`.
 * @module
 */

/** setTimeout's longest delay; longer spans are waited out in steps. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Calls `onIdle` once the timer has stayed armed for the whole span. */
export class IdleTimer {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #deadline = 0;

  /**
   * @param spanUsec the idle span in microseconds; Infinity never fires.
   * @param onIdle called when the span has passed while armed.
   */
  constructor(readonly spanUsec: number, private readonly onIdle: () => void) {}

  /** Starts (or restarts) the span. */
  arm(): void {
    this.disarm();
    if (this.spanUsec === Infinity) return;
    this.#deadline = performance.now() + this.spanUsec / 1000;
    this.#schedule();
  }

  /** Stops the span; nothing fires until the next {@link arm}. */
  disarm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    const left = this.#deadline - performance.now();
    if (left <= 0) {
      this.#timer = undefined;
      return this.onIdle();
    }
    this.#timer = setTimeout(() => this.#schedule(), Math.min(Math.ceil(left), MAX_DELAY_MS));
  }
}

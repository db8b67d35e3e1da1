/**
 * What a stop signal (SIGTERM, SIGINT) means, by when it comes. Pure: the caller gives the time.
 *
 * One Ctrl-C can arrive more than once: the terminal signals its whole foreground process group,
 * and a launcher in that group (`deno task`) forwards its copy to us as well; so can a SIGTERM
 * sent to the group. Copies that close to the first signal are that same request. A signal that
 * comes later is a second request: exit at once.
 * @module
 */

/**
 * Signals this soon after the first one are copies of it. The copies of one keypress measured
 * under `deno task` arrive within a few milliseconds of each other; a person pressing Ctrl-C
 * twice on purpose takes longer than this.
 */
export const REPEAT_WINDOW_MS = 1000;

/** What to do about a stop signal: begin stopping, ignore a copy, or exit at once. */
export type SignalAction = "stop" | "copy" | "exit";

/** Decides, signal by signal, between the first request, its copies, and a second request. */
export class StopSignals {
  #first: number | null = null;
  readonly #windowMs: number;

  /** @param windowMs how long after the first signal others count as its copies. */
  constructor(windowMs: number = REPEAT_WINDOW_MS) {
    this.#windowMs = windowMs;
  }

  /**
   * The action for a stop signal received at `nowMs` (a monotonic clock, e.g.
   * `performance.now()`).
   */
  receive(nowMs: number): SignalAction {
    if (this.#first === null) {
      this.#first = nowMs;
      return "stop";
    }
    return nowMs - this.#first < this.#windowMs ? "copy" : "exit";
  }
}

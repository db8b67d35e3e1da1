/**
 * Refusing clients: each refusal is counted by its reason and logged (at most one line a second
 * per reason, then a line with the count of the rest), and a refusal's line is written out
 * before its client sees the connection end, so whoever watches the client and then the journal
 * finds the line.
 * @module
 */
import type { Refusal } from "./admission.ts";
import { flushLog, ThrottledLog } from "./log.ts";

/**
 * How long a refused client is kept open, at most, for its log line to be written (the journal
 * takes at most 50 ms before it is given up on, see `log.ts`). Only the clients whose refusal
 * is logged wait: at most one a second per reason.
 */
export const REFUSAL_LOG_WAIT_MS = 250;

/** The interval of the refusal lines of each reason. */
export const REFUSAL_LOG_INTERVAL_MS = 1000;

const SUMMARIES: Record<Refusal, (held: number) => string> = {
  full: (held) =>
    `Hit connection limit: ${held} more connection(s) refused since the last message.`,
  source: (held) =>
    `Hit per-source connection limit: ${held} more connection(s) refused since the last message.`,
};

/** Refuses clients, and counts them by reason. */
export class Refusals {
  readonly #counts: Record<Refusal, number> = { full: 0, source: 0 };
  readonly #logs: Record<Refusal, ThrottledLog> = {
    full: new ThrottledLog("warning", REFUSAL_LOG_INTERVAL_MS, SUMMARIES.full),
    source: new ThrottledLog("warning", REFUSAL_LOG_INTERVAL_MS, SUMMARIES.source),
  };

  /** Clients refused for `reason` so far. */
  count(reason: Refusal): number {
    return this.#counts[reason];
  }

  /** Clients refused so far, for either reason. */
  get total(): number {
    return this.#counts.full + this.#counts.source;
  }

  /**
   * Counts and logs a refusal and closes the client (`close`): at once when its line is held
   * back, else once the line is written (or after {@link REFUSAL_LOG_WAIT_MS}).
   * @param message the log line, built only when it is written.
   */
  refuse(close: () => void, reason: Refusal, message: () => string): void {
    this.#counts[reason]++;
    if (!this.#logs[reason].hit(message)) return close();
    flushLog(REFUSAL_LOG_WAIT_MS).then(close);
  }

  /** Writes the counts held back now (at stop). */
  flush(): void {
    this.#logs.full.flush();
    this.#logs.source.flush();
  }

  /**
   * The refusals so far, for status and stop lines: "" when none, else e.g. "12 refused (10
   * over --connections-max, 2 over --connections-per-source)".
   */
  describe(): string {
    if (this.total === 0) return "";
    return `${this.total} refused (${this.#counts.full} over --connections-max, ` +
      `${this.#counts.source} over --connections-per-source)`;
  }
}

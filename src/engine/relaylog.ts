/**
 * The datagram relay's log lines, one {@link ThrottledLog} per kind of event: each is written
 * at most once per interval, then a line counts the ones held back, so that a flood of
 * datagrams cannot flood the log, and every event still shows in it within the interval.
 * @module
 */
import { ThrottledLog } from "../service/log.ts";
import { REFUSAL_LOG_INTERVAL_MS } from "../service/refusals.ts";

/** How often the relay's fault lines (failures, unreachable peers) may be written. */
export const FAULT_LOG_INTERVAL_MS = 1000;

/** The relay's throttled lines. */
export class RelayLog {
  /** A new client over `--connections-max` (warning). */
  readonly full = new ThrottledLog(
    "warning",
    REFUSAL_LOG_INTERVAL_MS,
    (held) =>
      `Hit connection limit: ${held} more datagram(s) from new clients dropped since the last message.`,
  );
  /** A new client over `--connections-per-source` (warning). */
  readonly source = new ThrottledLog(
    "warning",
    REFUSAL_LOG_INTERVAL_MS,
    (held) =>
      `Hit per-source connection limit: ${held} more datagram(s) from new clients dropped since the last message.`,
  );
  /** A one-datagram session ended to admit a new client (warning). */
  readonly evicted = new ThrottledLog(
    "warning",
    REFUSAL_LOG_INTERVAL_MS,
    (held) =>
      `Hit connection limit: ${held} more one-datagram session(s) ended for new clients since the last message.`,
  );
  /** A datagram from the target's own address (warning). */
  readonly fromTarget = new ThrottledLog(
    "warning",
    REFUSAL_LOG_INTERVAL_MS,
    (held) =>
      `${held} more datagram(s) from the target's own address dropped since the last message.`,
  );
  /** A session that could not be set up: no socket, no address for the name (error). */
  readonly failures = new ThrottledLog(
    "error",
    FAULT_LOG_INTERVAL_MS,
    (held) => `Failed to forward datagrams: ${held} more failed since the last message.`,
  );

  /** Writes the counts held back now (at stop). */
  flush(): void {
    for (const line of [this.full, this.source, this.evicted, this.fromTarget, this.failures]) {
      line.flush();
    }
  }
}

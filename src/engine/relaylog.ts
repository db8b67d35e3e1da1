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
  /** A datagram the backend did not get: an ICMP error, a Unix backend gone (warning). */
  readonly unreachable = new ThrottledLog(
    "warning",
    FAULT_LOG_INTERVAL_MS,
    (held) =>
      `Failed to deliver datagrams: ${held} more not delivered to the target since the last message.`,
  );
  /** A reply the kernel would not deliver to its client (warning). */
  readonly unanswerable = new ThrottledLog(
    "warning",
    FAULT_LOG_INTERVAL_MS,
    (held) =>
      `Failed to deliver replies: ${held} more not delivered to clients since the last message.`,
  );
  /** A session that could not be set up: no socket, no address for the name (error). */
  readonly failures = new ThrottledLog(
    "error",
    FAULT_LOG_INTERVAL_MS,
    (held) => `Failed to forward datagrams: ${held} more failed since the last message.`,
  );

  /** Writes the counts held back now (at stop). */
  flush(): void {
    for (
      const line of [
        this.full,
        this.source,
        this.evicted,
        this.fromTarget,
        this.unreachable,
        this.unanswerable,
        this.failures,
      ]
    ) line.flush();
  }
}

/** Linux errno values (asm-generic/errno.h) that say a datagram did not reach its peer. */
const E = {
  EPERM: 1,
  ENOENT: 2,
  EACCES: 13,
  EPROTOTYPE: 91,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
} as const;

/**
 * The errno values of a target that a datagram did not reach, with what each means: the error
 * a connected UDP socket reports after an ICMP error, or that a Unix datagram socket reports at
 * once.
 */
export const BACKEND_FAULTS: ReadonlyMap<number, string> = new Map([
  [
    E.ECONNREFUSED,
    "Connection refused (nothing is bound there: ICMP port unreachable, or no Unix socket)",
  ],
  [E.EHOSTUNREACH, "No route to host (ICMP host unreachable)"],
  [E.ENETUNREACH, "Network is unreachable (ICMP network unreachable)"],
  [E.EHOSTDOWN, "Host is down (ICMP host unreachable)"],
  [E.ENETDOWN, "Network is down"],
  [E.ENOENT, "No such file or directory (no Unix socket at that path)"],
  [E.EPROTOTYPE, "Protocol wrong type for socket (not a datagram socket at that path)"],
]);

/** The errno values of a peer that refused the proxy's user (file permissions, a firewall). */
export const PERMISSION_FAULTS: ReadonlySet<number> = new Set([E.EPERM, E.EACCES]);

/** The errno values of a reply the kernel would not deliver to its client. */
export const CLIENT_FAULTS: ReadonlySet<number> = new Set([
  ...PERMISSION_FAULTS,
  ...BACKEND_FAULTS.keys(),
]);

/**
 * Why a reply could not be delivered to `client`, and what would fix it.
 * @param uid the proxy's user id, named in a permission problem.
 */
export function replyFault(errno: number, client: string, unix: boolean, uid: number): string {
  if (PERMISSION_FAULTS.has(errno) && unix) {
    return `Permission denied: the proxy's user (uid ${uid}) may not write to the client's ` +
      `socket ${client}; give it write permission on that socket file (and search permission ` +
      "on its directories), e.g. through a group both users share, or create the socket with " +
      "mode 0666";
  }
  if (errno === E.EPERM) return "Operation not permitted (a firewall rule refused it)";
  if (errno === E.EACCES) return "Permission denied";
  if (unix && (errno === E.ECONNREFUSED || errno === E.ENOENT)) {
    return "the client's socket is gone";
  }
  return BACKEND_FAULTS.get(errno) ?? `errno ${errno}`;
}

/** What errno `errno` means for a target, for a log line. */
export function backendFault(errno: number): string {
  if (PERMISSION_FAULTS.has(errno)) {
    return "Permission denied (the proxy's user may not write to the target's socket)";
  }
  return BACKEND_FAULTS.get(errno) ?? `errno ${errno}`;
}

/**
 * The descriptor budget: whether the limit on open files (RLIMIT_NOFILE, systemd's
 * `LimitNOFILE=`) can hold everything `--connections-max` lets in. Stream connections and
 * datagram sessions are limited apart, but share the process's descriptors: past the limit,
 * whatever comes next fails with EMFILE, a new stream client as much as a new datagram session
 * (measured: with LimitNOFILE=1024 and -c 5000, a UDP flood took every descriptor and 3 of 20
 * TCP clients timed out). Pure: the caller reads the limit.
 * @module
 */

/**
 * Descriptors the process holds besides connections and sessions, with room: Deno's own, the
 * passed sockets, epoll and eventfd, the journal's socket (23-29 measured at start-up).
 */
export const BASE_DESCRIPTORS = 64;

/** Descriptors per stream connection: the client's socket and the backend's. */
export const STREAM_CONNECTION_DESCRIPTORS = 2;

/** Descriptors per datagram session: its socket to the target. */
export const SESSION_DESCRIPTORS = 1;

/** What is served, as far as descriptors go. */
export interface Served {
  /** `--connections-max`: the most connections, and the most sessions, open at once. */
  readonly connectionsMax: number;
  /** Whether stream sockets are served (passed, or `--listen`). */
  readonly streams: boolean;
  /** Whether datagram sockets are served. */
  readonly datagrams: boolean;
}

/** The descriptors that serving at `--connections-max` can take at once. */
export function descriptorsNeeded(served: Served): number {
  const per = (served.streams ? STREAM_CONNECTION_DESCRIPTORS : 0) +
    (served.datagrams ? SESSION_DESCRIPTORS : 0);
  return BASE_DESCRIPTORS + served.connectionsMax * per;
}

/**
 * One line for the log when `limit` (RLIMIT_NOFILE's soft limit, which Deno raises to the hard
 * one at start-up; null when unknown or unlimited) cannot hold what `served` may take, else null.
 */
export function descriptorBudgetWarning(limit: number | null, served: Served): string | null {
  const needed = descriptorsNeeded(served);
  if (limit === null || limit >= needed) return null;
  const each = [
    ...(served.streams ? [`${STREAM_CONNECTION_DESCRIPTORS} per stream connection`] : []),
    ...(served.datagrams ? [`${SESSION_DESCRIPTORS} per datagram session`] : []),
  ];
  return `The limit on open files (RLIMIT_NOFILE) is ${limit}, but --connections-max=` +
    `${served.connectionsMax} may need ${needed} file descriptors (${each.join(" and ")}, ` +
    `plus ${BASE_DESCRIPTORS}): past ${limit}, new connections and sessions fail with "Too ` +
    `many open files". Set LimitNOFILE=${needed} or more in the service unit, or lower ` +
    "--connections-max.";
}

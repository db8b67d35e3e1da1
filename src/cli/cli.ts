/**
 * The command line, compatible with systemd-socket-proxyd(8). Pure: no I/O.
 * @module
 */
import { parseArgs } from "./args.ts";
import { WHEN_FULL, type WhenFull } from "../service/admission.ts";
import { type ListenAddress, parseListenAddress } from "./address.ts";
import { DEFAULT_CONNECTIONS_MAX } from "../service/limit.ts";
import type { ProxyProtocolVersion } from "../engine/proxyprotocol.ts";
import { parseTargetSpec, type TargetSpec } from "./target.ts";
import { formatTimespan, parseTimespan } from "./timespan.ts";

/** The default of `--drain-timeout`: well inside systemd's default TimeoutStopSec= of 90s. */
export const DEFAULT_DRAIN_TIMEOUT_USEC = 30_000_000;

/**
 * The default of `--connect-timeout`: long enough for a backend that systemd started at the
 * same time as the socket to begin listening, short enough that a client of a backend that is
 * really down is not kept waiting long.
 */
export const DEFAULT_CONNECT_TIMEOUT_USEC = 5_000_000;

/**
 * The default `--idle-timeout` of a datagram session: as Linux's conntrack ends a UDP flow
 * (nf_conntrack_udp_timeout, 30 s), longer than any DNS or NTP exchange takes, and what QUIC
 * keeps alive with its own pings; streams have no default (they end by themselves).
 */
export const DEFAULT_SESSION_IDLE_TIMEOUT_USEC = 30_000_000;

/** How the proxy was asked to run. */
export interface Options {
  /** Where clients are forwarded to (the positional argument), unless `targets` names theirs. */
  readonly target: TargetSpec | null;
  /** Targets by socket name (`--target=NAME=TARGET`, repeatable). */
  readonly targets: ReadonlyMap<string, TargetSpec>;
  /** Send a PROXY protocol header to the backend first (`--proxy-protocol=v1|v2`). */
  readonly proxyProtocol: ProxyProtocolVersion | null;
  /** Connect to the backend from each client's own address (`--transparent`). */
  readonly transparent: boolean;
  /** Keep retrying a backend that refuses for this long (`--connect-timeout`); 0: once. */
  readonly connectTimeoutUsec: number;
  /** Close a connection without traffic for this long (`--idle-timeout`); Infinity never. */
  readonly idleTimeoutUsec: number;
  /** End a datagram session without traffic for this long (`--idle-timeout`, else 30s). */
  readonly sessionIdleTimeoutUsec: number;
  /** The most replies a datagram session takes per client datagram; null: no bound. */
  readonly repliesPerDatagram: number | null;
  /** TCP keepalive on client and backend sockets (off with `--no-keepalive`). */
  readonly keepalive: boolean;
  /** The most connections open at once (`-c`, `--connections-max`). */
  readonly connectionsMax: number;
  /** What becomes of a client over `connectionsMax` (`--when-full`). */
  readonly whenFull: WhenFull;
  /** The most connections from one source at once (`--connections-per-source`); null: none. */
  readonly connectionsPerSource: number | null;
  /** Exit after this many microseconds without a connection; Infinity never. */
  readonly exitIdleTimeUsec: number;
  /** On SIGTERM/SIGINT, wait this long for open connections before closing them. */
  readonly drainTimeoutUsec: number;
  /** Where to listen when no sockets are passed in (`--listen`, repeatable). */
  readonly listen: readonly ListenAddress[];
  /** Log every connection (`-v`, `--verbose`). */
  readonly verbose: boolean;
}

/** What the command line asks for. */
export type Command =
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  | { readonly kind: "run"; readonly options: Options };

/** The command line is invalid; the message names the offending input. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The text of `--help`. */
export const HELP =
  `socket-proxyd [OPTIONS...] {HOST:PORT|HOST:*|[IPV6]:PORT|/PATH|@ABSTRACT|vsock:CID:PORT}
socket-proxyd [OPTIONS...] --target=NAME=TARGET... [TARGET]
socket-proxyd [OPTIONS...] --config=FILE

Bidirectionally proxy local sockets to another (possibly remote) socket.
Forwards every client of the sockets passed in by the service manager
(socket activation) to the target, one backend connection per client.

  -h --help                   Show this help
     --version                Show package version
     --config=FILE            Take the target and more options from FILE:
                              TARGET= and OPTIONS= lines, as systemd's
                              EnvironmentFile= (the template units' .conf)
  -c --connections-max=N      Set the maximum number of connections to be
                              accepted (default: ${DEFAULT_CONNECTIONS_MAX})
     --when-full=refuse|wait  At the limit, refuse a new client (default), or
                              let it wait for a free slot in arrival order
     --connections-per-source=N
                              Refuse a client when N connections from its
                              address (IPv6: its /64) are open or waiting
     --exit-idle-time=SPAN    Exit when without a connection for this
                              duration, e.g. "30s", "5min 20s" (default: infinity)
     --drain-timeout=SPAN     On SIGTERM/SIGINT, let open connections finish
                              for up to this long (default: ${
    formatTimespan(DEFAULT_DRAIN_TIMEOUT_USEC)
  })
     --listen=ADDR            Listen on ADDR when no sockets are passed in:
                              PORT, HOST:PORT, [IPV6]:PORT, /PATH or @NAME
                              (repeatable; ignored under socket activation)
     --target=NAME=TARGET     Forward clients of the passed socket named NAME
                              (FileDescriptorName=) to TARGET (repeatable); the
                              positional TARGET serves sockets not named here;
                              HOST:* forwards to each listener's own port
     --proxy-protocol=v1|v2   Send a PROXY protocol header with the client's
                              address to the backend before any client byte
     --transparent            Connect to the backend from each client's own
                              IP address (IP_TRANSPARENT): needs CAP_NET_ADMIN
                              and a route back to the proxy, see the man page
     --connect-timeout=SPAN   Retry a backend that refuses or is unreachable
                              for up to this long (default: ${
    formatTimespan(DEFAULT_CONNECT_TIMEOUT_USEC)
  }; 0: once)
     --idle-timeout=SPAN      Close a connection without traffic in either
                              direction for this long (default: infinity;
                              datagram sessions: ${
    formatTimespan(DEFAULT_SESSION_IDLE_TIMEOUT_USEC)
  })
     --replies-per-datagram=N Datagram sessions: pass at most N replies per
                              datagram from the client, and end a session once
                              it has had them all (default: no limit)
     --no-keepalive           Do not turn on TCP keepalive on client and
                              backend sockets
  -v --verbose                Log every connection when it ends

See the socket-proxyd(8) man page for details.`;

function parseCount(text: string, name = "connections-max"): number {
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`Invalid --${name} "${text}": expected a whole number`);
  }
  const n = Number(text);
  if (n < 1) {
    throw new UsageError(
      name === "connections-max"
        ? "Connection limit is too low."
        : `Invalid --${name}: must be at least 1`,
    );
  }
  if (n > 2 ** 31 - 1) throw new UsageError(`Invalid --${name} "${text}": too large`);
  return n;
}

function parseWhenFull(text: string | undefined): WhenFull {
  if (text === undefined) return WHEN_FULL[0];
  const found = WHEN_FULL.find((value) => value === text);
  if (found === undefined) {
    throw new UsageError(`Invalid --when-full "${text}": expected ${WHEN_FULL.join(" or ")}`);
  }
  return found;
}

function targetArgument(text: string): TargetSpec {
  try {
    return parseTargetSpec(text);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function parseNamedTargets(specs: readonly string[]): Map<string, TargetSpec> {
  const targets = new Map<string, TargetSpec>();
  for (const spec of specs) {
    const eq = spec.indexOf("=");
    const name = spec.slice(0, eq);
    if (eq < 1 || name.includes(":")) {
      throw new UsageError(
        `Invalid --target "${spec}": expected NAME=TARGET, NAME as in FileDescriptorName=`,
      );
    }
    if (targets.has(name)) throw new UsageError(`Invalid --target: "${name}" is given twice`);
    targets.set(name, targetArgument(spec.slice(eq + 1)));
  }
  return targets;
}

function parseSpanOption(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  try {
    return parseTimespan(text);
  } catch (e) {
    throw new UsageError(`Invalid --${name}: ${(e as Error).message}`);
  }
}

function firstSentence(message: string): string {
  const end = message.search(/\.\s/);
  return end < 0 ? message : message.slice(0, end + 1);
}

/**
 * Parses the arguments (without the program name).
 *
 * @throws {UsageError} for unknown options, malformed values and a missing or extra target.
 */
export function parseCommandLine(args: readonly string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
        "connections-max": { type: "string", short: "c" },
        "when-full": { type: "string" },
        "connections-per-source": { type: "string" },
        "exit-idle-time": { type: "string" },
        "drain-timeout": { type: "string" },
        listen: { type: "string", multiple: true },
        verbose: { type: "boolean", short: "v" },
        target: { type: "string", multiple: true },
        "proxy-protocol": { type: "string" },
        transparent: { type: "boolean" },
        "connect-timeout": { type: "string" },
        "idle-timeout": { type: "string" },
        "replies-per-datagram": { type: "string" },
        "no-keepalive": { type: "boolean" },
      },
    });
  } catch (e) {
    throw new UsageError(firstSentence(e instanceof Error ? e.message : String(e)));
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const connectionsMax = values["connections-max"] === undefined
    ? DEFAULT_CONNECTIONS_MAX
    : parseCount(values["connections-max"]);
  const exitIdleTimeUsec = parseSpanOption("exit-idle-time", values["exit-idle-time"], Infinity);
  const drainTimeoutUsec = parseSpanOption(
    "drain-timeout",
    values["drain-timeout"],
    DEFAULT_DRAIN_TIMEOUT_USEC,
  );
  const listen = (values.listen ?? []).map((address) => {
    try {
      return parseListenAddress(address);
    } catch (e) {
      throw new UsageError(`Invalid --listen: ${(e as Error).message}`);
    }
  });
  const targets = parseNamedTargets(values.target ?? []);
  if (positionals.length === 0 && targets.size === 0) {
    throw new UsageError("Not enough parameters: no target given.");
  }
  if (positionals.length > 1) {
    throw new UsageError(
      `Too many parameters: exactly one target expected, got ${positionals.join(" ")}`,
    );
  }
  const target = positionals.length === 0 ? null : targetArgument(positionals[0]);
  const proxyProtocol = values["proxy-protocol"] ?? null;
  if (proxyProtocol !== null && proxyProtocol !== "v1" && proxyProtocol !== "v2") {
    throw new UsageError(`Invalid --proxy-protocol "${proxyProtocol}": expected v1 or v2`);
  }
  const connectTimeoutUsec = parseSpanOption(
    "connect-timeout",
    values["connect-timeout"],
    DEFAULT_CONNECT_TIMEOUT_USEC,
  );
  const idleTimeoutUsec = parseSpanOption("idle-timeout", values["idle-timeout"], Infinity);
  if (idleTimeoutUsec === 0) throw new UsageError("Invalid --idle-timeout: must be more than 0");
  return {
    kind: "run",
    options: {
      target,
      connectionsMax,
      whenFull: parseWhenFull(values["when-full"]),
      connectionsPerSource: values["connections-per-source"] === undefined
        ? null
        : parseCount(values["connections-per-source"], "connections-per-source"),
      exitIdleTimeUsec,
      drainTimeoutUsec,
      listen,
      verbose: values.verbose ?? false,
      targets,
      proxyProtocol,
      transparent: values.transparent ?? false,
      connectTimeoutUsec,
      idleTimeoutUsec,
      sessionIdleTimeoutUsec: values["idle-timeout"] === undefined
        ? DEFAULT_SESSION_IDLE_TIMEOUT_USEC
        : idleTimeoutUsec,
      repliesPerDatagram: values["replies-per-datagram"] === undefined
        ? null
        : parseCount(values["replies-per-datagram"], "replies-per-datagram"),
      keepalive: !values["no-keepalive"],
    },
  };
}

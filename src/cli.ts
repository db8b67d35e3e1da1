/**
 * The command line, compatible with systemd-socket-proxyd(8). Pure: no I/O.
 * @module
 */
import { parseArgs } from "node:util";
import { type ListenAddress, parseListenAddress } from "./address.ts";
import { DEFAULT_CONNECTIONS_MAX } from "./limit.ts";
import { parseTarget, type Target } from "./target.ts";
import { formatTimespan, parseTimespan } from "./timespan.ts";

/** The default of `--drain-timeout`: well inside systemd's default TimeoutStopSec= of 90s. */
export const DEFAULT_DRAIN_TIMEOUT_USEC = 30_000_000;

/** How the proxy was asked to run. */
export interface Options {
  /** Where every client is forwarded to. */
  readonly target: Target;
  /** The most connections open at once (`-c`, `--connections-max`). */
  readonly connectionsMax: number;
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
export const HELP = `socket-proxyd [OPTIONS...] {HOST:PORT|[IPV6]:PORT|/PATH|@ABSTRACT}

Bidirectionally proxy local sockets to another (possibly remote) socket.
Forwards every client of the sockets passed in by the service manager
(socket activation) to the target, one backend connection per client.

  -h --help                   Show this help
     --version                Show package version
  -c --connections-max=N      Set the maximum number of connections to be
                              accepted (default: ${DEFAULT_CONNECTIONS_MAX})
     --exit-idle-time=SPAN    Exit when without a connection for this
                              duration, e.g. "30s", "5min 20s" (default: infinity)
     --drain-timeout=SPAN     On SIGTERM/SIGINT, let open connections finish
                              for up to this long (default: ${
  formatTimespan(DEFAULT_DRAIN_TIMEOUT_USEC)
})
     --listen=ADDR            Listen on ADDR when no sockets are passed in:
                              PORT, HOST:PORT, [IPV6]:PORT, /PATH or @NAME
                              (repeatable; ignored under socket activation)
  -v --verbose                Log every connection when it ends

See the socket-proxyd(8) man page for details.`;

function parseCount(text: string): number {
  if (!/^\d+$/.test(text)) {
    throw new UsageError(`Invalid --connections-max "${text}": expected a whole number`);
  }
  const n = Number(text);
  if (n < 1) throw new UsageError("Connection limit is too low.");
  if (n > 2 ** 31 - 1) throw new UsageError(`Invalid --connections-max "${text}": too large`);
  return n;
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
      args: [...args],
      strict: true,
      allowPositionals: true,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
        "connections-max": { type: "string", short: "c" },
        "exit-idle-time": { type: "string" },
        "drain-timeout": { type: "string" },
        listen: { type: "string", multiple: true },
        verbose: { type: "boolean", short: "v" },
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
  if (positionals.length === 0) throw new UsageError("Not enough parameters: no target given.");
  if (positionals.length > 1) {
    throw new UsageError(
      `Too many parameters: exactly one target expected, got ${positionals.join(" ")}`,
    );
  }
  let target: Target;
  try {
    target = parseTarget(positionals[0]);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return {
    kind: "run",
    options: {
      target,
      connectionsMax,
      exitIdleTimeUsec,
      drainTimeoutUsec,
      listen,
      verbose: values.verbose ?? false,
    },
  };
}

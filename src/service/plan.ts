/**
 * The plan: which sockets to serve and where each one's clients go, decided from the command
 * line and what the service manager passed in, before any socket is touched. Pure: no I/O.
 * @module
 */
import { CONNECTION_NAME, type PassedSocket } from "./activation.ts";
import type { ListenAddress } from "../cli/address.ts";
import type { Options } from "../cli/cli.ts";
import { formatTarget, type TargetSpec } from "../cli/target.ts";

/** The program cannot start as asked; the message says why and what to do. */
export class StartError extends Error {
  override name = "StartError";
}

/** A passed socket and the target of its clients. */
export interface PlannedSocket {
  readonly socket: PassedSocket;
  readonly target: TargetSpec;
}

/** What to serve. Exactly one of `sockets` and `listen` is non-empty. */
export interface Plan {
  /** The sockets passed in (or the connection on standard input), each with its target. */
  readonly sockets: readonly PlannedSocket[];
  /** Where to listen ourselves, when nothing was passed in (`--listen`)... */
  readonly listen: readonly ListenAddress[];
  /** ...and where those clients go. */
  readonly listenTarget: TargetSpec | null;
  /** Every target in use, each once (by its written form), in order of first use. */
  readonly targets: readonly TargetSpec[];
  /** Things worth a warning that do not stop the start. */
  readonly warnings: readonly string[];
  /** Notices: harmless, but the operator may not expect them. */
  readonly notices: readonly string[];
}

/**
 * The connection an inetd-style service gets as standard input (`Accept=yes` with
 * `StandardInput=socket`, or `systemd-socket-activate --inetd`), which sets no LISTEN_FDS.
 */
export const STDIN_CONNECTION: PassedSocket = { fd: 0, name: CONNECTION_NAME };

const NO_SOCKETS = "Didn't get any sockets passed in; start me from a .socket unit, with " +
  "systemd-socket-activate --listen=ADDR, with a connection as standard input " +
  "(Accept=yes and StandardInput=socket), or give --listen=ADDR.";

function distinct(targets: readonly TargetSpec[]): TargetSpec[] {
  const seen = new Map<string, TargetSpec>();
  for (const target of targets) {
    const key = formatTarget(target);
    if (!seen.has(key)) seen.set(key, target);
  }
  return [...seen.values()];
}

function planPassed(options: Options, passed: readonly PassedSocket[]): Plan {
  const namesIgnored = passed.find((socket) => socket.namesIgnored !== undefined)?.namesIgnored;
  const [named] = options.targets.keys();
  if (namesIgnored !== undefined && named !== undefined) {
    throw new StartError(
      `--target=${named}=... picks a socket by its name, but the passed sockets have no usable ` +
        `names: ${namesIgnored} (a name taken from a unit name may hold ':'). Give each .socket ` +
        "unit FileDescriptorName=NAME (without ':'), or use a default TARGET instead of " +
        "--target=NAME=.",
    );
  }
  const sockets = passed.map((socket): PlannedSocket => {
    const target = options.targets.get(socket.name) ?? options.target;
    if (target === null) {
      throw new StartError(
        `No target for the socket named "${socket.name}" (fd ${socket.fd}); give ` +
          `--target=${socket.name}=TARGET or a default TARGET.`,
      );
    }
    return { socket, target };
  });
  const warnings = [...options.targets.keys()]
    .filter((name) => !passed.some((socket) => socket.name === name))
    .map((name) => `No passed socket is named "${name}"; --target=${name}=... is unused.`);
  return {
    sockets,
    listen: [],
    listenTarget: null,
    targets: distinct(sockets.map((s) => s.target)),
    warnings,
    notices: options.listen.length > 0 ? ["Sockets were passed in, so --listen is ignored."] : [],
  };
}

/**
 * Decides what to serve: the sockets passed in; else the addresses of `--listen`; else, when
 * standard input is a socket, that one connection (inetd style).
 *
 * @param passed the sockets from the LISTEN_* variables.
 * @param stdinIsSocket whether file descriptor 0 is a socket.
 * @throws {StartError} when there is nothing to serve, or a socket has no target.
 */
export function makePlan(
  options: Options,
  passed: readonly PassedSocket[],
  stdinIsSocket: boolean,
): Plan {
  if (passed.length > 0) return planPassed(options, passed);
  if (options.listen.length > 0) {
    const target = options.target;
    if (target === null) {
      throw new StartError(
        "--listen needs a TARGET argument (--target= applies to passed sockets).",
      );
    }
    return {
      sockets: [],
      listen: options.listen,
      listenTarget: target,
      targets: [target],
      warnings: [],
      notices: [],
    };
  }
  if (stdinIsSocket) return planPassed(options, [STDIN_CONNECTION]);
  throw new StartError(NO_SOCKETS);
}

/**
 * Sorts the passed sockets before any is served: stream sockets go to the adoption layer
 * (`adopt.ts`, `node:net`), datagram sockets to the relay (`relay.ts`, libc through FFI).
 *
 * FFI is used only where Deno's permissions grant it for libc: then every passed socket is asked
 * its type, and FFI is given up before serving, at once when no datagram socket was passed.
 * Without the grant, the sockets go to the adoption layer as they are, which refuses a datagram
 * socket, naming the flag that would serve it (`libcFlag`).
 *
 * With `--transparent`, libc is required: every passed socket must be one whose clients have an
 * IP address, and the capability is probed (`transparent.ts`), before anything is served.
 * @module
 */
import { CONNECTION_NAME } from "../service/activation.ts";
import { classify, dropFfi, type Libc, libcFlag, openLibc, probeSockets } from "./libc.ts";
import type { PlannedSocket } from "../service/plan.ts";
import { StartError } from "../service/plan.ts";
import { Relay, type RelayOptions } from "./datagrams.ts";
import { formatTarget } from "../cli/target.ts";
import { capabilityProblem, passedSocketProblem, Transparent } from "./transparent.ts";

/** The passed sockets, sorted. */
export interface Sorted {
  /** For the adoption layer. */
  readonly streams: readonly PlannedSocket[];
  /** The relay serving the datagram sockets, or null when none was passed. */
  readonly relay: Relay | null;
  /** What the relay forwards where, for the start-up line. */
  readonly descriptions: readonly string[];
}

/**
 * The options the relay needs, with `--proxy-protocol` to refuse datagram sockets, and
 * `--transparent`.
 */
export interface SortOptions extends Omit<RelayOptions, "transparent"> {
  readonly proxyProtocol: string | null;
  readonly transparent: boolean;
}

/**
 * Sorts `sockets`; opens the relay for the datagram ones.
 * @throws {StartError} for a datagram socket with `--proxy-protocol` or a vsock target, or
 * when libc or epoll cannot be had.
 */
export async function sortSockets(
  sockets: readonly PlannedSocket[],
  options: SortOptions,
): Promise<Sorted> {
  try {
    const transparent = options.transparent ? openTransparent(sockets) : null;
    const datagrams = sockets.length === 0 ||
        sockets.every(({ socket }) => socket.name === CONNECTION_NAME)
      ? []
      : datagramSockets(sockets);
    if (datagrams.length === 0) return { streams: sockets, relay: null, descriptions: [] };
    for (const { socket, target } of datagrams) {
      checkDatagram(socket.fd, socket.name, target, options);
    }
    const relay = openRelay({ ...options, transparent }, transparent?.libc);
    const descriptions = datagrams.map(({ socket, target, family }) => {
      const where = `fd ${socket.fd}, "${socket.name}"`;
      let added;
      try {
        added = relay.add(socket.fd, family, target);
      } catch (e) {
        throw new StartError(`Cannot serve the datagram socket ${where}: ${(e as Error).message}.`);
      }
      return `${added.local} (${where}, datagrams) to ${formatTarget(added.target)}`;
    });
    const streams = sockets.filter((planned) =>
      !datagrams.some((d) => d.socket === planned.socket)
    );
    return { streams, relay, descriptions };
  } finally {
    await dropFfi();
  }
}

/**
 * The datagram sockets among `sockets` (none when FFI is not granted: the adoption layer then
 * refuses them).
 * @throws {StartError} for a socket that is neither stream nor datagram.
 */
function datagramSockets(
  sockets: readonly PlannedSocket[],
): Array<PlannedSocket & { family: number }> {
  const kinds = probeSockets(sockets.map(({ socket }) => socket.fd));
  if (!Array.isArray(kinds)) {
    if (kinds.kind === "no-permission") return [];
    throw new StartError(`Cannot open ${kinds.path} for datagram sockets: ${kinds.message}`);
  }
  return kinds.flatMap((kind, i) => {
    const planned = sockets[i];
    if (kind.type === "datagram") return [{ ...planned, family: kind.family }];
    if (kind.type === "stream") return [];
    const { fd, name } = planned.socket;
    throw new StartError(
      `Passed in socket fd ${fd} (name "${name}") is neither a stream nor a datagram socket ` +
        `(${kind.why}); pass ListenStream= or ListenDatagram= sockets only.`,
    );
  });
}

function checkDatagram(
  fd: number,
  name: string,
  target: PlannedSocket["target"],
  options: SortOptions,
): void {
  const which = `the datagram socket fd ${fd} ("${name}")`;
  if (options.proxyProtocol !== null) {
    throw new StartError(
      `--proxy-protocol cannot be used with ${which}: PROXY protocol v2 defines a header per ` +
        "datagram, but no common UDP server reads it. Serve the datagram socket from a unit " +
        "without --proxy-protocol.",
    );
  }
  if (target.kind === "vsock") {
    throw new StartError(
      `${which} cannot be forwarded to ${formatTarget(target)}: Linux has no vsock datagrams. ` +
        "Give it a HOST:PORT or Unix socket target (--target=NAME=TARGET).",
    );
  }
}

/** Opens libc, for `what`. @throws {StartError} */
function libcFor(what: string): Libc {
  const libc = openLibc();
  if (!("kind" in libc)) return libc;
  throw new StartError(
    libc.kind === "failed"
      ? `Cannot open libc for ${what}: ${libc.message}`
      : `Cannot open libc for ${what}: no FFI permission; add ${libcFlag()} to the deno flags.`,
  );
}

/**
 * For `--transparent`: opens libc, checks that every passed socket's clients have an IP address
 * to carry and that the capability is there.
 * @throws {StartError} naming what cannot be served, or the capability.
 */
function openTransparent(sockets: readonly PlannedSocket[]): Transparent {
  const libc = libcFor("--transparent");
  for (const { socket } of sockets) {
    const problem = passedSocketProblem(classify(libc, socket.fd), socket.fd, socket.name);
    if (problem !== null) throw new StartError(problem);
  }
  const problem = capabilityProblem(libc);
  if (problem !== null) throw new StartError(problem);
  return new Transparent(libc);
}

function openRelay(options: RelayOptions, opened?: Libc): Relay {
  const libc = opened ?? libcFor("datagram sockets");
  try {
    return new Relay(libc, options);
  } catch (e) {
    throw new StartError(`Cannot serve datagram sockets: ${(e as Error).message}`);
  }
}

/**
 * Sorts the passed sockets before any is served: stream sockets go to the adoption layer
 * (`adopt.ts`, `node:net`), datagram sockets to the relay (`relay.ts`, libc through FFI).
 *
 * FFI is used only where Deno's permissions grant it for libc: then every passed socket is asked
 * its type, and FFI is given up before serving, at once when no datagram socket was passed.
 * Without the grant, the sockets go to the adoption layer as they are, which refuses a datagram
 * socket, naming the flag that would serve it (`libcFlag`).
 * @module
 */
import { CONNECTION_NAME } from "../service/activation.ts";
import { dropFfi, openLibc, probeSockets } from "./libc.ts";
import type { PlannedSocket } from "../service/plan.ts";
import { StartError } from "../service/plan.ts";
import { Relay, type RelayOptions } from "./datagrams.ts";
import { formatTarget } from "../cli/target.ts";

/** The passed sockets, sorted. */
export interface Sorted {
  /** For the adoption layer. */
  readonly streams: readonly PlannedSocket[];
  /** The relay serving the datagram sockets, or null when none was passed. */
  readonly relay: Relay | null;
  /** What the relay forwards where, for the start-up line. */
  readonly descriptions: readonly string[];
  /** The limit on open files, when the sockets were probed and it has one; else null. */
  readonly descriptorLimit: number | null;
}

/** The options the relay needs, with `--proxy-protocol` to refuse datagram sockets. */
export interface SortOptions extends RelayOptions {
  readonly proxyProtocol: string | null;
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
    const { datagrams, descriptorLimit } = sockets.length === 0 ||
        sockets.every(({ socket }) => socket.name === CONNECTION_NAME)
      ? { datagrams: [], descriptorLimit: null }
      : datagramSockets(sockets);
    if (datagrams.length === 0) {
      return { streams: sockets, relay: null, descriptions: [], descriptorLimit };
    }
    for (const { socket, target } of datagrams) {
      checkDatagram(socket.fd, socket.name, target, options);
    }
    const relay = openRelay(options);
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
    return { streams, relay, descriptions, descriptorLimit };
  } finally {
    await dropFfi();
  }
}

/**
 * The datagram sockets among `sockets` (none when FFI is not granted: the adoption layer then
 * refuses them), and the limit on open files.
 * @throws {StartError} for a socket that is neither stream nor datagram.
 */
function datagramSockets(
  sockets: readonly PlannedSocket[],
): { datagrams: Array<PlannedSocket & { family: number }>; descriptorLimit: number | null } {
  const probe = probeSockets(sockets.map(({ socket }) => socket.fd));
  if ("kind" in probe) {
    if (probe.kind === "no-permission") return { datagrams: [], descriptorLimit: null };
    throw new StartError(`Cannot open ${probe.path} for datagram sockets: ${probe.message}`);
  }
  const datagrams = probe.kinds.flatMap((kind, i) => {
    const planned = sockets[i];
    if (kind.type === "datagram") return [{ ...planned, family: kind.family }];
    if (kind.type === "stream") return [];
    const { fd, name } = planned.socket;
    throw new StartError(
      `Passed in socket fd ${fd} (name "${name}") is neither a stream nor a datagram socket ` +
        `(${kind.why}); pass ListenStream= or ListenDatagram= sockets only.`,
    );
  });
  return { datagrams, descriptorLimit: probe.descriptorLimit };
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

function openRelay(options: RelayOptions): Relay {
  const libc = openLibc();
  if ("kind" in libc) {
    const why = libc.kind === "failed" ? libc.message : "no FFI permission";
    throw new StartError(`Cannot open libc for datagram sockets: ${why}`);
  }
  try {
    return new Relay(libc, options);
  } catch (e) {
    throw new StartError(`Cannot serve datagram sockets: ${(e as Error).message}`);
  }
}

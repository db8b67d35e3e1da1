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
import { CONNECTION_NAME } from "./activation.ts";
import { dropFfi, type Libc, openLibc } from "./libc.ts";
import type { PlannedSocket } from "./plan.ts";
import { StartError } from "./plan.ts";
import { classify, Relay, type RelayOptions } from "./relay.ts";
import { formatTarget } from "./target.ts";

/** The passed sockets, sorted. */
export interface Sorted {
  /** For the adoption layer. */
  readonly streams: readonly PlannedSocket[];
  /** The relay serving the datagram sockets, or null when none was passed. */
  readonly relay: Relay | null;
  /** What the relay forwards where, for the start-up line. */
  readonly descriptions: readonly string[];
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
  const none: Sorted = { streams: sockets, relay: null, descriptions: [] };
  if (sockets.length === 0 || sockets.every(({ socket }) => socket.name === CONNECTION_NAME)) {
    await dropFfi();
    return none;
  }
  const libc = openLibc();
  if (!("call" in libc)) {
    await dropFfi();
    if (libc.kind === "no-permission") return none;
    throw new StartError(`Cannot open ${libc.path} for datagram sockets: ${libc.message}`);
  }
  const streams: PlannedSocket[] = [];
  const datagrams: Array<PlannedSocket & { family: number }> = [];
  for (const planned of sockets) {
    const kind = classify(libc, planned.socket.fd);
    if (kind.type === "datagram") datagrams.push({ ...planned, family: kind.family });
    else if (kind.type === "stream") streams.push(planned);
    else {
      await dropFfi();
      const { fd, name } = planned.socket;
      throw new StartError(
        `Passed in socket fd ${fd} (name "${name}") is neither a stream nor a datagram socket ` +
          `(${kind.why}); pass ListenStream= or ListenDatagram= sockets only.`,
      );
    }
  }
  if (datagrams.length === 0) {
    await dropFfi();
    return none;
  }
  for (const { socket, target } of datagrams) {
    checkDatagram(socket.fd, socket.name, target, options);
  }
  const relay = openRelay(libc, options);
  await dropFfi();
  const descriptions = datagrams.map(({ socket, target, family }) =>
    `${relay.add(socket.fd, family, target)} (fd ${socket.fd}, "${socket.name}", datagrams) ` +
    `to ${formatTarget(target)}`
  );
  return { streams, relay, descriptions };
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

function openRelay(libc: Libc, options: RelayOptions): Relay {
  try {
    return new Relay(libc, options);
  } catch (e) {
    throw new StartError(`Cannot serve datagram sockets: ${(e as Error).message}`);
  }
}

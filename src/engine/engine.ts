/**
 * The engine: every socket the proxy serves, on one event loop over libc (see
 * docs/development.md). Opening it sorts the sockets of the plan, the passed ones by what the
 * kernel says they are (a listening or connected stream socket, a datagram socket), opens our
 * own `--listen` sockets, and gives up Deno's FFI permission before anything is served.
 *
 *   engine.ts ─┬─ poller.ts        one epoll set, waited on by a worker thread
 *              ├─ streams.ts       listeners, admission ─ dial.ts ─ connection.ts
 *              └─ datagrams.ts     sessions, batches (batch.ts)
 *   under them: libc.ts (the one FFI library), sockaddr.ts, errno.ts
 * @module
 */
import { formatListenAddress } from "../cli/address.ts";
import { atPort, formatTarget, type Target, type TargetSpec } from "../cli/target.ts";
import { type Plan, StartError } from "../service/plan.ts";
import { Relay, type RelayOptions } from "./datagrams.ts";
import { ERRNO, errnoMessage } from "./errno.ts";
import { dropFfi, type Libc, libcFlag, openLibc } from "./libc.ts";
import { localAddress, makeNonBlocking, openListener } from "./listeners.ts";
import { Poller } from "./poller.ts";
import { systemResolver } from "./resolve.ts";
import { type StreamOptions, StreamRelay } from "./streams.ts";
import { AF_UNIX } from "./sockaddr.ts";
import { capabilityProblem, passedSocketProblem, Transparent } from "./transparent.ts";

const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SO_ACCEPTCONN = 30;
const SO_DOMAIN = 39;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_SEQPACKET = 5;

/** What the engine needs to know. */
export interface EngineOptions {
  readonly streams: StreamOptions;
  readonly datagrams: RelayOptions;
  /** `--proxy-protocol`, which datagram sockets refuse. */
  readonly proxyProtocol: string | null;
  /** `--transparent`: every backend socket carries its client's address (`transparent.ts`). */
  readonly transparent?: boolean;
}

/** What a passed file descriptor is, as far as serving it goes. */
export type SocketKind =
  | { readonly type: "listener" | "connection"; readonly family: number }
  | { readonly type: "datagram"; readonly family: number }
  | { readonly type: "other"; readonly why: string };

/** Asks the kernel what kind of socket `fd` is (SO_TYPE, SO_DOMAIN, SO_ACCEPTCONN). */
export function classify(libc: Libc, fd: number): SocketKind {
  const value = new Uint8Array(4);
  const length = new Uint8Array(4);
  const get = (option: number) => {
    new DataView(length.buffer).setUint32(0, 4, true);
    return libc.call.getsockopt(fd, SOL_SOCKET, option, value, length) < 0
      ? null
      : new DataView(value.buffer).getInt32(0, true);
  };
  const type = get(SO_TYPE);
  if (type === null) {
    const errno = libc.errno();
    return { type: "other", why: errno === ERRNO.ENOTSOCK ? "not a socket" : errnoMessage(errno) };
  }
  const family = get(SO_DOMAIN) ?? 0;
  if (type === SOCK_DGRAM) return { type: "datagram", family };
  if (type === SOCK_STREAM) return { type: get(SO_ACCEPTCONN) ? "listener" : "connection", family };
  return {
    type: "other",
    why: type === SOCK_SEQPACKET ? "a sequential-packet socket" : `socket type ${type}`,
  };
}

/**
 * Opens libc, which serves every socket.
 * @throws {StartError} when Deno's permissions do not let it, naming the flag that would.
 */
export function openEngineLibc(): Libc {
  const libc = openLibc();
  if (!("kind" in libc)) return libc;
  throw new StartError(
    libc.kind === "failed"
      ? `Cannot open the C library ${libc.path}: ${libc.message}`
      : "socket-proxyd serves its sockets through the C library, which Deno's permissions do " +
        `not let it open: add ${libcFlag()} to the deno flags (the socket-proxyd wrapper and ` +
        "package do).",
  );
}

/** Every socket the proxy serves; see the module's doc. */
export class Engine {
  readonly #poller: Poller;
  readonly #libc: Libc;
  /** The stream sockets: listeners and connections. */
  readonly streams: StreamRelay;
  /** The datagram sockets, or null when none was passed. */
  datagrams: Relay | null = null;
  /** What is forwarded where, for the start-up line. */
  readonly descriptions: string[] = [];
  /** Whether only passed connections are served (no listener): done when they are. */
  onlyConnections = true;
  /** Whether any stream socket is served (a listener or a connection). */
  servesStreams = false;

  private constructor(
    libc: Libc,
    readonly options: EngineOptions,
    readonly transparent: Transparent | null,
  ) {
    this.#libc = libc;
    this.#poller = new Poller(libc);
    this.streams = new StreamRelay(libc, this.#poller, { ...options.streams, transparent });
  }

  /**
   * Opens the sockets of `plan` through `libc`, then gives up FFI (also when it fails).
   * @throws {StartError} naming what cannot be served, and what to do.
   */
  static async open(libc: Libc, plan: Plan, options: EngineOptions): Promise<Engine> {
    try {
      const transparent = options.transparent ? openTransparent(libc, plan) : null;
      let engine;
      try {
        engine = new Engine(libc, options, transparent);
      } catch (e) {
        throw new StartError(`Cannot watch sockets: ${(e as Error).message}`);
      }
      for (const { socket, target } of plan.sockets) {
        engine.#addPassed(socket.fd, socket.name, target);
      }
      await engine.#listenOwn(plan);
      return engine;
    } finally {
      await dropFfi();
    }
  }

  #addPassed(fd: number, name: string, spec: TargetSpec): void {
    const where = `fd ${fd} ("${name}")`;
    const kind = classify(this.#libc, fd);
    switch (kind.type) {
      case "other":
        throw new StartError(
          `Passed in socket fd ${fd} (name "${name}") is neither a stream nor a datagram ` +
            `socket (${kind.why}); pass ListenStream= or ListenDatagram= sockets only.`,
        );
      case "datagram":
        return this.#addDatagram(fd, name, kind.family, spec);
      case "listener": {
        if (fd === 0) throw listeningStdin();
        this.#nonBlocking(fd, where);
        const target = this.#targetAt(spec, fd, `the socket on ${where}`);
        const local = this.streams.addListener(fd, target, null);
        this.onlyConnections = false;
        this.servesStreams = true;
        this.descriptions.push(`${local} (fd ${fd}, "${name}") to ${formatTarget(target)}`);
        return;
      }
      case "connection": {
        this.#nonBlocking(fd, where);
        const target = this.#targetAt(spec, fd, `the connection on ${where}`);
        this.streams.addConnection(fd, target, kind.family !== AF_UNIX);
        this.servesStreams = true;
        this.descriptions.push(`connection on fd ${fd} to ${formatTarget(target)}`);
      }
    }
  }

  #nonBlocking(fd: number, where: string): void {
    try {
      makeNonBlocking(this.#libc, fd);
    } catch (e) {
      throw new StartError(`Cannot serve the socket on ${where}: ${(e as Error).message}.`);
    }
  }

  /** The target for the socket `fd`; "HOST:*" takes its port. */
  #targetAt(spec: TargetSpec, fd: number, what: string): Target {
    const local = localAddress(this.#libc, fd);
    const port = local === null || local.family === "unix" ? null : local.port;
    try {
      return atPort(spec, port);
    } catch (e) {
      throw new StartError(`Cannot serve ${what}: ${(e as Error).message}.`);
    }
  }

  #addDatagram(fd: number, name: string, family: number, spec: TargetSpec): void {
    const which = `the datagram socket fd ${fd} ("${name}")`;
    if (this.options.proxyProtocol !== null) {
      throw new StartError(
        `--proxy-protocol cannot be used with ${which}: PROXY protocol v2 defines a header per ` +
          "datagram, but no common UDP server reads it. Serve the datagram socket from a unit " +
          "without --proxy-protocol.",
      );
    }
    if (spec.kind === "vsock") {
      throw new StartError(
        `${which} cannot be forwarded to ${formatTarget(spec)}: Linux has no vsock datagrams. ` +
          "Give it a HOST:PORT or Unix socket target (--target=NAME=TARGET).",
      );
    }
    this.datagrams ??= new Relay(this.#libc, this.#poller, {
      ...this.options.datagrams,
      transparent: this.transparent,
    });
    this.onlyConnections = false;
    let added;
    try {
      added = this.datagrams.add(fd, family, spec);
    } catch (e) {
      const where = `fd ${fd}, "${name}"`;
      throw new StartError(`Cannot serve the datagram socket ${where}: ${(e as Error).message}.`);
    }
    this.descriptions.push(
      `${added.local} (fd ${fd}, "${name}", datagrams) to ${formatTarget(added.target)}`,
    );
  }

  async #listenOwn(plan: Plan): Promise<void> {
    const spec = plan.listenTarget;
    if (spec === null) return;
    for (const address of plan.listen) {
      const port = address.kind === "tcp" ? address.port : null;
      let target;
      try {
        target = atPort(spec, port);
      } catch (e) {
        throw new StartError(
          `Cannot serve --listen=${formatListenAddress(address)}: ${(e as Error).message}.`,
        );
      }
      let own;
      try {
        own = await openListener(
          this.#libc,
          address,
          this.options.streams.resolve ?? systemResolver,
        );
      } catch (e) {
        this.streams.stopAccepting(); // Closes the ones opened before.
        throw new StartError((e as Error).message);
      }
      const local = this.streams.addListener(own.fd, target, { path: own.path });
      this.onlyConnections = false;
      this.servesStreams = true;
      this.descriptions.push(`${local} to ${formatTarget(target)}`);
    }
  }

  /** Starts serving every socket. */
  start(): void {
    this.streams.start();
    this.datagrams?.start();
  }

  /** Stops taking new clients and datagrams (see the relays'). */
  stopAccepting(): void {
    this.streams.stopAccepting();
    this.datagrams?.stopReading();
  }

  /** Ends the event loop; call once every connection and session is closed. */
  async close(): Promise<void> {
    await this.#poller.close();
  }
}

/**
 * For `--transparent`: checks that every passed socket's clients have an IP address to carry
 * and that the capability is there.
 * @throws {StartError} naming what cannot be served, or the capability.
 */
function openTransparent(libc: Libc, plan: Plan): Transparent {
  for (const { socket } of plan.sockets) {
    const problem = passedSocketProblem(classify(libc, socket.fd), socket.fd, socket.name);
    if (problem !== null) throw new StartError(problem);
  }
  const problem = capabilityProblem(libc);
  if (problem !== null) throw new StartError(problem);
  return new Transparent(libc);
}

function listeningStdin(): StartError {
  return new StartError(
    'Passed in socket fd 0 (name "connection") is a listening socket, not a connection; with ' +
      "StandardInput=socket set Accept=yes, or let the service manager pass listening sockets " +
      "in LISTEN_FDS (the default without StandardInput=socket).",
  );
}

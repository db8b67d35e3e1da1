/**
 * The stream relay: serves stream sockets (TCP, Unix, passed in or our own), on the engine's
 * event loop.
 *
 * A listener, when ready, is accepted from (`accept4`) until the kernel's queue is empty, up to
 * {@link ACCEPTS_PER_TURN} at a time. Each client is admitted, made to wait or refused under the
 * limits (`admission.ts`); an admitted one gets its backend dialled (`dial.ts`) and is then
 * forwarded both ways (`connection.ts`) until both sides are done. Running out of descriptors
 * (EMFILE) on accept leaves the listener alone for {@link ACCEPT_RETRY_MS}: its clients wait in
 * the kernel's queue meanwhile, and serving resumes as soon as descriptors are free again.
 *
 * One connection's life:
 *
 *   accept4 ─► admitted? ─no─► waiting (in arrival order) or refused (logged, then closed)
 *                 │yes
 *                 ▼
 *   dial: socket, connect ─EINPROGRESS─► EPOLLOUT ─► connected ─► PROXY header, if any
 *     │refused, unreachable                                          │
 *     ▼                                                              ▼
 *   next address; next round after a pause      forwarding: read ─► write, both ways
 *   until --connect-timeout, then the client     EOF ─► shutdown(SHUT_WR) of the other side
 *   is closed (logged, counted as failed)        both ended, an error, --idle-timeout ─► close
 * @module
 */
import { formatTarget, type Target } from "../cli/target.ts";
import { Admission, sourceOf, type WhenFull } from "../service/admission.ts";
import { waitAtMost } from "../service/deadline.ts";
import { after, type Cancel, every } from "../service/timer.ts";
import { log, logs, ThrottledLog } from "../service/log.ts";
import type { Reclaimer } from "../service/reclaim.ts";
import { Refusals } from "../service/refusals.ts";
import { Connection, type ConnectionHost } from "./connection.ts";
import { Destination } from "./destination.ts";
import { Dial, type Dialled, tuneListener, tuneTcp } from "./dial.ts";
import { ERRNO, SystemError } from "./errno.ts";
import type { Libc } from "./libc.ts";
import { describeListener, localAddress, peerSockaddr } from "./listeners.ts";
import type { Transparent } from "./transparent.ts";
import { EPOLLIN, type Pollable, type Poller } from "./poller.ts";
import { proxyHeader, type ProxyProtocolVersion } from "./proxyprotocol.ts";
import type { Resolver } from "./resolve.ts";
import { decode, formatSocketAddress, SOCKADDR_MAX, type SocketAddress } from "./sockaddr.ts";

/** The buffer every connection reads into: 1 MiB took a third less CPU per GiB than 256 KiB. */
export const BUFFER_SIZE = 1024 * 1024;

/**
 * Buffers kept for sides that must hold bytes their peer has not taken (a slow reader): one is
 * borrowed per stall and given back once the bytes are out, so a bulk transfer to a slow client
 * allocates none after its first stall (until the next reclaim lets the pool go). Beyond this
 * many, given-back buffers are let go (4 MiB).
 */
export const SPARES_KEPT = 4;

/** Clients accepted from one listener per readiness, so that other sockets get their turn. */
export const ACCEPTS_PER_TURN = 64;

/** After an accept failed for want of descriptors (or memory), the listener rests this long. */
export const ACCEPT_RETRY_MS = 100;

/** How often dials under way are checked against `--connect-timeout`. */
export const DEADLINE_TICK_MS = 50;

const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;

/** What the stream relay needs to know. */
export interface StreamOptions {
  /** The most connections open at once (over all listeners). */
  readonly connectionsMax: number;
  /** What becomes of a client over `connectionsMax`. */
  readonly whenFull: WhenFull;
  /** The most connections open or waiting at once from one source, or null for no limit. */
  readonly connectionsPerSource: number | null;
  /** Send this PROXY protocol header to the backend first, or none. */
  readonly proxyProtocol: ProxyProtocolVersion | null;
  /** Retry a refusing backend for this many milliseconds; 0 tries once. */
  readonly connectTimeoutMs: number;
  /** Close connections without traffic for this many milliseconds; Infinity never. */
  readonly idleTimeoutMs: number;
  /** Turn on TCP keepalive on both sides. */
  readonly keepalive: boolean;
  /** Called whenever the number of open or waiting connections changes. */
  readonly onChange: () => void;
  /** Gives memory back once no connection is open (see `reclaim.ts`). */
  readonly reclaimer?: Reclaimer;
  /** Looks up host names (the system's resolver unless a test gives one). */
  readonly resolve?: Resolver;
  /** The most clients that wait with `--when-full=wait` (a test seam; see `MAX_WAITING`). */
  readonly maxWaiting?: number;
  /** With `--transparent`: each backend socket carries its client's address. */
  readonly transparent?: Transparent | null;
}

/** A listening socket being served. */
class Listener implements Pollable {
  token = 0;
  /** Whether it is watched for clients now. */
  watching = false;
  /** A timer that watches it again after a failed accept. */
  resting: Cancel | null = null;
  /**
   * Whether the clients it accepts now have the TCP options set on it (see `tuneListener`):
   * once its queue has been emptied once, every client in it came after they were set.
   */
  inherits = false;

  constructor(
    readonly relay: StreamRelay,
    readonly fd: number,
    readonly destination: Destination,
    /** Whether its clients have IP addresses (TCP options apply, sources are counted). */
    readonly ip: boolean,
    /** Whether the TCP options were set on it, for its clients to inherit. */
    readonly tuned: boolean,
    /** Passed in: the service manager keeps its own descriptor (never unlinked, never shut). */
    readonly passed: boolean,
    /** For our own Unix socket: the file to remove when it closes. */
    readonly path: string | null,
    /** For log lines: "[::]:80 (fd 3)". */
    readonly name: string,
  ) {}

  ready(): void {
    this.relay.accept(this);
  }
}

/** A client admitted or waiting: its socket, where it goes, the source it counts under. */
interface Admitted {
  readonly fd: number;
  readonly destination: Destination;
  readonly ip: boolean;
  /** Whether it has the TCP options already (inherited from its listener). */
  readonly tuned: boolean;
  readonly passed: boolean;
  readonly source: string | null;
  /**
   * The client's address as accept4 gave it, kept when something needs it later (a PROXY
   * header, `--transparent`, debug lines): a client that has reset by then has no peer name.
   */
  readonly client: Uint8Array | null;
}

/** What the relay keeps with each connection. */
interface Kept {
  readonly admitted: Admitted;
  /** For the debug line at the end: the client's address and the start, when debug logs. */
  readonly peer: string | null;
  readonly started: number;
}

/** Serves stream sockets; see the module's doc. */
export class StreamRelay implements ConnectionHost {
  /** The shared buffer, made at the first read after start-up or a reclaim. */
  #buffer: Uint8Array | null = null;
  readonly bufferSize: bigint = BigInt(BUFFER_SIZE);
  /** Buffers given back, for the next side that must keep bytes (see {@link SPARES_KEPT}). */
  readonly #spares: Uint8Array[] = [];
  readonly #options: StreamOptions;
  readonly #admission: Admission<Admitted>;
  readonly #refusals = new Refusals();
  readonly #failures = new ThrottledLog(
    "error",
    1000,
    (held) => `Failed to connect: ${held} more connection(s) failed since the last message.`,
  );
  readonly #acceptFailures = new ThrottledLog(
    "error",
    1000,
    (held) => `Failed to accept: ${held} more failure(s) since the last message.`,
  );
  readonly #listeners: Listener[] = [];
  /** Passed connections (Accept=yes, inetd), served at start. */
  readonly #passed: Admitted[] = [];
  readonly #connections = new Set<Connection>();
  /** The dials under way, by connection. */
  readonly #dials = new Map<Connection, Dial>();
  readonly #address = new Uint8Array(SOCKADDR_MAX);
  readonly #addressLength = new Uint8Array(4);
  #served = 0;
  #failed = 0;
  #accepting = false;
  #deadlineTicker: Cancel | null = null;
  #idleSweeper: Cancel | null = null;
  #drained: (() => void) | null = null;

  constructor(readonly libc: Libc, readonly poller: Poller, options: StreamOptions) {
    this.#options = options;
    this.#admission = new Admission({
      max: options.connectionsMax,
      perSource: options.connectionsPerSource,
      whenFull: options.whenFull,
      maxWaiting: options.maxWaiting,
    });
    options.reclaimer?.willReclaim(() => this.release());
  }

  /** The buffer every connection reads into (see {@link BUFFER_SIZE}). */
  get buffer(): Uint8Array {
    return this.#buffer ??= new Uint8Array(BUFFER_SIZE);
  }

  /**
   * Lets go of the shared buffer and the spares, for the reclaim's collection to free: after a
   * bulk transfer their pages stay in use otherwise (up to 5 MiB). Made again when needed.
   */
  release(): void {
    this.#buffer = null;
    this.#spares.length = 0;
  }

  /** Connections open now (being dialled or forwarded). */
  get active(): number {
    return this.#admission.active;
  }

  /** Clients waiting for a slot (`--when-full=wait`). */
  get waiting(): number {
    return this.#admission.waiting;
  }

  /** Connections forwarded since start (their backend connection opened). */
  get served(): number {
    return this.#served;
  }

  /**
   * Connections that were not forwarded: the target could not be reached (in time), or the
   * client left before it was.
   */
  get failed(): number {
    return this.#failed;
  }

  /** The refusals so far, for status and stop lines ("" when none). */
  get refused(): string {
    return this.#refusals.describe();
  }

  /**
   * Serves the listening socket `fd` (non-blocking), its clients going to `target`.
   * @param own for a socket of ours: the Unix socket file to remove at close, if any.
   * @returns where it listens, for the start-up line.
   */
  addListener(fd: number, target: Target, own: { path: string | null } | null): string {
    const local = localAddress(this.libc, fd);
    const ip = local !== null && local.family !== "unix";
    const where = describeListener(local);
    const listener = new Listener(
      this,
      fd,
      this.#destination(target),
      ip,
      ip && tuneListener(this.libc, fd, this.#options.keepalive),
      own === null,
      own?.path ?? null,
      own === null ? `${where} (fd ${fd})` : where,
    );
    this.#listeners.push(listener);
    return where;
  }

  /** Serves the passed connection `fd` (non-blocking) to `target`, once {@link start}ed. */
  addConnection(fd: number, target: Target, ip: boolean): void {
    this.#passed.push({
      fd,
      destination: this.#destination(target),
      ip,
      tuned: false,
      passed: true,
      source: null,
      client: peerSockaddr(this.libc, fd),
    });
  }

  #destination(target: Target): Destination {
    return new Destination(target, this.#options.resolve);
  }

  /** Starts accepting on every listener, and serves the passed connections. */
  start(): void {
    this.#accepting = true;
    for (const listener of this.#listeners) this.#watch(listener, true);
    for (const admitted of this.#passed.splice(0)) {
      if (this.#admission.request(null, admitted) === "admitted") this.#start(admitted);
    }
  }

  /**
   * Stops accepting: every listener is closed (a passed one only here: the service manager
   * keeps it listening, and clients that arrive meanwhile wait in its queue for the next start;
   * our own Unix socket's file is removed).
   */
  stopAccepting(): void {
    this.#accepting = false;
    this.#acceptFailures.flush();
    for (const listener of this.#listeners.splice(0)) {
      listener.resting?.();
      if (listener.token !== 0) this.poller.remove(listener.fd, listener.token);
      this.libc.call.close(listener.fd);
      if (listener.path !== null) {
        try {
          Deno.removeSync(listener.path);
        } catch {
          // Already gone.
        }
      }
    }
  }

  /** Writes the log lines held back (counts of refusals and failures) now: at stop. */
  flushLogs(): void {
    this.#refusals.flush();
    this.#failures.flush();
    this.#acceptFailures.flush();
  }

  /**
   * Waits up to `timeoutMs` for open connections to finish (waiting clients are served as
   * slots free), then closes the rest.
   * @returns how many connections had to be closed: open ones, and waiting ones unserved.
   */
  async drain(timeoutMs: number): Promise<{ open: number; waiting: number }> {
    if (this.active > 0) {
      await waitAtMost(new Promise<void>((resolve) => this.#drained = resolve), timeoutMs);
    }
    const waiting = this.#admission.takeWaiting();
    for (const { fd } of waiting) this.libc.call.close(fd);
    const open = this.#admission.active;
    for (const connection of [...this.#connections]) {
      connection.close(new Deno.errors.Interrupted("the drain timeout passed"));
    }
    this.#deadlineTicker?.();
    this.#idleSweeper?.();
    return { open, waiting: waiting.length };
  }

  /** Accepts the clients waiting on `listener`. */
  accept(listener: Listener): void {
    const call = this.libc.call;
    const perSource = this.#options.connectionsPerSource !== null && listener.ip;
    const keep = this.#keepsClients();
    const flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    const lengthView = new DataView(this.#addressLength.buffer);
    for (let i = 0; i < ACCEPTS_PER_TURN && this.#accepting; i++) {
      if (this.#queueFull()) return this.#watch(listener, false);
      lengthView.setUint32(0, SOCKADDR_MAX, true);
      const fd = call.accept4(listener.fd, this.#address, this.#addressLength, flags);
      if (fd < 0) return this.#acceptFailed(listener, this.libc.errno());
      const length = Math.min(lengthView.getUint32(0, true), SOCKADDR_MAX);
      this.#admit({
        fd,
        destination: listener.destination,
        ip: listener.ip,
        tuned: listener.inherits,
        passed: false,
        source: perSource ? sourceOf(hostOf(decode(this.#address, length))) : null,
        client: keep ? this.#address.slice(0, length) : null,
      });
    }
  }

  /** Whether each client's address is kept from its accept (see {@link Admitted.client}). */
  #keepsClients(): boolean {
    const options = this.#options;
    return options.proxyProtocol !== null || (options.transparent ?? null) !== null ||
      logs("debug");
  }

  /** With `--when-full=wait`, a full queue leaves the rest in the kernel's until it moves. */
  #queueFull(): boolean {
    const { whenFull, maxWaiting } = this.#admission.limits;
    return whenFull === "wait" && this.#admission.waiting >= maxWaiting;
  }

  #acceptFailed(listener: Listener, errno: number): void {
    switch (errno) {
      case ERRNO.EAGAIN:
        listener.inherits = listener.tuned;
        return;
      case ERRNO.EINTR:
      case ERRNO.ECONNABORTED:
        return; // The next readiness tries again.
    }
    // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or worse: rest a moment.
    this.#acceptFailures.hit(() =>
      `Failed to accept on ${listener.name}: ${new SystemError(errno).message}; retrying`
    );
    this.#watch(listener, false);
    listener.resting?.();
    listener.resting = after(ACCEPT_RETRY_MS, () => {
      listener.resting = null;
      if (this.#accepting && !this.#queueFull()) this.#watch(listener, true);
    });
  }

  #watch(listener: Listener, on: boolean): void {
    if (listener.watching === on) return;
    listener.watching = on;
    const events = on ? EPOLLIN : 0;
    if (listener.token === 0) {
      listener.token = this.poller.add(listener.fd, events, listener);
      if (listener.token === 0) {
        throw new Error(
          `cannot watch ${listener.name} (${new SystemError(this.libc.errno()).message})`,
        );
      }
    } else {
      this.poller.modify(listener.fd, listener.token, events);
    }
  }

  #admit(admitted: Admitted): void {
    const decision = this.#admission.request(admitted.source, admitted);
    if (decision === "admitted") return this.#start(admitted);
    if (decision === "waiting") return this.#options.onChange();
    const close = () => this.libc.call.close(admitted.fd);
    if (decision === "full") {
      const waiting = this.#admission.waiting;
      this.#refusals.refuse(
        close,
        "full",
        () =>
          `Hit connection limit, refusing connection (${this.#admission.active} open` +
          (waiting > 0 ? `, ${waiting} waiting, the most that may wait)` : ")"),
      );
    } else {
      const from = formatSocketAddress(decode(this.#address));
      const source = admitted.source!;
      this.#refusals.refuse(
        close,
        "source",
        () =>
          `Hit per-source connection limit, refusing connection from ${from} ` +
          `(${this.#admission.fromSource(source)} open or waiting from ${source})`,
      );
    }
    this.#options.onChange();
  }

  /** Dials the backend of an admitted client. */
  #start(admitted: Admitted): void {
    this.#options.reclaimer?.busy();
    const { fd, destination, ip } = admitted;
    if (ip && !admitted.tuned) tuneTcp(this.libc, fd, this.#options.keepalive);
    const debug = logs("debug");
    const kept: Kept = {
      admitted,
      peer: debug ? formatPeer(admitted.client) : null,
      started: debug ? performance.now() : 0,
    };
    const connection = new Connection(this, fd, admitted.passed, kept);
    this.#connections.add(connection);
    this.#options.onChange();
    const transparent = this.#options.transparent ?? null;
    const client = admitted.client;
    const dial = new Dial(
      this.libc,
      this.poller,
      destination,
      this.#options,
      (result) => this.#dialled(connection, kept, result, dial),
      transparent === null ? null : (socket, family) => transparent.bind(socket, family, client),
    );
    this.#dials.set(connection, dial);
    this.#tickDeadlines();
    this.#sweepIdle();
    dial.start();
  }

  #dialled(connection: Connection, kept: Kept, result: Dialled | Error, dial: Dial): void {
    this.#dials.delete(connection);
    if (result instanceof Error) {
      this.#failed++;
      const timedOut = result instanceof Deno.errors.TimedOut ||
        (result instanceof SystemError && result.errno === ERRNO.ETIMEDOUT);
      if (timedOut && dial.lastAddress !== null) {
        this.#options.transparent?.noReply(kept.admitted.client, dial.lastAddress);
      }
      const to = kept.admitted.destination.target;
      this.#failures.hit(() =>
        `Failed to connect to ${formatTarget(to)} for ` +
        `${kept.peer ?? this.#clientName(kept.admitted, connection.client.fd)}: ${result.message}`
      );
      return connection.close(result);
    }
    this.#served++;
    const header = this.#options.proxyProtocol === null
      ? null
      : proxyHeader(this.#options.proxyProtocol, this.#addresses(kept.admitted, connection));
    connection.open(result.fd, result.token, result.events, header);
    this.#options.onChange();
  }

  /**
   * The client's addresses for a PROXY header (null for a Unix client's): where it came from, as
   * accept4 said (the peer name is gone once it resets), and where it connected to.
   */
  #addresses(admitted: Admitted, connection: Connection) {
    const ip = (address: SocketAddress | null) =>
      address === null || address.family === "unix"
        ? null
        : { hostname: address.host, port: address.port };
    const remote = admitted.client === null ? null : decode(admitted.client);
    return { remote: ip(remote), local: ip(localAddress(this.libc, connection.client.fd)) };
  }

  /** The client, for a log line: its address, "unix", or that it has gone. */
  #clientName(admitted: Admitted, fd: number): string {
    const client = admitted.client ?? peerSockaddr(this.libc, fd);
    return client === null ? "a client that has gone" : formatPeer(client);
  }

  borrow(): Uint8Array {
    return this.#spares.pop() ?? new Uint8Array(BUFFER_SIZE);
  }

  giveBack(buffer: Uint8Array): void {
    if (this.#spares.length >= SPARES_KEPT) return;
    this.#spares.push(buffer);
    // Kept in the pool, it stays until a reclaim: have the next rest reclaim.
    this.#options.reclaimer?.held();
  }

  /** A connection is over: its slot goes to the next waiting client, if any. */
  ended(connection: Connection, error: Error | null): void {
    const kept = connection.data as Kept;
    const dial = this.#dials.get(connection);
    if (dial !== undefined) {
      // The client left (or the drain ended) before its backend was reached: not forwarded.
      dial.abort();
      this.#dials.delete(connection);
      this.#failed++;
    }
    this.#connections.delete(connection);
    if (kept.peer !== null) this.#logEnd(connection, kept, error);
    const next = this.#admission.release(kept.admitted.source);
    if (next !== null) {
      this.#start(next);
      return this.#resumeAccepting();
    }
    this.#options.onChange();
    if (this.#admission.active === 0) {
      this.#drained?.();
      this.#options.reclaimer?.idle();
    }
  }

  /** Listeners left alone because the waiting queue was full are watched again once it moves. */
  #resumeAccepting(): void {
    if (!this.#accepting || this.#queueFull()) return;
    for (const listener of this.#listeners) {
      if (!listener.watching && listener.resting === null) this.#watch(listener, true);
    }
  }

  #logEnd(connection: Connection, kept: Kept, error: Error | null): void {
    const seconds = ((performance.now() - kept.started) / 1000).toFixed(3);
    const ended = error === null ? "closed" : `aborted (${error.name}: ${error.message})`;
    log(
      "debug",
      `${kept.peer} -> ${formatTarget(kept.admitted.destination.target)}: ` +
        `${connection.sent} bytes sent, ${connection.received} received, ${seconds}s, ${ended}`,
    );
  }

  /**
   * While dials are under way, one timer gives up on those past their deadline, and watches the
   * clients of the others (a dial that takes this long waits for a backend that is slow or
   * still starting), so that a client that resets meanwhile ends its dial. A dial that
   * connects within a tick, as most do, costs its client no such registration.
   */
  #tickDeadlines(): void {
    if (this.#deadlineTicker !== null) return;
    this.#deadlineTicker = every(DEADLINE_TICK_MS, () => {
      const now = performance.now();
      for (const [connection, dial] of this.#dials) {
        if (dial.connecting && dial.deadline <= now) dial.expire();
        else connection.watchClient();
      }
      if (this.#dials.size > 0) return;
      this.#deadlineTicker?.();
      this.#deadlineTicker = null;
    });
  }

  /** With `--idle-timeout`, one timer closes the connections without traffic for that long. */
  #sweepIdle(): void {
    const idleMs = this.#options.idleTimeoutMs;
    if (this.#idleSweeper !== null || !Number.isFinite(idleMs)) return;
    this.#idleSweeper = every(Math.max(50, Math.min(1000, idleMs / 8)), () => {
      const now = performance.now();
      for (const connection of this.#connections) {
        if (!this.#dials.has(connection) && now - connection.lastActive >= idleMs) {
          connection.close(new IdleTimeoutError(`no traffic for ${idleMs} ms`));
        }
      }
      if (this.#connections.size > 0) return;
      this.#idleSweeper?.();
      this.#idleSweeper = null;
    });
  }
}

/** A connection was closed by `--idle-timeout`. */
export class IdleTimeoutError extends Error {
  override name = "IdleTimeout";
}

/** A client's address, for log lines: "192.0.2.1:51234", "[2001:db8::1]:443" or "unix". */
function formatPeer(client: Uint8Array | null): string {
  const address = client === null ? null : decode(client);
  return address === null || address.family === "unix" ? "unix" : formatSocketAddress(address);
}

/** The host of an IP address, for `sourceOf`; null for a Unix one. */
function hostOf(address: SocketAddress | null): string | null {
  return address === null || address.family === "unix" ? null : address.host;
}

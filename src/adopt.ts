/**
 * The fd-adoption layer: serves the sockets the service manager passed in.
 *
 * `Deno.listen` cannot adopt an inherited file descriptor (denoland/deno#14006); `node:net` can,
 * for TCP and Unix sockets. This module is the only one that knows that: above it, a passed
 * socket is either a listener that hands over accepted clients, or (with `Accept=yes`) one
 * client connection.
 * @module
 */
import net from "node:net";
import { CONNECTION_NAME, type PassedSocket } from "./service/activation.ts";
import { fastPathMissing } from "./fastpath.ts";
import { libcFlag } from "./engine/libc.ts";
import { log } from "./service/log.ts";
import { duplicate, rearmer, recoveryMissing } from "./rearm.ts";

/** A passed listening socket being served. */
export interface Listener {
  /** The passed socket it serves. */
  readonly passed: PassedSocket;
  /** Where it listens, for logs: "127.0.0.1:80", "[::]:80" or "unix socket". */
  readonly address: string;
  /** Its TCP port; null for a Unix socket. */
  readonly port: number | null;
  /**
   * The private API that recovering this listener after running out of file descriptors needs
   * and this Deno lacks (see `rearm.ts`), or null.
   */
  readonly recoveryMissing: string | null;
  /** The private API that the fast path for its clients needs and this Deno lacks, or null. */
  readonly fastPathMissing: string | null;
  /** Stops accepting. Closes only our descriptor: the socket stays bound and listening in the
   * service manager, which keeps its own, so clients that arrive meanwhile wait in its queue. */
  close(): void;
}

/** What a passed socket turned out to be. */
export type Adopted =
  | { readonly kind: "listener"; readonly listener: Listener }
  | { readonly kind: "connection"; readonly passed: PassedSocket; readonly socket: net.Socket };

/** A passed file descriptor could not be served. */
export class AdoptionError extends Error {
  override name = "AdoptionError";
}

/**
 * How often every listener is checked for having been stopped by running out of file
 * descriptors, and got going again (see `rearm.ts`): the longest a stopped listener stays
 * stopped once descriptors are free again. On a listener that works, a check costs one
 * event-loop wake-up shared by all listeners and, for TCP, no system call.
 */
export const REARM_INTERVAL_MS = 500;

/**
 * A quiet Unix listener is replaced at the first check after its last client, then ever less
 * often while it stays quiet (doubling up to this), and at every check while descriptors are
 * short: a stopped one is replaced as soon as they are free again (or within this, if it
 * stopped and they freed up between two checks), and an idle one costs next to nothing.
 */
export const REPLACE_BACKOFF_MAX_MS = 30_000;

const NO_RECOVERY = "if file descriptors run out, accepting may stop until a restart " +
  "(keep LimitNOFILE= above twice --connections-max)";

/** One check of a listener, every {@link REARM_INTERVAL_MS}; false: stop checking it. */
type Check = () => boolean;

/** The checks of the listeners being served, and the one timer that runs them. */
const checks = new Set<Check>();
let checkTimer: ReturnType<typeof setInterval> | undefined;

function startChecking(check: Check): void {
  checks.add(check);
  if (checkTimer !== undefined) return;
  checkTimer = setInterval(() => {
    for (const each of checks) if (!each()) stopChecking(each);
  }, REARM_INTERVAL_MS);
  Deno.unrefTimer(checkTimer as unknown as number); // Never what keeps the process alive.
}

function stopChecking(check: Check): void {
  if (!checks.delete(check) || checks.size > 0) return;
  clearInterval(checkTimer);
  checkTimer = undefined;
}

function describe(server: net.Server): string {
  const address = server.address();
  if (address === null) return "unix socket";
  if (typeof address === "string") return address;
  return address.family === "IPv6"
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}

function notStream(passed: PassedSocket, why: string): AdoptionError {
  return new AdoptionError(
    `Passed in socket fd ${passed.fd} (name "${passed.name}") is not a listening or connected ` +
      `stream socket (${why}); if it is a datagram socket (ListenDatagram=), give Deno ` +
      `${libcFlag()} to serve it (the socket-proxyd wrapper and package do).`,
  );
}

function adoptConnection(passed: PassedSocket, hint = ""): Adopted {
  let socket: net.Socket;
  try {
    socket = new net.Socket({ fd: passed.fd, allowHalfOpen: true, readable: true, writable: true });
  } catch (e) {
    throw notStream(passed, `${(e as Error).message}${hint}`);
  }
  socket.on("error", () => {}); // Reported where the socket is used.
  if (socket.remoteAddress === undefined && socket.localPort !== undefined) {
    // A TCP socket with an address but no peer is listening. (A Unix one cannot be told apart
    // here; reading it fails with ENOTCONN.)
    socket.destroy();
    throw new AdoptionError(
      `Passed in socket fd ${passed.fd} (name "${passed.name}") is a listening socket, not a ` +
        `connection; with StandardInput=socket set Accept=yes, or let the service manager pass ` +
        `listening sockets in LISTEN_FDS (the default without StandardInput=socket).`,
    );
  }
  return { kind: "connection", passed, socket };
}

const SERVER_OPTIONS: net.ServerOpts = { allowHalfOpen: true, pauseOnConnect: true };

/**
 * Serves a listening socket: the adopted fd, and after a replacement (see {@link guard}) a
 * duplicate of it, always through exactly one server at a time.
 */
class ServedListener implements Listener {
  readonly address: string;
  readonly port: number | null;
  readonly recoveryMissing: string | null;
  readonly fastPathMissing: string | null;
  #server: net.Server;
  #closed = false;
  /** Whether a client arrived since the last check. */
  #busy = false;
  #replacing = false;
  /** Unix: quiet checks between replacements, and how many are left before the next. */
  #interval = 1;
  #wait = 1;
  #check: Check | null = null;

  constructor(
    readonly passed: PassedSocket,
    server: net.Server,
    readonly onClient: (client: net.Socket, listener: Listener) => void,
  ) {
    this.#server = server;
    this.address = describe(server);
    const address = server.address();
    this.port = address !== null && typeof address === "object" ? address.port : null;
    this.recoveryMissing = recoveryMissing(server);
    this.fastPathMissing = fastPathMissing(server);
    this.#serve(server);
    this.#guard();
  }

  close = (): void => {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#check !== null) stopChecking(this.#check);
    this.#server.close();
  };

  #serve(server: net.Server): void {
    server.on("error", (error) => log("error", this.#say(`failed to accept: ${error.message}`)));
    server.on("connection", (client: net.Socket) => {
      this.#busy = true;
      client.on("error", () => {}); // Reported where the client is used.
      this.onClient(client, this);
    });
  }

  #say(what: string): string {
    return `Listener on fd ${this.passed.fd}: ${what}`;
  }

  /** Keeps the listener accepting after running out of descriptors: private API, see rearm.ts. */
  #guard(): void {
    if (this.recoveryMissing !== null) return; // Said once at start-up, for all listeners.
    const rearm = rearmer(this.#server);
    if (rearm !== null && rearm()) {
      // TCP: re-arm in place on every check; harmless when it was not stopped.
      this.#check = () => {
        if (this.#closed) return false;
        if (rearm()) return true;
        log("warning", this.#say(`re-arming it failed; ${NO_RECOVERY}.`));
        return false;
      };
    } else {
      // Unix: replace a listener that has taken no client since the last check (see
      // REPLACE_BACKOFF_MAX_MS for how often).
      const most = Math.max(1, Math.round(REPLACE_BACKOFF_MAX_MS / REARM_INTERVAL_MS));
      this.#check = () => {
        if (this.#closed) return false;
        if (this.#busy || this.#replacing) {
          this.#busy = false;
          this.#interval = this.#wait = 1;
          return true;
        }
        if (--this.#wait > 0) return true;
        const outcome = this.#replace();
        if (outcome === "short") this.#interval = 1;
        else this.#interval = Math.min(2 * this.#interval, most);
        this.#wait = this.#interval;
        return outcome !== "stop";
      };
    }
    startChecking(this.#check);
  }

  /**
   * Serves a duplicate of the socket through a fresh server, then closes the current one.
   * @returns "short" when no descriptor was to be had, "stop" when this cannot work here.
   */
  #replace(): "replacing" | "short" | "stop" {
    const fd = duplicate(this.#server);
    if (fd === "failed") return "short"; // Out of descriptors, most likely: next time.
    if (fd === "unsupported") {
      log("warning", this.#say(`duplicating it failed; ${NO_RECOVERY}.`));
      return "stop";
    }
    this.#replacing = true;
    const next = net.createServer(SERVER_OPTIONS);
    next.once("error", (error) => {
      // The duplicate may stay open; do not risk that again.
      this.#replacing = false;
      log("warning", this.#say(`serving a duplicate failed (${error.message}); ${NO_RECOVERY}.`));
      if (this.#check !== null) stopChecking(this.#check);
    });
    next.listen({ fd }, () => {
      this.#replacing = false;
      next.removeAllListeners("error");
      if (this.#closed) return next.close();
      this.#serve(next);
      const stopped = this.#server;
      this.#server = next;
      stopped.close();
    });
    return "replacing";
  }
}

function adoptListener(
  passed: PassedSocket,
  onClient: (client: net.Socket, listener: Listener) => void,
): Promise<Adopted> {
  const server = net.createServer(SERVER_OPTIONS);
  return new Promise((resolve, reject) => {
    server.once("error", (error: Error & { code?: string }) => {
      // A connected socket cannot listen (EINVAL): that is an Accept=yes connection.
      // (Deno closes a Unix fd whose listen() failed, so Unix connections must come named.)
      if (error.code === "EINVAL") {
        const hint = `; an Accept=yes Unix socket must be named "${CONNECTION_NAME}"`;
        try {
          return resolve(adoptConnection(passed, hint));
        } catch (e) {
          return reject(e);
        }
      }
      reject(notStream(passed, error.code ?? error.message));
    });
    server.listen({ fd: passed.fd }, () => {
      server.removeAllListeners("error");
      resolve({ kind: "listener", listener: new ServedListener(passed, server, onClient) });
    });
  });
}

/**
 * Serves a passed socket: a listener starts accepting (clients are handed to `onClient` paused
 * and half-open capable), a connected socket (`Accept=yes`) is returned as it is.
 *
 * @throws {AdoptionError} naming the fd when it is neither.
 */
export function adopt(
  passed: PassedSocket,
  onClient: (client: net.Socket, listener: Listener) => void,
): Promise<Adopted> {
  if (passed.name !== CONNECTION_NAME) return adoptListener(passed, onClient);
  try {
    return Promise.resolve(adoptConnection(passed));
  } catch (e) {
    return Promise.reject(e);
  }
}

/** How long the self-test waits for its own client; it takes a few milliseconds. */
export const SELF_TEST_TIMEOUT_MS = 5000;

/** Errors that say nothing about adoption: the test cannot run now, here. */
const CANNOT_TEST = new Set([
  "EMFILE",
  "ENFILE",
  "ENOMEM",
  "ENOBUFS",
  "EACCES",
  "EPERM",
  "EAFNOSUPPORT",
  "EADDRNOTAVAIL",
  "ENETUNREACH",
]);

function cannotTest(error: Error & { code?: string }): boolean {
  return CANNOT_TEST.has(error.code ?? "") || error instanceof Deno.errors.NotCapable ||
    error instanceof Deno.errors.PermissionDenied;
}

/**
 * Checks that this Deno really serves an adopted listening socket, without touching the passed
 * ones: it listens on a private TCP port on 127.0.0.1, adopts a duplicate of its descriptor with
 * a second server as passed sockets are adopted, closes the first, connects, and waits for the
 * second to accept. That is how Deno 2.7.12 to 2.7.14 failed: they adopted a TCP socket by
 * opening a listener of their own, and never served the passed one. A few milliseconds.
 *
 * @param network the `node:net` to test (tests pass a broken stand-in).
 * @returns null when it passed, or cannot run here (no IPv4 or loopback in the sandbox, no
 * descriptor to spare, no private API to duplicate with: the version floor then stands alone);
 * else what went wrong.
 */
export function selfTest(network: typeof net = net): Promise<string | null> {
  if (Deno.permissions.querySync({ name: "net", host: "127.0.0.1" }).state !== "granted") {
    return Promise.resolve(null);
  }
  return new Promise((resolve) => {
    const first = network.createServer();
    let second: net.Server | null = null;
    // Whatever Deno's node:net throws where nobody can catch it is not a verdict either.
    const unexpected = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      finish(null);
    };
    globalThis.addEventListener("unhandledrejection", unexpected);
    const finish = (verdict: string | null) => {
      clearTimeout(timer);
      globalThis.removeEventListener("unhandledrejection", unexpected);
      first.close();
      second?.close();
      resolve(verdict);
    };
    const failed = (step: string) => (error: Error & { code?: string }) =>
      finish(cannotTest(error) ? null : `${step} failed: ${error.code ?? error.message}`);
    const timer = setTimeout(
      () =>
        finish(`an adopted listening socket accepted nothing within ${SELF_TEST_TIMEOUT_MS} ms`),
      SELF_TEST_TIMEOUT_MS,
    );
    first.once("error", () => finish(null)); // No IPv4 here: nothing to learn.
    first.listen({ host: "127.0.0.1", port: 0 }, () => {
      const { port } = first.address() as net.AddressInfo;
      const fd = duplicate(first);
      if (typeof fd !== "number") return finish(null);
      second = network.createServer(SERVER_OPTIONS);
      second.once("error", failed("adopting a listening socket"));
      second.once("connection", (client: net.Socket) => {
        client.destroy();
        finish(null);
      });
      second.listen({ fd }, () => {
        first.close();
        Deno.connect({ hostname: "127.0.0.1", port }).then(
          (conn) => conn.close(),
          failed("connecting to an adopted socket"),
        );
      });
    });
  });
}

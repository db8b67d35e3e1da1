/**
 * Dialling: opens the backend connection for one client, with a non-blocking `connect` on the
 * engine's event loop. Each address of the target is tried in order until one connects; when
 * none does, the whole round is tried again after a short pause, doubled after each failure,
 * until `--connect-timeout` has passed (0: one round, as the reference does), so a backend that
 * is still starting when the first client arrives is waited for rather than the client reset.
 * A lack of permission (EACCES, EPERM: a Unix socket we may not write) is a configuration
 * error, not retried. Running out of file descriptors is retried like a refusal: the client
 * then waits for descriptors to free up, as the clients still in the listener's queue do.
 * @module
 */
import type { Destination } from "./destination.ts";
import { ERRNO, SystemError } from "./errno.ts";
import type { Libc } from "./libc.ts";
import { SIDE_EVENTS } from "./connection.ts";
import { EPOLLERR, EPOLLHUP, type Pollable, type Poller } from "./poller.ts";
import { AF_INET, AF_INET6, familyOf } from "./sockaddr.ts";
import { after, type Cancel } from "../service/timer.ts";

/** Pause after the first failed round; doubled after each further one, up to the maximum. */
export const RETRY_FIRST_MS = 25;
/** The longest pause between rounds. */
export const RETRY_MAX_MS = 500;

const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;

/** An int option value of 1, for setsockopt. */
export const ON: Uint8Array = new Uint8Array([1, 0, 0, 0]);
const OFF = new Uint8Array(4);

/** How a backend socket is made. */
export interface DialOptions {
  /** Try again for this many milliseconds while the target refuses; 0: one round. */
  readonly connectTimeoutMs: number;
  /** Turn on TCP keepalive. */
  readonly keepalive: boolean;
}

/**
 * The connected backend socket, its registration with the poller (for the connection's
 * events, or 0: none yet), and the events that said it connected.
 */
export interface Dialled {
  readonly fd: number;
  readonly token: number;
  readonly events: number;
}

/** Sets TCP_NODELAY (the proxy writes what it reads at once) and, if asked, SO_KEEPALIVE. */
export function tuneTcp(libc: Libc, fd: number, keepalive: boolean): void {
  libc.call.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ON, 4);
  if (keepalive) libc.call.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, ON, 4);
}

/**
 * Sets TCP_NODELAY and SO_KEEPALIVE (on or off, as asked) on a listening socket, whose clients
 * accepted from then on inherit both: two system calls less per connection. Clients that were
 * already queued keep the options they had (see `streams.ts`).
 * @returns whether both were set.
 */
export function tuneListener(libc: Libc, fd: number, keepalive: boolean): boolean {
  return libc.call.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ON, 4) === 0 &&
    libc.call.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, keepalive ? ON : OFF, 4) === 0;
}

/** One client's dial; calls `done` once, unless aborted. */
export class Dial implements Pollable {
  #fd = -1;
  #token = 0;
  #addresses: readonly Uint8Array[] = [];
  #next = 0;
  #lastError: Error = new SystemError(ERRNO.ECONNREFUSED);
  #pause = RETRY_FIRST_MS;
  #last: Uint8Array | null = null;
  #pauseEnd: Cancel = () => {};
  #over = false;
  /** When it gives up (a `performance.now()` time); Infinity: after one round. */
  readonly deadline: number;

  /**
   * @param prepare called on each new socket before it connects (`--transparent` binds it to the
   * client's address), with its address family: null, or why the client cannot be forwarded at
   * all (the dial then gives up at once with a {@link Refused}).
   */
  constructor(
    readonly libc: Libc,
    readonly poller: Poller,
    readonly destination: Destination,
    readonly options: DialOptions,
    readonly done: (result: Dialled | Error) => void,
    readonly prepare: ((fd: number, family: number) => string | null) | null = null,
  ) {
    this.deadline = options.connectTimeoutMs > 0
      ? performance.now() + options.connectTimeoutMs
      : Infinity;
  }

  /** The address tried last, or null before the first. */
  get lastAddress(): Uint8Array | null {
    return this.#last;
  }

  /** Whether a connect is under way (rather than a lookup or a pause between rounds). */
  get connecting(): boolean {
    return this.#fd >= 0;
  }

  /** Starts the first round. */
  start(): void {
    const addresses = this.destination.addresses();
    if (!(addresses instanceof Promise)) return this.#round(addresses);
    addresses.then(
      (found) => this.#over || this.#round(found),
      (error) => this.#over || this.#roundFailed(error),
    );
  }

  /** The connect under way has not completed by the deadline: gives up. */
  expire(): void {
    this.#closeSocket();
    this.#finish(
      new Deno.errors.TimedOut(`no connection within ${this.options.connectTimeoutMs} ms`),
    );
  }

  /** Stops, closing the socket being connected; `done` is not called. */
  abort(): void {
    this.#over = true;
    this.#pauseEnd();
    this.#closeSocket();
  }

  ready(events: number): void {
    if (this.#over) return;
    if ((events & (EPOLLERR | EPOLLHUP)) === 0) {
      const dialled = { fd: this.#fd, token: this.#token, events };
      this.#fd = -1; // Handed over with its registration.
      return this.#finish(dialled);
    }
    this.#lastError = new SystemError(this.#socketError());
    this.#closeSocket();
    this.#attempt();
  }

  #round(addresses: readonly Uint8Array[]): void {
    this.#addresses = addresses;
    this.#next = 0;
    this.#attempt();
  }

  /** Tries the next address; after the last, the round has failed. */
  #attempt(): void {
    const call = this.libc.call;
    while (this.#next < this.#addresses.length) {
      const address = this.#addresses[this.#next++];
      const family = familyOf(address);
      const fd = call.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        this.#lastError = new SystemError(this.libc.errno());
        continue;
      }
      if (family === AF_INET || family === AF_INET6) tuneTcp(this.libc, fd, this.options.keepalive);
      this.#last = address;
      const refused = this.prepare?.(fd, family) ?? null;
      if (refused !== null) {
        call.close(fd);
        return this.#finish(new Refused(refused));
      }
      if (call.connect(fd, address, address.length) === 0) {
        return this.#finish({ fd, token: 0, events: 0 });
      }
      let errno = this.libc.errno();
      if (errno === ERRNO.EINPROGRESS) {
        // Registered for what the connection will need: its completion is the first edge.
        this.#token = this.poller.add(fd, SIDE_EVENTS, this);
        if (this.#token !== 0) return void (this.#fd = fd);
        errno = this.libc.errno();
      }
      call.close(fd);
      this.#lastError = new SystemError(errno);
    }
    this.#roundFailed(this.#lastError);
  }

  /** Every address failed: tries again after a pause, unless it is time to give up. */
  #roundFailed(error: Error): void {
    const left = this.deadline - performance.now();
    if (!retryable(error) || !(left > 0 && left < Infinity)) return this.#finish(error);
    this.#pauseEnd = after(Math.min(this.#pause, left), () => this.start());
    this.#pause = Math.min(this.#pause * 2, RETRY_MAX_MS);
  }

  #finish(result: Dialled | Error): void {
    if (this.#over) return;
    this.#over = true;
    this.done(result);
  }

  #closeSocket(): void {
    if (this.#fd < 0) return;
    if (this.#token !== 0) this.poller.forget(this.#token);
    this.libc.call.close(this.#fd);
    this.#fd = -1;
    this.#token = 0;
  }

  #socketError(): number {
    const value = new Uint8Array(4);
    const length = new Uint8Array([4, 0, 0, 0]);
    this.libc.call.getsockopt(this.#fd, SOL_SOCKET, SO_ERROR, value, length);
    return new DataView(value.buffer).getInt32(0, true) || ERRNO.ECONNREFUSED;
  }
}

/** A client that must not be forwarded (`--transparent` cannot carry its address). */
export class Refused extends Error {
  override name = "Refused";
}

/** A refusal is worth waiting out; a lack of permission is a configuration error. */
export function retryable(error: Error): boolean {
  return !(error instanceof SystemError) ||
    (error.errno !== ERRNO.EACCES && error.errno !== ERRNO.EPERM);
}

/**
 * Forwarding one stream connection both ways, on the engine's event loop: the data path.
 *
 * Each side is one socket. Bytes read from one side are written to the other at once, through
 * the one buffer every connection shares (the event loop handles one socket at a time), so an
 * idle connection holds no buffer at all. When the other side does not take them all, the rest
 * is kept for that side alone, the reading side is no longer watched, and the other is watched
 * for room: backpressure, with memory bounded by one read per direction. End of stream on one
 * side becomes a half-close (`shutdown(SHUT_WR)`) of the other once its bytes are out; when both
 * directions have ended, both sockets are closed (the last direction's FIN comes with the close,
 * one system call sooner). An error on either side, a reset say, closes both at once: epoll
 * reports errors even on a side not watched for anything, so a reset is seen while the
 * connection waits on its other side.
 * @module
 */
import { ERRNO, SystemError } from "./errno.ts";
import type { Libc } from "./libc.ts";
import { EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, type Pollable, type Poller } from "./poller.ts";

/** Reads in a row from one side per readiness while they fill the buffer: 4 MiB at 256 KiB. */
const ROUNDS = 16;

const SHUT_WR = 1;
const SHUT_RDWR = 2;
const SOL_SOCKET = 1;
const SO_ERROR = 4;

/** What a connection needs from the relay that owns it. */
export interface ConnectionHost {
  readonly libc: Libc;
  readonly poller: Poller;
  /** The buffer every connection reads into, and its size as the C size it is passed as. */
  readonly buffer: Uint8Array;
  readonly bufferSize: bigint;
  /** Called once, when the connection is over and both its sockets are closed. */
  ended(connection: Connection, error: Error | null): void;
}

/** Not watched (yet, or any more). */
const UNWATCHED = -1;

/** One socket of a connection. */
class Side implements Pollable {
  token = 0;
  /** The epoll events it is watched for, or {@link UNWATCHED}. */
  interest = UNWATCHED;
  /** A read gave end of stream. */
  eof = false;
  /** Writing to it was shut down. */
  shut = false;
  /** Bytes read from the other side that it has not taken yet. */
  pending: Uint8Array | null = null;
  /** Bytes read from it. */
  bytes = 0;
  other: Side = this;

  constructor(
    readonly connection: Connection,
    public fd: number,
    /** Passed in (Accept=yes, inetd): other descriptors may share the socket. */
    readonly passed: boolean,
  ) {}

  ready(events: number): void {
    this.connection.ready(this, events);
  }
}

/** A client connection and its backend connection, forwarded both ways. */
export class Connection {
  readonly client: Side;
  readonly backend: Side;
  #open = false;
  #closed = false;
  /** When a byte was last read from either side (the poller's clock), for `--idle-timeout`. */
  lastActive = 0;

  /**
   * @param clientFd the accepted (or passed) client socket, non-blocking.
   * @param passed whether the client socket was passed in rather than accepted.
   * @param data what the relay keeps with the connection (its target, its source, ...).
   */
  constructor(
    readonly host: ConnectionHost,
    clientFd: number,
    passed: boolean,
    readonly data: unknown = null,
  ) {
    this.client = new Side(this, clientFd, passed);
    this.backend = new Side(this, -1, false);
    this.client.other = this.backend;
    this.backend.other = this.client;
  }

  /** Bytes from the client to the backend so far. */
  get sent(): number {
    return this.client.bytes;
  }

  /** Bytes from the backend to the client so far. */
  get received(): number {
    return this.backend.bytes;
  }

  /** Whether it is over. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Starts forwarding over the connected backend socket `backendFd` (registered with the poller
   * under `token` by its dial, or 0), `first` (a PROXY header) before any client byte. The
   * client has usually sent its first bytes by now: they are read at once rather than after
   * another wait.
   */
  open(backendFd: number, token: number, first: Uint8Array | null): void {
    const backend = this.backend;
    backend.fd = backendFd;
    if (token !== 0) {
      // The dial's registration (watched for EPOLLOUT) carries on.
      backend.token = token;
      backend.interest = EPOLLOUT;
      this.host.poller.handOver(token, backend);
    }
    this.#open = true;
    this.lastActive = this.host.poller.now;
    if (first !== null && !this.#write(this.backend, first)) return;
    this.#watch(this.backend);
    this.#watch(this.client);
    if (this.#canRead(this.client)) this.#pump(this.client);
  }

  /**
   * Watches the client for errors only, while its backend is being dialled: a client that
   * resets meanwhile ends the connection (see {@link ready}).
   */
  watchClient(): void {
    this.#watch(this.client);
  }

  /** Handles readiness of `side`. */
  ready(side: Side, events: number): void {
    if (this.#closed) return;
    if ((events & EPOLLERR) !== 0) return this.#fail(new SystemError(this.#socketError(side)));
    if (!this.#open) {
      // The client, while its backend is dialled: only a hang-up comes, a reset with ERR.
      return this.close(new SystemError(ERRNO.ECONNRESET));
    }
    // A hang-up with bytes pending cannot take them: the write says why.
    if (side.pending !== null && (events & (EPOLLOUT | EPOLLHUP)) !== 0 && !this.#flush(side)) {
      return;
    }
    if (this.#canRead(side)) {
      if ((events & (EPOLLIN | EPOLLHUP)) !== 0) this.#pump(side);
    } else if ((events & EPOLLHUP) !== 0 && side.pending === null) {
      // Hung up (its peer sent FIN, and we shut it) while its reader waits: reported until
      // it is read, so it is watched again only when it can be.
      this.#unwatch(side);
    }
  }

  /**
   * Closes both sockets (a passed one is shut down first, since other descriptors may keep it
   * open) and tells the host, once; `error` is why, or null when both directions ended.
   */
  close(error: Error | null): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const side of [this.client, this.backend]) {
      if (side.fd < 0) continue;
      if (side.passed) {
        if (side.interest !== UNWATCHED) this.host.poller.remove(side.fd, side.token);
        if (error !== null) this.host.libc.call.shutdown(side.fd, SHUT_RDWR);
      } else if (side.interest !== UNWATCHED) {
        this.host.poller.forget(side.token);
      }
      this.host.libc.call.close(side.fd);
      side.fd = -1;
      side.pending = null;
    }
    this.host.ended(this, error);
  }

  #fail(error: Error): void {
    this.close(error);
  }

  #canRead(side: Side): boolean {
    return this.#open && !side.eof && side.other.pending === null;
  }

  /** Reads `from` and writes what it gives to the other side, while that takes it all. */
  #pump(from: Side): void {
    const { libc, buffer, bufferSize } = this.host;
    const to = from.other;
    for (let round = 0; round < ROUNDS; round++) {
      const n = libc.call.read(from.fd, buffer, bufferSize);
      if (n > 0) {
        from.bytes += n;
        this.lastActive = this.host.poller.now;
        const written = libc.call.write(to.fd, buffer, BigInt(n));
        if (written === n) {
          if (n < buffer.length) return; // The socket is most likely drained.
          continue;
        }
        if (written < 0 && libc.errno() !== ERRNO.EAGAIN) {
          return this.#fail(new SystemError(libc.errno()));
        }
        to.pending = buffer.slice(Math.max(written, 0), n);
        this.#watch(from);
        this.#watch(to);
        return;
      }
      if (n === 0) return this.#ended(from);
      const errno = libc.errno();
      if (errno === ERRNO.EAGAIN) return;
      if (errno !== ERRNO.EINTR) return this.#fail(new SystemError(errno));
    }
  }

  /**
   * Writes what `to` has pending.
   * @returns false when the connection failed or closed meanwhile.
   */
  #flush(to: Side): boolean {
    const pending = to.pending!;
    const { libc } = this.host;
    const written = libc.call.write(to.fd, pending, BigInt(pending.length));
    if (written < 0) {
      const errno = libc.errno();
      if (errno === ERRNO.EAGAIN || errno === ERRNO.EINTR) return true;
      this.#fail(new SystemError(errno));
      return false;
    }
    if (written < pending.length) {
      to.pending = pending.subarray(written);
      return true;
    }
    to.pending = null;
    const from = to.other;
    if (from.eof) {
      this.#ended(from);
      return !this.#closed;
    }
    this.#watch(to);
    this.#watch(from);
    return true;
  }

  /**
   * Writes `data` to `to` before anything else (the PROXY header); what it does not take is
   * kept pending.
   * @returns false when the connection failed.
   */
  #write(to: Side, data: Uint8Array): boolean {
    to.pending = data;
    return this.#flush(to);
  }

  /**
   * `from` gave end of stream: once the other side has taken what was read before, it is
   * half-closed, or, when the other direction is over too, both are closed.
   */
  #ended(from: Side): void {
    from.eof = true;
    const to = from.other;
    if (to.pending !== null) return this.#watch(from);
    if (to.eof && from.shut) return this.close(null);
    if (this.host.libc.call.shutdown(to.fd, SHUT_WR) < 0) {
      const errno = this.host.libc.errno();
      // The peer is gone already (it reset, or closed both ways): nothing more to tell it.
      if (errno !== ERRNO.ENOTCONN) return this.#fail(new SystemError(errno));
    }
    to.shut = true;
    this.#watch(from);
  }

  /** Brings the epoll interest of `side` in line with its state. */
  #watch(side: Side): void {
    const wanted = (this.#canRead(side) ? EPOLLIN : 0) | (side.pending !== null ? EPOLLOUT : 0);
    if (wanted === side.interest) return;
    const poller = this.host.poller;
    if (side.interest === UNWATCHED) {
      side.token = poller.add(side.fd, wanted, side);
      if (side.token === 0) return this.#fail(new SystemError(this.host.libc.errno()));
    } else {
      poller.modify(side.fd, side.token, wanted);
    }
    side.interest = wanted;
  }

  #unwatch(side: Side): void {
    this.host.poller.remove(side.fd, side.token);
    side.interest = UNWATCHED;
  }

  /** The error pending on `side`'s socket (SO_ERROR). */
  #socketError(side: Side): number {
    const value = new Uint8Array(4);
    const length = new Uint8Array([4, 0, 0, 0]);
    this.host.libc.call.getsockopt(side.fd, SOL_SOCKET, SO_ERROR, value, length);
    return new DataView(value.buffer).getInt32(0, true) || ERRNO.ECONNRESET;
  }
}

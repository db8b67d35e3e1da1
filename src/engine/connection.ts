/**
 * Forwarding one stream connection both ways, on the engine's event loop: the data path.
 *
 * Each side is one socket, watched once for everything (readable, writable, the peer's end of
 * stream), edge-triggered, so a connection costs no epoll change after it is registered: the
 * side remembers what the kernel said (there may be bytes to read; there is room to write) and
 * acts on it when it can. Bytes read from one side are written to the other at once, through
 * the one buffer every connection shares (the event loop handles one socket at a time), so an
 * idle connection holds no buffer at all. When the other side does not take them all, the rest
 * is kept for that side alone, in a buffer borrowed from a small pool until it has taken them,
 * and reading stops meanwhile (backpressure: memory bounded by one read per direction). End of stream on one side becomes a half-close
 * (`shutdown(SHUT_WR)`) of the other once its bytes are out; when both directions have ended,
 * both sockets are closed (the last direction's FIN comes with the close, one system call
 * sooner). An error on either side, a reset say, closes both at once, even while the
 * connection waits on its other side.
 *
 * With edge-triggered readiness a side is read until a read comes back short (the kernel's
 * queue was empty then; anything that comes later is a new edge), and after a short read once
 * more when the peer's end of stream was reported (EPOLLRDHUP), to read it.
 * @module
 */
import { ERRNO, SystemError } from "./errno.ts";
import type { Libc } from "./libc.ts";
import {
  EPOLLERR,
  EPOLLET,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  type Pollable,
  type Poller,
} from "./poller.ts";

/** What a side is watched for, once and for all. */
export const SIDE_EVENTS: number = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

/** Reads in a row from one side while they fill the buffer (4 MiB at 1 MiB); then others. */
const ROUNDS = 4;

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
  /** A buffer of the same size for bytes a side has not taken yet, to give back when it has. */
  borrow(): Uint8Array;
  /** Takes back a buffer from {@link borrow}. */
  giveBack(buffer: Uint8Array): void;
  /** Called once, when the connection is over and both its sockets are closed. */
  ended(connection: Connection, error: Error | null): void;
}

/** One socket of a connection. */
export class Side implements Pollable {
  token = 0;
  /** The kernel may have bytes (or the end of stream) for us to read. */
  readable = false;
  /** The peer's end of stream was reported: read until it shows. */
  peerEnded = false;
  /** A read gave end of stream. */
  eof = false;
  /** Writing to it was shut down. */
  shut = false;
  /** Bytes read from the other side that it has not taken yet... */
  pending: Uint8Array | null = null;
  /** ...in this buffer, borrowed from the host while they wait. */
  spare: Uint8Array | null = null;
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
   * Starts forwarding over the connected backend socket `backendFd`: registered by its dial
   * under `token` for {@link SIDE_EVENTS} (`events` are those that said it connected), or not
   * yet (0). `first` (a PROXY header) goes before any client byte.
   */
  open(backendFd: number, token: number, events: number, first: Uint8Array | null): void {
    const backend = this.backend;
    backend.fd = backendFd;
    if (token !== 0) {
      backend.token = token;
      this.host.poller.handOver(token, backend);
    }
    this.#open = true;
    this.lastActive = this.host.poller.now;
    if (!this.#register(backend) || !this.#register(this.client)) return;
    if (first !== null) {
      backend.pending = first;
      if (!this.#flush(backend)) return;
    }
    if (token !== 0) this.ready(backend, events);
    if (!this.#closed && this.client.readable) this.#pump(this.client);
  }

  /**
   * Watches the client while its backend is being dialled: a client that resets meanwhile ends
   * the connection, and what it sends is read once the backend is there.
   */
  watchClient(): void {
    this.#register(this.client);
  }

  /** Handles readiness of `side`. */
  ready(side: Side, events: number): void {
    if (this.#closed) return;
    if ((events & EPOLLERR) !== 0) return this.close(new SystemError(this.#socketError(side)));
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) !== 0) side.readable = true;
    if ((events & (EPOLLRDHUP | EPOLLHUP)) !== 0) side.peerEnded = true;
    if (!this.#open) return; // The client, while its backend is dialled.
    // Room to write, or a hang-up that the write will explain.
    if ((events & (EPOLLOUT | EPOLLHUP)) !== 0 && side.pending !== null && !this.#flush(side)) {
      return;
    }
    if (side.readable) this.#pump(side);
  }

  /** Reads `side` again (after others had their turn). */
  private resume(side: Side): void {
    if (!this.#closed && side.readable) this.#pump(side);
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
        if (side.token !== 0) this.host.poller.remove(side.fd, side.token);
        if (error !== null) this.host.libc.call.shutdown(side.fd, SHUT_RDWR);
      } else if (side.token !== 0) {
        this.host.poller.forget(side.token);
      }
      this.host.libc.call.close(side.fd);
      side.fd = -1;
      this.#release(side);
    }
    this.host.ended(this, error);
  }

  /**
   * Reads `from` and writes what it gives to the other side, while the kernel has more and the
   * other side takes it all.
   */
  #pump(from: Side): void {
    const { libc, buffer, bufferSize } = this.host;
    const to = from.other;
    for (let round = 0; round < ROUNDS; round++) {
      if (to.pending !== null || from.eof) return; // Backpressure, or nothing more to come.
      const n = libc.call.read(from.fd, buffer, bufferSize);
      if (n > 0) {
        from.bytes += n;
        this.lastActive = this.host.poller.now;
        const written = libc.call.write(to.fd, buffer, BigInt(n));
        if (written !== n) {
          if (written < 0 && libc.errno() !== ERRNO.EAGAIN) {
            return this.close(new SystemError(libc.errno()));
          }
          this.#keep(to, buffer.subarray(Math.max(written, 0), n));
          return;
        }
        // A short read emptied the kernel's queue: done, unless its end of stream is next.
        if (n < buffer.length && !from.peerEnded) return void (from.readable = false);
        continue;
      }
      if (n === 0) return this.#ended(from);
      const errno = libc.errno();
      if (errno === ERRNO.EAGAIN) return void (from.readable = false);
      if (errno !== ERRNO.EINTR) return this.close(new SystemError(errno));
    }
    // More to read, but others get their turn first.
    this.host.poller.defer(() => this.resume(from));
  }

  /**
   * Writes what `to` has pending; once it is all out, reading the other side goes on.
   * @returns false when the connection failed or closed meanwhile.
   */
  #flush(to: Side): boolean {
    const pending = to.pending!;
    const { libc } = this.host;
    const written = libc.call.write(to.fd, pending, BigInt(pending.length));
    if (written < 0) {
      const errno = libc.errno();
      if (errno === ERRNO.EAGAIN || errno === ERRNO.EINTR) return true;
      this.close(new SystemError(errno));
      return false;
    }
    if (written < pending.length) {
      to.pending = pending.subarray(written);
      return true;
    }
    this.#release(to);
    const from = to.other;
    if (from.eof) this.#ended(from);
    else if (from.readable) this.#pump(from);
    return !this.#closed;
  }

  /**
   * `from` gave end of stream: once the other side has taken what was read before, it is
   * half-closed, or, when the other direction is over too, both are closed.
   */
  #ended(from: Side): void {
    from.eof = true;
    from.readable = false;
    const to = from.other;
    if (to.pending !== null) return;
    if (to.eof && from.shut) return this.close(null);
    if (this.host.libc.call.shutdown(to.fd, SHUT_WR) < 0) {
      const errno = this.host.libc.errno();
      // The peer is gone already (it reset, or closed both ways): nothing more to tell it.
      if (errno !== ERRNO.ENOTCONN) return this.close(new SystemError(errno));
    }
    to.shut = true;
  }

  /** Keeps `bytes` (in the shared buffer now) for `to`, in a buffer borrowed for the wait. */
  #keep(to: Side, bytes: Uint8Array): void {
    const spare = to.spare ??= this.host.borrow();
    spare.set(bytes);
    to.pending = spare.subarray(0, bytes.length);
  }

  /** `side` has taken what it had pending (or is closed): its buffer goes back. */
  #release(side: Side): void {
    side.pending = null;
    if (side.spare === null) return;
    this.host.giveBack(side.spare);
    side.spare = null;
  }

  /**
   * Registers `side` for {@link SIDE_EVENTS} unless it is already.
   * @returns false when epoll refused (the connection is then closed).
   */
  #register(side: Side): boolean {
    if (side.token !== 0) return true;
    side.token = this.host.poller.add(side.fd, SIDE_EVENTS, side);
    if (side.token !== 0) return true;
    this.close(new SystemError(this.host.libc.errno()));
    return false;
  }

  /** The error pending on `side`'s socket (SO_ERROR). */
  #socketError(side: Side): number {
    const value = new Uint8Array(4);
    const length = new Uint8Array([4, 0, 0, 0]);
    this.host.libc.call.getsockopt(side.fd, SOL_SOCKET, SO_ERROR, value, length);
    return new DataView(value.buffer).getInt32(0, true) || ERRNO.ECONNRESET;
  }
}

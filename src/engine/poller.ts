/**
 * Readiness of every socket the engine serves: one epoll set, waited on by a worker thread
 * (libc's `epoll_wait` as a non-blocking FFI call) while the event loop goes on. While events
 * keep coming, the set is looked at again without waiting, on the main thread, which saves the
 * thread hop per batch under load. An idle engine has one wait pending and nothing else: no
 * timer, no wake-up.
 *
 * Each registration has a token of its own, carried in the event's 64-bit data. Tokens are
 * never reused (a counter good for 2^53 registrations, centuries at any rate a machine can
 * open sockets), so an event taken for a socket that has since been closed, and whose number
 * a new socket got, can never reach the new one's handler.
 * @module
 */
import type { Libc } from "./libc.ts";

/** epoll event bits: readable... */
export const EPOLLIN = 0x001;
/** ...writable... */
export const EPOLLOUT = 0x004;
/** ...an error is pending (a reset, an ICMP error on a connected UDP socket, ...)... */
export const EPOLLERR = 0x008;
/** ...both directions are shut (or reset). ERR and HUP come whatever the interest. */
export const EPOLLHUP = 0x010;
/** The peer shut down its writing: its end of stream is there to read. */
export const EPOLLRDHUP = 0x2000;
/** Edge-triggered: an event when something changes, not while a socket stays ready. */
export const EPOLLET = 0x80000000;

const EPOLL_CLOEXEC = 0x80000;
const EFD_CLOEXEC = 0x80000;
const EFD_NONBLOCK = 0x800;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;

/** Events taken per wait. */
const BATCH = 256;

/**
 * Looks without waiting, on the main thread, at most this many times in a row before the event
 * loop gets a turn (through the worker's wait): a wait handed to the worker costs about 15% of
 * the relay's CPU under load (its share of a DNS benchmark's profile), a look that finds nothing
 * one cheap system call.
 */
const SPINS = 64;

/** Looks that find nothing, in a row, before the worker waits. */
const EMPTY_SPINS = 4;

/** `struct epoll_event` is packed on x86_64 (12 bytes), naturally aligned elsewhere (16). */
const EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;

const TWO_TO_32 = 2 ** 32;

/** What the poller calls when a registered socket is ready, with the epoll event bits. */
export interface Pollable {
  ready(events: number): void;
}

/** Options for tests. */
export interface PollerOptions {
  /** The first token handed out (1 by default): a test seam for tokens past 2^32. */
  readonly firstToken?: number;
}

/** An epoll set and its wait loop. */
export class Poller {
  readonly #libc: Libc;
  readonly #epfd: number;
  readonly #handlers = new Map<number, Pollable>();
  readonly #events = new Uint8Array(BATCH * EVENT_SIZE);
  readonly #view = new DataView(this.#events.buffer);
  readonly #one = new Uint8Array(EVENT_SIZE);
  readonly #oneView = new DataView(this.#one.buffer);
  /** An eventfd in the set, written to end a pending wait (token 0). */
  readonly #wake: number;
  readonly #batchEnds: Array<() => void> = [];
  /** Work put off to let other sockets have their turn: done before the next wait. */
  #deferred: Array<() => void> = [];
  #nextToken: number;
  #running = false;
  #closed = false;
  #stopped: Promise<void> = Promise.resolve();
  /** `performance.now()` when the events at hand were taken. */
  now: number = performance.now();

  /** @throws {Error} when the kernel gives no epoll instance. */
  constructor(libc: Libc, options: PollerOptions = {}) {
    this.#libc = libc;
    this.#nextToken = options.firstToken ?? 1;
    this.#epfd = libc.call.epoll_create1(EPOLL_CLOEXEC);
    if (this.#epfd < 0) throw new Error(`epoll_create1 failed (errno ${libc.errno()})`);
    this.#wake = libc.call.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (this.#wake < 0 || this.#control(EPOLL_CTL_ADD, this.#wake, EPOLLIN, 0) < 0) {
      const errno = libc.errno();
      libc.call.close(this.#epfd);
      throw new Error(`eventfd failed (errno ${errno})`);
    }
  }

  #control(op: number, fd: number, events: number, token: number): number {
    const view = this.#oneView;
    view.setUint32(0, events, true);
    view.setUint32(DATA_OFFSET, token >>> 0, true);
    view.setUint32(DATA_OFFSET + 4, Math.floor(token / TWO_TO_32), true);
    return this.#libc.call.epoll_ctl(this.#epfd, op, fd, this.#one);
  }

  /**
   * Runs `task` soon, after the events at hand (for a socket that had more to read when its
   * turn ended): the loop then looks for events without waiting, does the task, and only waits
   * once nothing is put off.
   */
  defer(task: () => void): void {
    this.#deferred.push(task);
  }

  /** Calls `hook` once the events taken by each wait or look have been handled. */
  onBatchEnd(hook: () => void): void {
    this.#batchEnds.push(hook);
  }

  /**
   * Watches `fd` for `events` (level-triggered unless they include EPOLLET; 0 still reports
   * errors and hang-ups) and calls `handler` while it is ready.
   * @returns a token for {@link modify}, {@link remove} and {@link forget}, or 0 when epoll
   * refused (errno says why).
   */
  add(fd: number, events: number, handler: Pollable): number {
    const token = this.#nextToken++;
    if (this.#control(EPOLL_CTL_ADD, fd, events, token) < 0) return 0;
    this.#handlers.set(token, handler);
    if (!this.#running) this.#run();
    return token;
  }

  /** Hands the registration under `token` over to `handler` (its events go there now). */
  handOver(token: number, handler: Pollable): void {
    this.#handlers.set(token, handler);
  }

  /** Changes what `fd` (registered under `token`) is watched for. */
  modify(fd: number, token: number, events: number): void {
    this.#control(EPOLL_CTL_MOD, fd, events, token);
  }

  /** Stops watching `fd` (call before closing a descriptor someone else also holds). */
  remove(fd: number, token: number): void {
    this.#handlers.delete(token);
    this.#control(EPOLL_CTL_DEL, fd, 0, 0);
  }

  /**
   * Drops the handler of a descriptor about to be closed that nobody else holds (closing it
   * takes it out of the set: no system call needed); events already taken for it are dropped.
   */
  forget(token: number): void {
    this.#handlers.delete(token);
  }

  /** Sockets watched. */
  get size(): number {
    return this.#handlers.size;
  }

  /** Ends the wait and the loop, and closes the epoll set (not the sockets in it). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const one = new Uint8Array(8);
    one[0] = 1;
    this.#libc.call.write(this.#wake, one, 8n);
    await this.#stopped;
    this.#libc.call.close(this.#wake);
    this.#libc.call.close(this.#epfd);
  }

  async #run(): Promise<void> {
    this.#running = true;
    const stopped = Promise.withResolvers<void>();
    this.#stopped = stopped.promise;
    const call = this.#libc.call;
    // Not within add(): its caller has yet to learn the token.
    await Promise.resolve();
    // A first look without waiting: at start-up the client that started us is already there.
    let count = call.epoll_poll(this.#epfd, this.#events, BATCH, 0);
    while (!this.#closed && this.#handlers.size > 0) {
      if (count <= 0) {
        // With work put off, the worker only gives the event loop its turn (timeout 0).
        const wait = this.#deferred.length > 0 ? 0 : -1;
        count = await call.epoll_wait(this.#epfd, this.#events, BATCH, wait);
      }
      for (let spin = 0, empty = 0; spin < SPINS && empty < EMPTY_SPINS && !this.#closed; spin++) {
        if (count > 0 || this.#deferred.length > 0) {
          if (count > 0) this.#dispatch(count);
          this.#runDeferred();
          empty = 0;
        } else empty++;
        count = call.epoll_poll(this.#epfd, this.#events, BATCH, 0);
      }
      if (count > 0) this.#dispatch(count);
      // count < 0: EINTR (a signal reached the worker thread); wait again.
      count = 0;
    }
    this.#running = false;
    stopped.resolve();
  }

  #runDeferred(): void {
    if (this.#deferred.length === 0) return;
    const tasks = this.#deferred;
    this.#deferred = [];
    for (const task of tasks) task();
  }

  #dispatch(count: number): void {
    this.now = performance.now();
    const view = this.#view;
    for (let i = 0; i < count; i++) {
      const at = i * EVENT_SIZE;
      const token = view.getUint32(at + DATA_OFFSET, true) +
        view.getUint32(at + DATA_OFFSET + 4, true) * TWO_TO_32;
      this.#handlers.get(token)?.ready(view.getUint32(at, true));
    }
    for (const hook of this.#batchEnds) hook();
  }
}

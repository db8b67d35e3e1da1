/**
 * The datagram relay: serves passed datagram sockets (`ListenDatagram=`, UDP or Unix).
 *
 * Each client address of each listener gets a session: a socket of its own, connected to the
 * target, so the backend sees one stable peer per client (as nginx's UDP proxy and socat do).
 * Every datagram from the client goes out on it as one datagram, in order; every datagram the
 * backend sends back goes to the client from the passed socket itself, from the very address
 * the client sent to (IP_PKTINFO on a wildcard listener), since DNS resolvers and most UDP
 * clients drop replies from anywhere else. A session ends after `idleTimeoutMs` without traffic.
 * Nothing is truncated: a datagram too large for the buffer is dropped and counted.
 * @module
 */
import { systemResolver } from "./resolve.ts";
import { MessageBatch } from "./batch.ts";
import { waitAtMost } from "../service/deadline.ts";
import { ERRNO, type Libc } from "./libc.ts";
import { Admission, type Refusal, sourceOf } from "../service/admission.ts";
import { ThrottledLog } from "../service/log.ts";
import { REFUSAL_LOG_INTERVAL_MS } from "../service/refusals.ts";
import { type Reclaimer, REST_MS } from "../service/reclaim.ts";
import { EPOLLERR, EPOLLIN, Poller } from "./poller.ts";
import {
  AF_INET,
  AF_UNIX,
  decode,
  encodeIP,
  encodeUnix,
  familyOf,
  formatSocketAddress,
  SOCKADDR_MAX,
} from "./sockaddr.ts";
import { atPort, formatTarget, isIPAddress, type Target, type TargetSpec } from "../cli/target.ts";

/** The default `--idle-timeout` of a datagram session (see the man page for why). */
export const DEFAULT_SESSION_IDLE_MS = 30_000;

/** During a drain, a session whose backend has been silent this long is done. */
export const DRAIN_QUIET_MS = 1000;

/** Datagrams held for a session whose target name is still being resolved, at most. */
export const MAX_PENDING_DATAGRAMS = 16;

/** The largest datagram relayed: an IPv4 UDP payload is at most 65,507 bytes, IPv6's 65,527. */
export const IP_DATAGRAM_MAX = 65_535;

/**
 * The largest Unix datagram the relay takes. The kernel's default socket buffers
 * (net.core.wmem_default, wmem_max: 212,992 bytes) let about 212,900 through; this leaves room
 * for systems that raise them, and a larger one is dropped and counted.
 */
export const UNIX_DATAGRAM_MAX = 262_144;

/** Datagrams moved per `recvmmsg` or `sendmmsg`. */
const BATCH = 16;

/** Batches read from one listener per readiness, so that replies interleave under a flood. */
const READS_PER_TURN = 4;

const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const IPPROTO_IP = 0;
const IPPROTO_IPV6 = 41;
const IP_PKTINFO = 8;
const IPV6_RECVPKTINFO = 49;
const IPV6_PKTINFO = 50;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;

/** Counters, for STATUS= and the stop line. */
export interface RelayCounts {
  /** Sessions opened since start. */
  sessions: number;
  /** Datagrams from clients sent on to backends. */
  forwarded: number;
  /** Datagrams from backends sent back to clients. */
  returned: number;
  /** Datagrams dropped: too large, over a session limit, backend unreachable or queue full. */
  dropped: number;
  /** Of those, from new clients over `--connections-max` and over `--connections-per-source`. */
  refused: Record<Refusal, number>;
}

/** What the relay needs to know. */
export interface RelayOptions {
  /** The most sessions open at once. */
  readonly sessionsMax: number;
  /** The most sessions open at once from one source (see `admission.ts`), or null. */
  readonly sessionsPerSource: number | null;
  /** A session without traffic this long ends. */
  readonly idleTimeoutMs: number;
  /** Called whenever the number of open sessions changes. */
  readonly onChange: () => void;
  /** Gives memory back once no session (and no connection) is open (see `reclaim.ts`). */
  readonly reclaimer?: Reclaimer;
}

/** "1 session", "4 sessions". */
function sessions(count: number): string {
  return `${count} session${count === 1 ? "" : "s"}`;
}

/** A passed datagram socket being served. */
class DatagramListener {
  token: number | null = null;
  /** Replies to its clients, sent together (`sendmmsg`) once the events at hand are handled. */
  readonly replies: MessageBatch;
  /** The target's address when it needs no lookup, shared by the sessions. */
  readonly address: Uint8Array | null;
  /** The control messages that answer from each local address, shared by the sessions. */
  readonly #controls = new Map<string, Uint8Array>();

  constructor(
    libc: Libc,
    readonly fd: number,
    readonly family: number,
    readonly target: Target,
    /** Whether replies must say their source address (a wildcard IP listener). */
    readonly pktinfo: boolean,
  ) {
    this.replies = new MessageBatch(libc, BATCH, slotFor(family));
    this.address = target.kind === "tcp" && !isIPAddress(target.host)
      ? null
      : socketAddress(target);
  }

  /**
   * The control message that makes a reply leave from the destination address a client sent to
   * (`key`, its map key, made of `received`'s bytes from `at`, `length` of them).
   */
  controlFor(key: string, received: Uint8Array, at: number, length: number): Uint8Array {
    let control = this.#controls.get(key);
    if (control === undefined) {
      control = replyControl(this.family, received.subarray(at, at + length));
      this.#controls.set(key, control);
    }
    return control;
  }
}

/** A slot that holds the largest datagram a socket of `family` takes, and one byte more. */
function slotFor(family: number): number {
  return (family === AF_UNIX ? UNIX_DATAGRAM_MAX : IP_DATAGRAM_MAX) + 1;
}

/** One client of one listener, and its socket to the target. */
class Session {
  fd = -1;
  token: number | null = null;
  /** The backend's address, once known; and whether the socket is connected to it. */
  address: Uint8Array | null = null;
  connected = false;
  /** Datagrams waiting for the target's name to resolve; null once it has. */
  pending: Uint8Array[] | null = null;
  lastActive: number;
  /** Datagrams sent to the backend, and received from it. */
  sent = 0;
  replied = 0;

  constructor(
    readonly key: string,
    /** What it counts under for `--connections-per-source`. */
    readonly source: string | null,
    readonly listener: DatagramListener,
    /** The client's address, or null for a nameless Unix client (which gets no replies). */
    readonly client: Uint8Array | null,
    /** The control message that makes a reply leave from the address the client sent to. */
    readonly replyControl: Uint8Array | null,
    now: number,
  ) {
    this.lastActive = now;
  }
}

/** Serves datagram sockets; see the module's doc. */
export class Relay {
  readonly #libc: Libc;
  readonly #options: RelayOptions;
  readonly #poller: Poller;
  /** Sessions under the limits; a datagram cannot wait, so over one it is dropped. */
  readonly #admission: Admission<null>;
  /** Datagrams from clients, `recvmmsg`'s batch (made at start, sized for the listeners). */
  #in: MessageBatch | null = null;
  readonly #listeners: DatagramListener[] = [];
  /** Listeners with replies waiting to be sent. */
  readonly #replying = new Set<DatagramListener>();
  readonly #sessions = new Map<string, Session>();
  readonly #refusals: Record<Refusal, ThrottledLog> = {
    full: new ThrottledLog(
      "warning",
      REFUSAL_LOG_INTERVAL_MS,
      (held) =>
        `Hit connection limit: ${held} more datagram(s) from new clients dropped since the last message.`,
    ),
    source: new ThrottledLog(
      "warning",
      REFUSAL_LOG_INTERVAL_MS,
      (held) =>
        `Hit per-source connection limit: ${held} more datagram(s) from new clients dropped since the last message.`,
    ),
  };
  readonly #failures = new ThrottledLog(
    "error",
    1000,
    (held) => `Failed to forward datagrams: ${held} more failed since the last message.`,
  );
  readonly #counts: RelayCounts = {
    sessions: 0,
    forwarded: 0,
    returned: 0,
    dropped: 0,
    refused: { full: 0, source: 0 },
  };
  #now = performance.now();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  /** Datagrams handled, as of the last sweep; and since when that has not changed, or null. */
  #handled = 0;
  #quietSince: number | null = null;
  #draining: (() => void) | null = null;

  /** @throws {Error} when no epoll set can be had. */
  constructor(libc: Libc, options: RelayOptions) {
    this.#libc = libc;
    this.#options = options;
    this.#poller = new Poller(libc, () => this.#sendReplies());
    this.#admission = new Admission({
      max: options.sessionsMax,
      perSource: options.sessionsPerSource,
      whenFull: "refuse",
    });
  }

  /** Sessions open now. */
  get active(): number {
    return this.#sessions.size;
  }

  /** The counters so far. */
  get counts(): Readonly<RelayCounts> {
    return this.#counts;
  }

  /**
   * Prepares a passed datagram socket for serving; "HOST:*" takes its port. Nothing is read
   * until {@link start}.
   * @returns where it listens ("[::]:53", "/run/x.sock") and its target.
   * @throws {RangeError} for "HOST:*" on a Unix socket.
   */
  add(fd: number, family: number, spec: TargetSpec): { local: string; target: Target } {
    const local = this.#localAddress(fd);
    const target = atPort(spec, local === null || local.family === "unix" ? null : local.port);
    const wildcard = local !== null && local.family !== "unix" &&
      (local.host === "0.0.0.0" || local.host === "::");
    if (wildcard) {
      const on = new Uint8Array([1, 0, 0, 0]);
      if (family === AF_INET) this.#libc.call.setsockopt(fd, IPPROTO_IP, IP_PKTINFO, on, 4);
      else this.#libc.call.setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, on, 4);
    }
    this.#listeners.push(new DatagramListener(this.#libc, fd, family, target, wildcard));
    return { local: formatSocketAddress(local), target };
  }

  #localAddress(fd: number) {
    const name = new Uint8Array(SOCKADDR_MAX);
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, SOCKADDR_MAX, true);
    if (this.#libc.call.getsockname(fd, name, length) < 0) return null;
    return decode(name, new DataView(length.buffer).getUint32(0, true));
  }

  /** Starts reading every listener (the datagrams already queued come first). */
  start(): void {
    const slot = Math.max(...this.#listeners.map((listener) => slotFor(listener.family)));
    this.#in = new MessageBatch(this.#libc, BATCH, slot);
    for (const listener of this.#listeners) {
      listener.token = this.#poller.add(listener.fd, EPOLLIN, () => this.#readClients(listener));
      if (listener.token === null) {
        throw new Error(`cannot watch fd ${listener.fd} (errno ${this.#libc.errno()})`);
      }
    }
  }

  /**
   * Stops reading clients; what they send meanwhile stays queued in the passed sockets. The
   * counts of log lines held back are written now.
   */
  stopReading(): void {
    for (const lines of [this.#refusals.full, this.#refusals.source, this.#failures]) {
      lines.flush();
    }
    for (const listener of this.#listeners) {
      if (listener.token !== null) this.#poller.remove(listener.fd, listener.token);
      listener.token = null;
    }
  }

  /**
   * After {@link stopReading}: lets each session take its backend's replies until every
   * datagram it sent has had one, or its backend has been silent for {@link DRAIN_QUIET_MS}, for
   * up to `timeoutMs` in all; then closes the rest and the relay.
   * @returns how many sessions were still open at the timeout.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.#sweep(true);
    if (this.#sessions.size > 0) {
      const done = new Promise<void>((resolve) => this.#draining = resolve);
      clearInterval(this.#sweeper);
      this.#sweeper = setInterval(() => this.#sweep(true), 100);
      await waitAtMost(done, timeoutMs);
    }
    const left = this.#sessions.size;
    for (const session of [...this.#sessions.values()]) this.#close(session);
    await this.#poller.close();
    return left;
  }

  #readClients(listener: DatagramListener): void {
    this.#now = performance.now();
    const batch = this.#in!;
    const cap = slotFor(listener.family) - 1;
    for (let turn = 0; turn < READS_PER_TURN; turn++) {
      batch.prepareReceive(listener.pktinfo);
      const count = this.#libc.call.recvmmsg(listener.fd, batch.headers, BATCH, MSG_DONTWAIT, 0n);
      for (let i = 0; i < count; i++) {
        const n = batch.length(i);
        if (n > cap || (batch.flags(i) & MSG_TRUNC) !== 0) {
          this.#counts.dropped++;
          continue;
        }
        const session = this.#sessionFor(listener, batch, i);
        if (session !== null) this.#toBackend(session, batch.data(i), n);
      }
      if (count < BATCH) return;
    }
  }

  #sessionFor(listener: DatagramListener, batch: MessageBatch, i: number): Session | null {
    const name = batch.name(i);
    const nameLength = batch.nameLength(i);
    const named = listener.family !== AF_UNIX || nameLength > 2;
    const control = batch.control(i);
    const destination = listener.pktinfo ? destinationIn(control, batch.controlLength(i)) : -1;
    // An IPv4 socket reports IP_PKTINFO (4 bytes of address), an IPv6 one IPV6_PKTINFO (16).
    const destinationLength = listener.family === AF_INET ? 4 : 16;
    const destinationKey = destination < 0 ? "" : keyOf(control, destinationLength, destination);
    const key = `${listener.fd}/` + (named ? keyOf(name, nameLength) : "-") + destinationKey;
    const found = this.#sessions.get(key);
    if (found !== undefined) {
      found.lastActive = this.#now;
      return found;
    }
    const client = named ? name.slice(0, nameLength) : null;
    const source = client === null || listener.family === AF_UNIX ? null : sourceOfAddress(client);
    const decision = this.#admission.request(source, null);
    if (decision !== "admitted") {
      this.#counts.dropped++;
      this.#counts.refused[decision as Refusal]++;
      this.#refused(decision as Refusal, client!, source);
      return null;
    }
    const reply = destination < 0
      ? null
      : listener.controlFor(destinationKey, control, destination, destinationLength);
    const session = new Session(key, source, listener, client, reply, this.#now);
    this.#sessions.set(key, session);
    this.#counts.sessions++;
    this.#sweepWhileOpen();
    this.#options.reclaimer?.busy();
    this.#options.onChange();
    this.#open(session);
    return session;
  }

  #refused(why: Refusal, client: Uint8Array, source: string | null): void {
    const { max, perSource } = this.#admission.limits;
    this.#refusals[why].hit(() =>
      why === "full"
        ? `Hit connection limit, dropping a datagram from a new client (${sessions(max)} open)`
        : `Hit per-source connection limit, dropping a datagram from ` +
          `${formatSocketAddress(decode(client))} (${sessions(perSource!)} open from ${source})`
    );
  }

  /** Opens the session's socket to the target: at once for an address, after a name lookup. */
  #open(session: Session): void {
    const { target, address } = session.listener;
    if (address !== null || target.kind !== "tcp") return this.#connect(session, address!);
    session.pending = [];
    systemResolver(target.host).then((addresses) => {
      if (addresses.length === 0) throw new Error(`${target.host} has no addresses`);
      if (!this.#sessions.has(session.key)) return;
      this.#connect(session, encodeIP(addresses[0], target.port));
      const pending = session.pending ?? [];
      session.pending = null;
      for (const datagram of pending) this.#toBackend(session, datagram, datagram.length);
    }).catch((e) => {
      this.#counts.dropped += session.pending?.length ?? 0;
      this.#failed(session, `cannot resolve ${target.host} (${(e as Error).message})`);
      this.#close(session);
    });
  }

  #connect(session: Session, address: Uint8Array): void {
    const call = this.#libc.call;
    const family = familyOf(address);
    session.fd = call.socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (session.fd < 0) {
      this.#failed(session, `cannot open a socket (errno ${this.#libc.errno()})`);
      return this.#close(session);
    }
    // A Unix backend can only answer a client socket with a name: let the kernel pick one.
    if (family === AF_UNIX) call.bind(session.fd, address.subarray(0, 2), 2);
    session.token = this.#poller.add(
      session.fd,
      EPOLLIN,
      (events) => this.#readBackend(session, events),
    );
    session.address = address;
    this.#tryConnect(session);
  }

  /** Connects the session's socket (a Unix backend that is not there yet refuses). */
  #tryConnect(session: Session): boolean {
    const address = session.address!;
    session.connected = this.#libc.call.connect(session.fd, address, address.length) === 0;
    if (!session.connected) this.#failed(session, `cannot connect (errno ${this.#libc.errno()})`);
    return session.connected;
  }

  #failed(session: Session, why: string): void {
    this.#failures.hit(() =>
      `Failed to forward datagrams to ${formatTarget(session.listener.target)} for ` +
      `${formatSocketAddress(session.client === null ? null : decode(session.client))}: ${why}`
    );
  }

  /** Sends the first `n` bytes of `data` to the session's backend. */
  #toBackend(session: Session, data: Uint8Array, n: number): void {
    if (session.pending !== null) {
      if (session.pending.length < MAX_PENDING_DATAGRAMS) {
        session.pending.push(data.slice(0, n));
      } else this.#counts.dropped++;
      return;
    }
    if (session.fd < 0) return void this.#counts.dropped++;
    if (!session.connected && !this.#tryConnect(session)) return void this.#counts.dropped++;
    const call = this.#libc.call;
    let sent = Number(call.send(session.fd, data, BigInt(n), MSG_DONTWAIT));
    // A refusal the kernel kept from an earlier datagram (ICMP port unreachable): this one
    // still goes, so a backend that has come up is served at once.
    if (sent < 0 && this.#libc.errno() === ERRNO.ECONNREFUSED) {
      sent = Number(call.send(session.fd, data, BigInt(n), MSG_DONTWAIT));
    }
    if (sent < 0) return void this.#counts.dropped++;
    session.sent++;
    this.#counts.forwarded++;
  }

  /**
   * Takes the backend's datagrams straight into the listener's reply batch, as many as are
   * queued with one `recvmmsg` (fewer than asked for: the queue is empty, no call to find out).
   */
  #readBackend(session: Session, events: number): void {
    this.#now = performance.now();
    const replies = session.listener.replies;
    if ((events & EPOLLERR) !== 0) this.#clearError(session);
    for (let retried = false;;) {
      if (replies.count === replies.size) this.#sendRepliesOf(session.listener);
      const first = replies.count;
      const room = replies.size - first;
      replies.prepareReceiveFrom(first);
      const got = this.#libc.call.recvmmsg(session.fd, replies.from(first), room, MSG_DONTWAIT, 0n);
      if (got < 0) {
        // A refusal the kernel kept (ICMP port unreachable): counted as the error it is, and
        // what is queued behind it is still read.
        if (!retried && this.#libc.errno() === ERRNO.ECONNREFUSED) {
          retried = true;
          continue;
        }
        break;
      }
      this.#takeReplies(session, first, got);
      if (got < room) break;
    }
    if (this.#draining !== null && session.replied >= session.sent) this.#close(session);
  }

  /** Readies the `got` datagrams received from slot `first` on to go to the session's client. */
  #takeReplies(session: Session, first: number, got: number): void {
    const replies = session.listener.replies;
    session.lastActive = this.#now;
    session.replied += got;
    let next = first;
    for (let i = first; i < first + got; i++) {
      const n = replies.length(i);
      if (session.client === null || n >= replies.slot || (replies.flags(i) & MSG_TRUNC) !== 0) {
        this.#counts.dropped++;
        continue;
      }
      if (next !== i) replies.move(i, next, n);
      replies.prepareSend(next++, session.client, session.replyControl, n);
    }
    replies.count = next;
    if (next > 0) this.#replying.add(session.listener);
  }

  #clearError(session: Session): void {
    const value = new Uint8Array(4);
    const length = new Uint8Array([4, 0, 0, 0]);
    this.#libc.call.getsockopt(session.fd, SOL_SOCKET, SO_ERROR, value, length);
  }

  /** Sends the replies gathered while handling the events at hand. */
  #sendReplies(): void {
    for (const listener of this.#replying) this.#sendRepliesOf(listener);
    this.#replying.clear();
  }

  #sendRepliesOf(listener: DatagramListener): void {
    const replies = listener.replies;
    for (let first = 0; first < replies.count;) {
      const sent = this.#libc.call.sendmmsg(
        listener.fd,
        replies.from(first),
        replies.count - first,
        MSG_DONTWAIT,
      );
      // After a partial send, the next call fails on the one that could not go (a full send
      // buffer, an unreachable client): that one is dropped, and the rest go on.
      if (sent < 0) {
        this.#counts.dropped++;
        first++;
      } else {
        this.#counts.returned += sent;
        first += sent;
      }
    }
    replies.count = 0;
  }

  #close(session: Session): void {
    if (this.#sessions.get(session.key) !== session) return;
    this.#sessions.delete(session.key);
    if (session.token !== null) this.#poller.remove(session.fd, session.token);
    if (session.fd >= 0) this.#libc.call.close(session.fd);
    session.fd = -1;
    this.#admission.release(session.source);
    if (this.#sessions.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
      this.#draining?.();
      this.#options.reclaimer?.idle();
    }
    this.#options.onChange();
  }

  /** Ends silent sessions: one timer for all of them, running only while any is open. */
  #sweepWhileOpen(): void {
    if (this.#sweeper !== undefined || this.#draining !== null) return;
    const every = Math.max(50, Math.min(1000, this.#options.idleTimeoutMs / 8));
    if (!Number.isFinite(every)) return;
    this.#sweeper = setInterval(() => this.#sweep(false), every);
  }

  #sweep(draining: boolean): void {
    const now = performance.now();
    const quiet = draining ? DRAIN_QUIET_MS : this.#options.idleTimeoutMs;
    for (const session of [...this.#sessions.values()]) {
      const answered = draining && session.replied >= session.sent && session.pending === null;
      if (answered || now - session.lastActive >= quiet) this.#close(session);
    }
    if (!draining && this.#sessions.size > 0) this.#restWhenQuiet(now);
  }

  /** Sessions open, but no datagram for {@link REST_MS}: the reclaimer is told, once a spell. */
  #restWhenQuiet(now: number): void {
    const { forwarded, returned, dropped } = this.#counts;
    const handled = forwarded + returned + dropped;
    if (handled !== this.#handled) {
      this.#handled = handled;
      this.#quietSince = now;
    } else if (this.#quietSince !== null && now - this.#quietSince >= REST_MS) {
      this.#quietSince = null;
      this.#options.reclaimer?.rested();
    }
  }
}

/** What an IP client address counts under for `--connections-per-source`. */
function sourceOfAddress(client: Uint8Array): string | null {
  const address = decode(client);
  return address === null || address.family === "unix" ? null : sourceOf(address.host);
}

/** The sockaddr of a datagram target. */
function socketAddress(target: Target): Uint8Array {
  switch (target.kind) {
    case "tcp":
      return encodeIP(target.host, target.port);
    case "unix":
      return encodeUnix(target.path, false);
    case "abstract":
      return encodeUnix(target.name, true);
    case "vsock":
      throw new RangeError("datagram sockets cannot be forwarded to vsock");
  }
}

/**
 * A map key for the `length` bytes of `bytes` from `at`, and nothing after them: a Unix address
 * may be of odd length, and what follows it in the buffer is left from an earlier address.
 */
function keyOf(bytes: Uint8Array, length: number, at = 0): string {
  let key = String.fromCharCode(length);
  const end = at + length;
  for (let i = at; i + 1 < end; i += 2) key += String.fromCharCode(bytes[i] | (bytes[i + 1] << 8));
  if (length % 2 === 1) key += String.fromCharCode(bytes[end - 1]);
  return key;
}

/**
 * Where the address a client sent to is in the ancillary data of its datagram (the IP_PKTINFO
 * or IPV6_PKTINFO message), or -1.
 */
function destinationIn(control: Uint8Array, length: number): number {
  for (let at = 0; at + 16 <= length;) {
    // cmsg_len is a size_t: its high half is 0 for any message that fits the buffer.
    const size = control[at] | (control[at + 1] << 8);
    const level = control[at + 8];
    const type = control[at + 12];
    if (level === IPPROTO_IP && type === IP_PKTINFO) return at + 24;
    if (level === IPPROTO_IPV6 && type === IPV6_PKTINFO) return at + 16;
    if (size < 16) break;
    at += (size + 7) & ~7;
  }
  return -1;
}

/** The control message for `sendmmsg` that sends from `destination` (as received). */
function replyControl(family: number, destination: Uint8Array): Uint8Array {
  if (family === AF_INET) {
    // struct in_pktinfo { ifindex = 0; ipi_spec_dst = destination; ipi_addr }
    const control = new Uint8Array(32);
    const view = new DataView(control.buffer);
    view.setBigUint64(0, 28n, true);
    view.setInt32(8, IPPROTO_IP, true);
    view.setInt32(12, IP_PKTINFO, true);
    control.set(destination, 20);
    return control;
  }
  // struct in6_pktinfo { addr = destination (IPv4-mapped for an IPv4 client); ifindex = 0 }
  const control = new Uint8Array(40);
  const view = new DataView(control.buffer);
  view.setBigUint64(0, 36n, true);
  view.setInt32(8, IPPROTO_IPV6, true);
  view.setInt32(12, IPV6_PKTINFO, true);
  control.set(destination, 16);
  return control;
}

/**
 * The datagram relay: serves passed datagram sockets (`ListenDatagram=`, UDP or Unix).
 *
 * Each client address of each listener gets a session: a socket of its own, connected to the
 * target, so the backend sees one stable peer per client (as nginx's UDP proxy and socat do).
 * Every datagram from the client goes out on it as one datagram, in order; every datagram the
 * backend sends back goes to the client from the passed socket itself, from the very address
 * the client sent to (IP_PKTINFO on a wildcard listener), since DNS resolvers and most UDP
 * clients drop replies from anywhere else. A session ends after `idleTimeoutMs` without a
 * datagram from its client: what the backend sends never keeps it open, and
 * `repliesPerDatagram` bounds it. Nothing is truncated: a datagram too large for the buffer is
 * dropped and counted. What the kernel could not deliver (an ICMP error from the target, a reply
 * a Unix client's socket refuses) is counted apart and logged (`relaylog.ts`).
 *
 * Under attack: the sessions are capped (`sessionsMax`), and at the cap a new client may end the
 * oldest session whose client sent one datagram only ({@link EVICT_IDLE_MS}), so a flood of
 * one-datagram sources cannot lock new clients out; a datagram from the target's own address is
 * dropped, so no loop runs through the target; name lookups are shared and bounded
 * (`resolve.ts`), so a stalled DNS server cannot starve the wait on the sockets.
 * @module
 */
import { type Resolver, systemResolver } from "./resolve.ts";
import { MessageBatch } from "./batch.ts";
import { waitAtMost } from "../service/deadline.ts";
import { type Cancel, every } from "../service/timer.ts";
import type { Libc } from "./libc.ts";
import { Admission, type Refusal, sourceOf } from "../service/admission.ts";
import {
  BACKEND_FAULTS,
  backendFault,
  CLIENT_FAULTS,
  PERMISSION_FAULTS,
  RelayLog,
  replyFault,
} from "./relaylog.ts";
import { type Reclaimer, REST_MS } from "../service/reclaim.ts";
import type { Transparent } from "./transparent.ts";
import { EPOLLERR, EPOLLIN, type Poller } from "./poller.ts";
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

/**
 * At `--connections-max`, a new client ends the session that has been idle longest among those
 * whose client sent one datagram only, if that was at least this long ago (see
 * {@link Relay}'s doc on floods).
 */
export const EVICT_IDLE_MS = 1000;

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
  /** Of those, ended early at `--connections-max` to admit a new client. */
  evicted: number;
  /** Datagrams from clients sent on to backends. */
  forwarded: number;
  /** Datagrams from backends sent back to clients. */
  returned: number;
  /**
   * Datagrams the kernel could not deliver: to the target (an ICMP error such as port
   * unreachable, a Unix target gone), and replies to clients (a Unix client's socket the
   * proxy may not write to, or gone).
   */
  undeliverable: { target: number; client: number };
  /**
   * Datagrams dropped: too large, over a session limit, over `--replies-per-datagram`, sent by
   * the target itself, a full queue or socket buffer, a reply to a nameless Unix client.
   */
  dropped: number;
  /** Of those, from new clients over `--connections-max` and over `--connections-per-source`. */
  refused: Record<Refusal, number>;
  /** Of those, replies over `--replies-per-datagram`. */
  excessReplies: number;
  /** Of those, from the target's own address to a listener (a loop, or a spoofed source). */
  fromTarget: number;
}

/** What the relay needs to know. */
export interface RelayOptions {
  /** The most sessions open at once. */
  readonly sessionsMax: number;
  /** The most sessions open at once from one source (see `admission.ts`), or null. */
  readonly sessionsPerSource: number | null;
  /** A session whose client has sent nothing for this long ends. */
  readonly idleTimeoutMs: number;
  /** Replies a session takes per datagram from its client, at most; null: no bound. */
  readonly repliesPerDatagram?: number | null;
  /** Called whenever the number of open sessions changes. */
  readonly onChange: () => void;
  /**
   * Called when datagrams have changed the counts, at most once per batch of events handled
   * (the caller coalesces: STATUS= stays current while traffic flows, and idle says nothing).
   */
  readonly onCounts?: () => void;
  /** Gives memory back once no session (and no connection) is open (see `reclaim.ts`). */
  readonly reclaimer?: Reclaimer;
  /** Looks target names up (default: the system's, shared with the stream side). */
  readonly resolve?: Resolver;
  /** With `--transparent`: each session's socket carries its client's address. */
  readonly transparent?: Transparent | null;
}

/** "1 session", "4 sessions". */
function sessions(count: number): string {
  return `${count} session${count === 1 ? "" : "s"}`;
}

/** A passed datagram socket being served. */
class DatagramListener {
  token = 0;
  /** Replies to its clients, sent together (`sendmmsg`) once the events at hand are handled. */
  readonly replies: MessageBatch;
  /** The target's address when it needs no lookup, shared by the sessions. */
  readonly address: Uint8Array | null;
  /** That address as {@link endpointOf} gives it, or null. */
  readonly endpoint: string | null;

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
    this.endpoint = this.address === null ? null : endpointOf(this.address);
  }
}

/** A slot that holds the largest datagram a socket of `family` takes, and one byte more. */
function slotFor(family: number): number {
  return (family === AF_UNIX ? UNIX_DATAGRAM_MAX : IP_DATAGRAM_MAX) + 1;
}

/** One client of one listener, and its socket to the target. */
class Session {
  fd = -1;
  token = 0;
  /** The backend's address, once known; and whether the socket is connected to it. */
  address: Uint8Array | null = null;
  connected = false;
  /** Whether the target is a Unix socket (which reports a fault for the datagram at hand). */
  unix = false;
  /** Datagrams waiting for the target's name to resolve; null once it has. */
  pending: Uint8Array[] | null = null;
  /** When the client last sent a datagram: its idle time runs from there. */
  lastActive: number;
  /** When the backend last sent one (a drain waits for a quiet backend). */
  lastReply = -Infinity;
  /** Datagrams from the client (of interest while it is one). */
  fromClient = 1;
  /**
   * Datagrams sent to the backend (less those an ICMP error later said it did not get), and
   * received from it.
   */
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
  /**
   * The sessions whose client has sent one datagram only, oldest first: at the limit, the
   * first may be ended for a new client.
   */
  readonly #oneShots = new Set<Session>();
  readonly #log = new RelayLog();
  readonly #counts: RelayCounts = {
    sessions: 0,
    evicted: 0,
    forwarded: 0,
    returned: 0,
    undeliverable: { target: 0, client: 0 },
    dropped: 0,
    refused: { full: 0, source: 0 },
    excessReplies: 0,
    fromTarget: 0,
  };
  /** See {@link RelayOptions.repliesPerDatagram}: Infinity for none. */
  readonly #repliesPer: number;
  #now = performance.now();
  /** The datagram counts as last told through {@link RelayOptions.onCounts}. */
  #told: number[] = [];
  #sweeper: Cancel | null = null;
  /** Datagrams handled, as of the last sweep; and since when that has not changed, or null. */
  #handled = 0;
  #quietSince: number | null = null;
  #draining: (() => void) | null = null;

  /** Serves datagram sockets through `libc`, watched by the engine's `poller`. */
  constructor(libc: Libc, poller: Poller, options: RelayOptions) {
    this.#libc = libc;
    this.#options = options;
    this.#poller = poller;
    poller.onBatchEnd(() => {
      this.#sendReplies();
      this.#tellCounts();
    });
    this.#admission = new Admission({
      max: options.sessionsMax,
      perSource: options.sessionsPerSource,
      whenFull: "refuse",
    });
    this.#repliesPer = options.repliesPerDatagram ?? Infinity;
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
      listener.token = this.#poller.add(listener.fd, EPOLLIN, {
        ready: () => this.#readClients(listener),
      });
      if (listener.token === 0) {
        throw new Error(`cannot watch fd ${listener.fd} (errno ${this.#libc.errno()})`);
      }
    }
  }

  /**
   * Stops reading clients; what they send meanwhile stays queued in the passed sockets. The
   * counts of log lines held back are written now.
   */
  stopReading(): void {
    this.#log.flush();
    for (const listener of this.#listeners) {
      if (listener.token !== 0) this.#poller.remove(listener.fd, listener.token);
      listener.token = 0;
    }
  }

  /**
   * After {@link stopReading}: lets each session take its backend's replies until every
   * datagram it sent has had one, or its backend has been silent for {@link DRAIN_QUIET_MS}, for
   * up to `timeoutMs` in all; then closes the rest.
   * @returns how many sessions were still open at the timeout.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.#sweep(true);
    if (this.#sessions.size > 0) {
      const done = new Promise<void>((resolve) => this.#draining = resolve);
      this.#sweeper?.();
      this.#sweeper = every(100, () => this.#sweep(true));
      await waitAtMost(done, timeoutMs);
    }
    const left = this.#sessions.size;
    for (const session of [...this.#sessions.values()]) this.#close(session);
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
      if (found.fromClient++ === 1) this.#oneShots.delete(found);
      return found;
    }
    const client = named ? name.slice(0, nameLength) : null;
    if (client !== null && this.#fromTarget(listener, client)) return null;
    const source = client === null || listener.family === AF_UNIX ? null : sourceOfAddress(client);
    let decision = this.#admission.request(source, null);
    if (decision === "full" && this.#evictOneShot()) {
      decision = this.#admission.request(source, null);
    }
    if (decision !== "admitted") {
      this.#counts.dropped++;
      this.#counts.refused[decision as Refusal]++;
      this.#refused(decision as Refusal, client!, source);
      return null;
    }
    // Each session has its own: kept per local address, they would outlive the sessions (a
    // wildcard IPv4 listener answers on all of 127/8 for local users).
    const reply = destination < 0 ? null : replyControl(
      listener.family,
      control.subarray(destination, destination + destinationLength),
    );
    const session = new Session(key, source, listener, client, reply, this.#now);
    this.#sessions.set(key, session);
    this.#oneShots.add(session);
    this.#counts.sessions++;
    this.#sweepWhileOpen();
    this.#options.reclaimer?.busy();
    this.#options.onChange();
    this.#open(session);
    return session;
  }

  /**
   * A datagram from the target's own address: forwarding it would send the target its own
   * datagram, and its answer back to it through the listener, without end (a forwarding loop,
   * or a forged source address that starts one). It is dropped.
   */
  #fromTarget(listener: DatagramListener, client: Uint8Array): boolean {
    if (listener.endpoint === null || endpointOf(client) !== listener.endpoint) return false;
    this.#counts.dropped++;
    this.#counts.fromTarget++;
    this.#log.fromTarget.hit(() =>
      `Dropping a datagram from ${listener.endpoint}, the target itself: forwarding it would ` +
      "loop (a forwarding loop, or a forged source address)"
    );
    return true;
  }

  /**
   * At the limit: ends the session idle longest among those whose client sent one datagram
   * only, if that was {@link EVICT_IDLE_MS} ago or more (as conntrack drops unassured flows
   * first). A session whose client sent more is never ended for a newcomer.
   * @returns whether a session was ended.
   */
  #evictOneShot(): boolean {
    const oldest: Session | undefined = this.#oneShots.values().next().value;
    if (oldest === undefined || this.#now - oldest.lastActive < EVICT_IDLE_MS) return false;
    this.#counts.evicted++;
    this.#log.evicted.hit(() =>
      `Hit connection limit, ending the session of ${this.#clientName(oldest)}, idle for ` +
      `${((this.#now - oldest.lastActive) / 1000).toFixed(1)}s after its one datagram, for a ` +
      `new client (${this.#admission.limits.max} sessions open)`
    );
    this.#close(oldest);
    return true;
  }

  #clientName(session: Session): string {
    return formatSocketAddress(session.client === null ? null : decode(session.client));
  }

  #refused(why: Refusal, client: Uint8Array, source: string | null): void {
    const { max, perSource } = this.#admission.limits;
    this.#log[why].hit(() =>
      why === "full"
        ? `Hit connection limit, dropping a datagram from a new client (${sessions(max)} open)`
        : `Hit per-source connection limit, dropping a datagram from ` +
          `${formatSocketAddress(decode(client))} (${sessions(perSource!)} open from ${source})`
    );
  }

  /**
   * Opens the session's socket to the target: at once for an address, after a name lookup. A
   * session that ended during the lookup (`--idle-timeout`, a drain) is left ended: another
   * session of the same client may have taken its key meanwhile.
   */
  #open(session: Session): void {
    const { target, address } = session.listener;
    if (address !== null || target.kind !== "tcp") return this.#connect(session, address!);
    session.pending = [];
    const resolve = this.#options.resolve ?? systemResolver;
    resolve(target.host).then((addresses) => {
      if (!this.#isOpen(session)) return;
      if (addresses.length === 0) {
        return this.#unresolved(session, `${target.host} has no addresses`);
      }
      this.#connect(session, encodeIP(addresses[0], target.port));
      const pending = session.pending ?? [];
      session.pending = null;
      for (const datagram of pending) this.#toBackend(session, datagram, datagram.length);
      this.#tellCounts();
    }, (e) => {
      if (!this.#isOpen(session)) return;
      this.#unresolved(session, `cannot resolve ${target.host} (${(e as Error).message})`);
    });
  }

  #isOpen(session: Session): boolean {
    return this.#sessions.get(session.key) === session;
  }

  #unresolved(session: Session, why: string): void {
    this.#failed(session, why);
    this.#close(session);
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
    const uncarried = this.#options.transparent?.bind(session.fd, family, session.client) ?? null;
    if (uncarried !== null) {
      this.#failed(session, uncarried);
      return this.#close(session);
    }
    session.token = this.#poller.add(
      session.fd,
      EPOLLIN,
      { ready: (events) => this.#readBackend(session, events) },
    );
    session.address = address;
    session.unix = family === AF_UNIX;
  }

  #failed(session: Session, why: string): void {
    this.#log.failures.hit(() =>
      `Failed to forward datagrams to ${formatTarget(session.listener.target)} for ` +
      `${this.#clientName(session)}: ${why}`
    );
  }

  /**
   * Sends the first `n` bytes of `data` to the session's backend. A fault that a UDP socket
   * reports is an ICMP error about an earlier datagram: this one still goes, so a backend that
   * has come up is served at once. A Unix socket's is about this one: its backend's socket is
   * gone, and it is connected again, to the one bound there now if there is one.
   */
  #toBackend(session: Session, data: Uint8Array, n: number): void {
    if (session.pending !== null) {
      if (session.pending.length < MAX_PENDING_DATAGRAMS) {
        session.pending.push(data.slice(0, n));
      } else this.#counts.dropped++;
      return;
    }
    if (session.fd < 0) return void this.#counts.dropped++;
    let result = this.#send(session, data, n);
    if (result < 0 && BACKEND_FAULTS.has(-result) && session.connected) {
      const pending = -result;
      if (session.unix) session.connected = false;
      result = this.#send(session, data, n);
      // A pending error is reported once: one that comes again (no route) is this datagram's.
      const again = result < 0 && BACKEND_FAULTS.has(-result);
      if (!session.unix && !again) this.#undeliverable(session, pending, true);
    }
    if (result >= 0) {
      session.sent++;
      this.#counts.forwarded++;
    } else if (BACKEND_FAULTS.has(-result) || PERMISSION_FAULTS.has(-result)) {
      this.#undeliverable(session, -result, false);
    } else this.#counts.dropped++; // A full socket buffer (EAGAIN, ENOBUFS).
  }

  /** Connects the session's socket if it is not, and sends: the bytes sent, or -errno. */
  #send(session: Session, data: Uint8Array, n: number): number {
    const call = this.#libc.call;
    if (!session.connected) {
      const address = session.address!;
      session.connected = call.connect(session.fd, address, address.length) === 0;
      if (!session.connected) return -this.#libc.errno();
    }
    const sent = Number(call.send(session.fd, data, BigInt(n), MSG_DONTWAIT));
    return sent < 0 ? -this.#libc.errno() : sent;
  }

  /**
   * The backend did not get a datagram; `earlier` for one sent before (an ICMP error reported
   * later), which is then counted as undeliverable instead of forwarded. The kernel keeps one
   * pending error per socket, so errors that come before one is read count as one.
   */
  #undeliverable(session: Session, errno: number, earlier: boolean): void {
    if (earlier && session.sent > 0) {
      session.sent--;
      this.#counts.forwarded--;
    }
    this.#counts.undeliverable.target++;
    this.#log.unreachable.hit(() =>
      `Failed to deliver a datagram to ${formatTarget(session.listener.target)} for ` +
      `${this.#clientName(session)}: ${backendFault(errno)}`
    );
  }

  /**
   * Takes the backend's datagrams straight into the listener's reply batch, as many as are
   * queued with one `recvmmsg` (fewer than asked for: the queue is empty, no call to find out).
   */
  #readBackend(session: Session, events: number): void {
    this.#now = performance.now();
    const replies = session.listener.replies;
    if ((events & EPOLLERR) !== 0) {
      const error = this.#takeError(session);
      if (BACKEND_FAULTS.has(error)) this.#undeliverable(session, error, true);
    }
    for (let retried = false;;) {
      if (replies.count === replies.size) this.#sendRepliesOf(session.listener);
      const first = replies.count;
      const room = replies.size - first;
      replies.prepareReceiveFrom(first);
      const got = this.#libc.call.recvmmsg(session.fd, replies.from(first), room, MSG_DONTWAIT, 0n);
      if (got < 0) {
        // An ICMP error the kernel kept: counted, and what is queued behind it is still read.
        const errno = this.#libc.errno();
        if (!retried && BACKEND_FAULTS.has(errno)) {
          this.#undeliverable(session, errno, true);
          retried = true;
          continue;
        }
        break;
      }
      this.#takeReplies(session, first, got);
      if (got < room) break;
    }
    if (this.#hadReplies(session)) this.#close(session);
  }

  /**
   * Whether the session has had every reply it may take (`--replies-per-datagram`), or, in a
   * drain, one per datagram sent: then it ends.
   */
  #hadReplies(session: Session): boolean {
    const per = this.#draining !== null ? 1 : this.#repliesPer;
    return session.sent > 0 && session.pending === null && session.replied >= session.sent * per;
  }

  /**
   * Readies the `got` datagrams received from slot `first` on to go to the session's client.
   * They do not keep the session open: its idle time runs on its client's datagrams only.
   */
  #takeReplies(session: Session, first: number, got: number): void {
    const replies = session.listener.replies;
    const allowed = session.sent * this.#repliesPer;
    session.lastReply = this.#now;
    let next = first;
    for (let i = first; i < first + got; i++) {
      if (session.replied >= allowed) {
        this.#counts.dropped++;
        this.#counts.excessReplies++;
        continue;
      }
      session.replied++;
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

  /** Reads and clears the error pending on the session's socket (SO_ERROR): errno, or 0. */
  #takeError(session: Session): number {
    const value = new Uint8Array(4);
    const length = new Uint8Array([4, 0, 0, 0]);
    this.#libc.call.getsockopt(session.fd, SOL_SOCKET, SO_ERROR, value, length);
    return new DataView(value.buffer).getInt32(0, true);
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
      // buffer, a client that cannot be reached): that one is counted, and the rest go on.
      if (sent < 0) {
        this.#replyFailed(listener, first, this.#libc.errno());
        first++;
      } else {
        this.#counts.returned += sent;
        first += sent;
      }
    }
    replies.count = 0;
  }

  /**
   * The reply in slot `i` of the listener's batch could not go: undeliverable when the kernel
   * refused it to that client (a Unix client's socket the proxy may not write to, or gone),
   * else dropped (the client's queue or our socket buffer is full).
   */
  #replyFailed(listener: DatagramListener, i: number, errno: number): void {
    if (!CLIENT_FAULTS.has(errno)) return void this.#counts.dropped++;
    this.#counts.undeliverable.client++;
    const replies = listener.replies;
    this.#log.unanswerable.hit(() => {
      const client = formatSocketAddress(decode(replies.name(i), replies.nameLength(i)));
      const unix = listener.family === AF_UNIX;
      return `Failed to deliver a reply from ${formatTarget(listener.target)} to ${client}: ` +
        replyFault(errno, client, unix, this.#libc.call.geteuid());
    });
  }

  /** Tells {@link RelayOptions.onCounts} when the datagram counts have changed. */
  #tellCounts(): void {
    const { forwarded, returned, dropped, undeliverable: { target, client } } = this.#counts;
    const told = this.#told;
    if (
      told[0] === forwarded && told[1] === returned && told[2] === dropped && told[3] === target &&
      told[4] === client
    ) return;
    this.#told = [forwarded, returned, dropped, target, client];
    this.#options.onCounts?.();
  }

  #close(session: Session): void {
    if (!this.#isOpen(session)) return;
    this.#sessions.delete(session.key);
    if (session.sent > 0 && session.replied === 0 && session.address !== null) {
      this.#options.transparent?.noReply(session.client, session.address);
    }
    this.#oneShots.delete(session);
    // Datagrams still waiting for the target's name are lost with the session.
    this.#counts.dropped += session.pending?.length ?? 0;
    session.pending = null;
    if (session.token !== 0) this.#poller.forget(session.token);
    if (session.fd >= 0) this.#libc.call.close(session.fd);
    session.fd = -1;
    this.#admission.release(session.source);
    if (this.#sessions.size === 0) {
      this.#sweeper?.();
      this.#sweeper = null;
      this.#draining?.();
      this.#options.reclaimer?.idle();
    }
    this.#options.onChange();
  }

  /** Ends silent sessions: one timer for all of them, running only while any is open. */
  #sweepWhileOpen(): void {
    if (this.#sweeper !== null || this.#draining !== null) return;
    const period = Math.max(50, Math.min(1000, this.#options.idleTimeoutMs / 8));
    if (!Number.isFinite(period)) return;
    this.#sweeper = every(period, () => this.#sweep(false));
  }

  #sweep(draining: boolean): void {
    const now = performance.now();
    const quiet = draining ? DRAIN_QUIET_MS : this.#options.idleTimeoutMs;
    for (const session of [...this.#sessions.values()]) {
      const answered = draining && session.replied >= session.sent && session.pending === null;
      // In a drain, the backend's silence counts too: it may still be answering.
      const last = draining ? Math.max(session.lastActive, session.lastReply) : session.lastActive;
      if (answered || now - last >= quiet) this.#close(session);
    }
    if (!draining && this.#sessions.size > 0) this.#restWhenQuiet(now);
  }

  /** Sessions open, but no datagram for {@link REST_MS}: the reclaimer is told, once a spell. */
  #restWhenQuiet(now: number): void {
    const { forwarded, returned, dropped, undeliverable } = this.#counts;
    const handled = forwarded + returned + dropped + undeliverable.target + undeliverable.client;
    if (handled !== this.#handled) {
      this.#handled = handled;
      this.#quietSince = now;
    } else if (this.#quietSince !== null && now - this.#quietSince >= REST_MS) {
      this.#quietSince = null;
      this.#options.reclaimer?.rested();
    }
  }
}

/**
 * The relay's sessions and datagrams for STATUS= and the stop line: "2 session(s) open, 9
 * served, datagrams 40 forwarded, 38 returned, 2 dropped (2 over --connections-max), 1
 * undeliverable (1 to the target)"; the clauses in parentheses, and the undeliverable one, only
 * when they count something.
 */
export function describeRelay(relay: Pick<Relay, "active" | "counts">): string {
  const { sessions, evicted, forwarded, returned, dropped, refused } = relay.counts;
  const { excessReplies, fromTarget, undeliverable: { target, client } } = relay.counts;
  const reasons = [
    ...(refused.full > 0 ? [`${refused.full} over --connections-max`] : []),
    ...(refused.source > 0 ? [`${refused.source} over --connections-per-source`] : []),
    ...(excessReplies > 0 ? [`${excessReplies} over --replies-per-datagram`] : []),
    ...(fromTarget > 0 ? [`${fromTarget} from the target itself`] : []),
  ];
  const to = [
    ...(target > 0 ? [`${target} to the target`] : []),
    ...(client > 0 ? [`${client} to clients`] : []),
  ];
  return `${relay.active} session(s) open, ${sessions} served` +
    (evicted > 0 ? ` (${evicted} ended early for new clients)` : "") +
    `, datagrams ${forwarded} forwarded, ${returned} returned, ${dropped} dropped` +
    (reasons.length > 0 ? ` (${reasons.join(", ")})` : "") +
    (to.length > 0 ? `, ${target + client} undeliverable (${to.join(", ")})` : "");
}

/**
 * A socket address as "HOST:PORT" (an IPv4 address in IPv6 form as its IPv4 one) or a Unix
 * path, to compare a client with the target.
 */
function endpointOf(address: Uint8Array): string | null {
  const decoded = decode(address);
  if (decoded === null || decoded.family === "unix") return decoded?.path ?? null;
  return `${decoded.host.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "")}:${decoded.port}`;
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

/**
 * `--transparent`: each backend socket carries its client's own address, so that a backend that
 * cannot read PROXY headers (sshd, a DNS server, a syslog receiver, any UDP service) sees the
 * client, not the proxy.
 *
 * The engine creates each backend socket itself: between `socket()` and `connect()` it sets
 * `IP_TRANSPARENT` (`IPV6_TRANSPARENT`) and binds the socket to the client's address
 * ({@link Transparent.bind}). The kernel then lets the socket use an address that is not the
 * host's, and takes the backend's replies for it, if, and only if, they are routed back into this
 * host: in the backend's network namespace `ip route add local default dev lo` (see the man page,
 * TRANSPARENT). Without that route nothing comes back, and the engine calls
 * {@link Transparent.noReply}: the journal then says once what is wrong and which route fixes it.
 *
 * Never a silent fallback: a client whose address cannot be carried (a Unix client, an IPv6
 * client to an IPv4 backend) is not forwarded from the proxy's address instead; it is refused,
 * with a log line that says why. Without the capability (CAP_NET_ADMIN, or CAP_NET_RAW) the
 * proxy does not start ({@link capabilityProblem}).
 *
 * The client's port is not kept, for TCP or UDP: the kernel picks one. A client's port below 1024
 * would need CAP_NET_BIND_SERVICE too, and two sessions of one client address and port (to two
 * listeners, or to two addresses of a wildcard listener) forwarded to one backend would be the
 * same 4-tuple, whose replies reach only one of them. What backends key on, ACLs, rate limits,
 * logs, is the address.
 * @module
 */
import type { SocketKind } from "./engine.ts";
import type { Libc } from "./libc.ts";
import type { ListenAddress } from "../cli/address.ts";
import { formatListenAddress } from "../cli/address.ts";
import { formatTarget, type TargetSpec } from "../cli/target.ts";
import { log } from "../service/log.ts";
import { AF_INET, AF_INET6, AF_UNIX, decode, familyOf, formatSocketAddress } from "./sockaddr.ts";

/** `setsockopt` levels and options (Linux numbers). */
const SOL_SOCKET = 1;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const SOL_IPV6 = 41;
const IPV6_TRANSPARENT = 75;
const SO_BINDTODEVICE = 25;

const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0x80000;

/** The errno values told apart here. */
const EPERM = 1;
const EAFNOSUPPORT = 97;
/** What `connect` says when there is no route (EINVAL: a loopback source on another one). */
const NO_ROUTE: readonly number[] = [22, 101, 113];

/** Names for the errno values a transparent bind or the route check can meet. */
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  13: "EACCES",
  22: "EINVAL",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  101: "ENETUNREACH",
  113: "EHOSTUNREACH",
};

/** "EPERM" (or "errno 71" for one without a name here). */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/**
 * Before anything is served: what `--transparent` cannot do with these targets and `--listen`
 * addresses (a Unix, abstract or vsock target has no IP address to bind; a Unix listener's
 * clients have none to carry). Pure.
 * @returns null, or the message to fail the start with.
 */
export function planProblem(
  targets: readonly TargetSpec[],
  listen: readonly ListenAddress[],
): string | null {
  const notIP = targets.find((target) => target.kind !== "tcp" && target.kind !== "same-port");
  if (notIP !== undefined) {
    return `--transparent cannot carry the client's address to ${formatTarget(notIP)}: only ` +
      "an IP backend can be connected to from it. Give an IP target (HOST:PORT), or drop " +
      "--transparent.";
  }
  const unix = listen.find((address) => address.kind !== "tcp");
  if (unix !== undefined) {
    return `--transparent cannot serve --listen=${formatListenAddress(unix)}: its clients have ` +
      "no IP address to carry.";
  }
  return null;
}

/**
 * Before anything is served: what `--transparent` cannot do with the passed socket `fd` (named
 * `name`) of `kind`. The clients of a Unix (or vsock) socket have no IP address to carry: the
 * socket is refused, never served from the proxy's own address instead.
 * @returns null, or the message to fail the start with.
 */
export function passedSocketProblem(kind: SocketKind, fd: number, name: string): string | null {
  const which = `the socket fd ${fd} ("${name}")`;
  if (kind.type === "other") return null; // Refused as such by the sorting of sockets.
  if (kind.family !== AF_INET && kind.family !== AF_INET6) {
    const what = kind.family === AF_UNIX ? "a Unix socket" : `of address family ${kind.family}`;
    return `--transparent cannot serve ${which}: it is ${what}, and its clients have no IP ` +
      "address to carry. Serve it from a unit without --transparent.";
  }
  return null;
}

/** Where a client's address cannot be carried to a backend socket: what and why, for a log line. */
export interface Uncarried {
  readonly problem: string;
}

/** The IPv4 address in an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`), or null. */
function mappedIPv4(ip6: Uint8Array): Uint8Array | null {
  const mapped = ip6.subarray(0, 10).every((b) => b === 0) && ip6[10] === 0xff &&
    ip6[11] === 0xff;
  return mapped ? ip6.subarray(12, 16) : null;
}

function sockaddrIn(ip: Uint8Array, port: Uint8Array): Uint8Array {
  const address = new Uint8Array(16);
  address[0] = AF_INET;
  address.set(port, 2);
  address.set(ip, 4);
  return address;
}

/**
 * The address to bind a backend socket of `family` (AF_INET or AF_INET6) to, so that the backend
 * sees the client whose address is `client` (as `accept4` or `recvmmsg` gave it, of its exact
 * length): its IP address, with port 0 (the kernel picks one) unless `keepPort`. An IPv4-mapped
 * client of a dual-stack listener becomes its IPv4 form for an AF_INET socket. Pure.
 *
 * @returns the sockaddr, or why it cannot be carried (a Unix client, an IPv6 client to an IPv4
 * backend or the reverse, a family of no IP): the client must then not be forwarded at all.
 */
export function transparentSource(
  client: Uint8Array,
  family: number,
  keepPort: boolean,
): Uint8Array | Uncarried {
  const clientFamily = familyOf(client);
  if (clientFamily === AF_UNIX) {
    return { problem: "a client of a Unix socket has no IP address to carry (--transparent)" };
  }
  let ip4: Uint8Array | null = null;
  let ip6: Uint8Array | null = null;
  if (clientFamily === AF_INET && client.length >= 16) ip4 = client.subarray(4, 8);
  else if (clientFamily === AF_INET6 && client.length >= 28) {
    ip6 = client.subarray(8, 24);
    ip4 = mappedIPv4(ip6);
  } else {
    return {
      problem: `--transparent cannot carry a client address of family ${clientFamily} ` +
        `(${client.length} bytes)`,
    };
  }
  const port = keepPort ? client.subarray(2, 4) : new Uint8Array(2);
  if (family === AF_INET) {
    if (ip4 !== null) return sockaddrIn(ip4, port);
    return {
      problem: "--transparent cannot carry an IPv6 client to an IPv4 backend; give the IPv6 " +
        "clients' socket an IPv6 target of its own (--target=NAME=[ADDRESS]:PORT)",
    };
  }
  if (family === AF_INET6) {
    if (ip4 === null) {
      const address = new Uint8Array(28);
      address[0] = AF_INET6;
      address.set(port, 2);
      address.set(ip6!, 8);
      // The scope of a link-local client, as it came: flow information is not carried.
      address.set(client.subarray(24, 28), 24);
      return address;
    }
    return {
      problem: "--transparent cannot carry an IPv4 client to an IPv6 backend; give the IPv4 " +
        "clients' socket an IPv4 target of its own (--target=NAME=ADDRESS:PORT)",
    };
  }
  return { problem: `--transparent cannot bind a socket of address family ${family}` };
}

/**
 * Readies a new backend socket `fd` of `family` to carry a client's address: sets
 * `IP_TRANSPARENT` (AF_INET) or `IPV6_TRANSPARENT` (AF_INET6), then binds it to `source` (from
 * {@link transparentSource}). Call it between `socket()` and `connect()`.
 * @returns 0, or the errno of the call that failed (EPERM: no CAP_NET_ADMIN).
 */
export function bindTransparent(
  libc: Libc,
  fd: number,
  family: number,
  source: Uint8Array,
): number {
  const on = new Uint8Array([1, 0, 0, 0]);
  const [level, option] = family === AF_INET6
    ? [SOL_IPV6, IPV6_TRANSPARENT]
    : [SOL_IP, IP_TRANSPARENT];
  if (libc.call.setsockopt(fd, level, option, on, 4) < 0) return libc.errno();
  return libc.call.bind(fd, source, source.length) < 0 ? libc.errno() : 0;
}

/** Addresses of no host (RFC 5737, RFC 3849), for the start-up probe. */
const PROBE_SOURCES: ReadonlyArray<readonly [number, Uint8Array]> = [
  [AF_INET, sockaddrIn(new Uint8Array([192, 0, 2, 1]), new Uint8Array(2))],
  [
    AF_INET6,
    (() => {
      const address = new Uint8Array(28);
      address[0] = AF_INET6;
      address.set([0x20, 0x01, 0x0d, 0xb8], 8);
      address[23] = 1;
      return address;
    })(),
  ],
];

/**
 * At start-up: can this process bind a socket to an address that is not its host's, as every
 * backend socket will be? A datagram socket of the first family it may open (RestrictAddressFamilies=
 * may allow one only) is bound to a documentation address with {@link bindTransparent}.
 * @returns null, or the message to fail the start with (the capability is missing).
 */
export function capabilityProblem(libc: Libc): string | null {
  for (const [family, source] of PROBE_SOURCES) {
    const fd = libc.call.socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      if (libc.errno() === EAFNOSUPPORT) continue;
      return `--transparent: cannot open a socket to check the capability (${
        errnoName(libc.errno())
      }).`;
    }
    const errno = bindTransparent(libc, fd, family, source);
    libc.call.close(fd);
    if (errno === 0) return null;
    const option = family === AF_INET ? "IP_TRANSPARENT" : "IPV6_TRANSPARENT";
    if (errno === EPERM) {
      return `--transparent needs the capability CAP_NET_ADMIN, to bind each backend socket to ` +
        `its client's address (setsockopt ${option}: Operation not permitted). Give the unit ` +
        "AmbientCapabilities=CAP_NET_ADMIN (with CAP_NET_ADMIN in CapabilityBoundingSet=, and " +
        "without PrivateUsers=yes, under which the capability does not reach the network " +
        "namespace), best in the backend's private network namespace (JoinsNamespaceOf=): see " +
        "socket-proxyd(8), TRANSPARENT.";
    }
    return `--transparent: cannot bind a socket to an address that is not this host's ` +
      `(${option}, then bind: ${errnoName(errno)}).`;
  }
  return "--transparent: this process may open no IPv4 or IPv6 socket (RestrictAddressFamilies=?).";
}

/** Whether a sockaddr is a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
function isLoopback(address: Uint8Array): boolean {
  const family = familyOf(address);
  if (family === AF_INET) return address[4] === 127;
  if (family !== AF_INET6) return false;
  const ip6 = address.subarray(8, 24);
  const ip4 = mappedIPv4(ip6);
  if (ip4 !== null) return ip4[0] === 127;
  return ip6.subarray(0, 15).every((b) => b === 0) && ip6[15] === 1;
}

/** `address` with its port set to `port`. */
function withPort(address: Uint8Array, port: number): Uint8Array {
  const copy = address.slice();
  new DataView(copy.buffer).setUint16(2, port, false);
  return copy;
}

/**
 * Does the kernel route what the backend at `backend` sends to `source` (a client's address, as
 * bound by {@link Transparent.bind}) back into this host, where the proxy's transparent socket
 * takes it? Asked without sending anything: a socket bound to the backend's address is connected
 * to the client's. Only a loopback backend can be asked: the kernel refuses a loopback source
 * (IPv4) on any route but a local one, and a socket bound to `lo` (IPv6) finds only local routes.
 * @returns "local" (replies come back), "missing" (no such route) or "unknown" (not a loopback
 * backend, or the question could not be put).
 */
export function returnRoute(
  libc: Libc,
  source: Uint8Array,
  backend: Uint8Array,
): "local" | "missing" | "unknown" {
  if (!isLoopback(backend) || familyOf(source) !== familyOf(backend)) return "unknown";
  const family = familyOf(backend);
  const fd = libc.call.socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "unknown";
  try {
    const lo = new TextEncoder().encode("lo\0");
    if (family === AF_INET6 && libc.call.setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, lo, 3) < 0) {
      return "unknown";
    }
    const from = withPort(backend, 0);
    if (libc.call.bind(fd, from, from.length) < 0) return "unknown";
    const to = withPort(source, 9);
    if (libc.call.connect(fd, to, to.length) === 0) return "local";
    return NO_ROUTE.includes(libc.errno()) ? "missing" : "unknown";
  } finally {
    libc.call.close(fd);
  }
}

/** The fix, for both forms of the hint. */
const ROUTE_FIX = "In the backend's network namespace add `ip route add local default dev lo` " +
  "(and `ip -6 route add local default dev lo` for IPv6 clients), e.g. " +
  "ExecStartPre=+/sbin/ip route replace local default dev lo in the backend's unit; for a " +
  "backend on the host's own network see socket-proxyd(8), TRANSPARENT, for the policy-routing " +
  "recipe.";

/**
 * What the engine needs for `--transparent`: binds backend sockets to their clients' addresses,
 * and says once, when replies seem not to come back, what is likely wrong and which route fixes
 * it.
 */
export class Transparent {
  readonly #libc: Libc;
  readonly #tell: (line: string) => void;
  #told = false;

  /** @param tell writes the hint (a warning in the journal by default). */
  constructor(libc: Libc, tell: (line: string) => void = (line) => log("warning", line)) {
    this.#libc = libc;
    this.#tell = tell;
  }

  /** The libc it uses, for the engine that shares it. */
  get libc(): Libc {
    return this.#libc;
  }

  /**
   * Binds the new backend socket `fd` of `family` to the address of `client` (null: a Unix
   * client without a name), port 0. Call between `socket()` and `connect()`.
   * @returns null, or why the client cannot be forwarded (do not forward it: close `fd`, log).
   */
  bind(fd: number, family: number, client: Uint8Array | null): string | null {
    const source = transparentSource(client ?? new Uint8Array([AF_UNIX, 0]), family, false);
    if ("problem" in source) return source.problem;
    const errno = bindTransparent(this.#libc, fd, family, source);
    if (errno === 0) return null;
    return `cannot bind to the client's address ${formatSocketAddress(decode(source))} ` +
      `(--transparent: ${errnoName(errno)})`;
  }

  /**
   * The engine saw no reply over a transparent socket: a connect to `backend` from `client`
   * timed out, or a datagram session ended having sent datagrams and received none. The first
   * time a loopback backend's replies to that client have no local route (or, for a backend that
   * cannot be asked, the first time at all), the hint is written; never again after it.
   */
  noReply(client: Uint8Array | null, backend: Uint8Array): void {
    if (this.#told || client === null) return;
    const source = transparentSource(client, familyOf(backend), false);
    if ("problem" in source) return;
    const route = returnRoute(this.#libc, source, backend);
    if (route === "local") return;
    this.#told = true;
    const [from, to] = [backend, client].map((a) => formatSocketAddress(decode(a)));
    this.#tell(
      route === "missing"
        ? `Replies do not come back (--transparent): in this network namespace, what ${from} ` +
          `sends to clients such as ${to} has no local route to the proxy, so they get no ` +
          `answer. ${ROUTE_FIX}`
        : `No reply from ${from} to ${to} through a transparent socket: if the backend answers ` +
          `its clients, its replies are not routed back to the proxy. ${ROUTE_FIX}`,
    );
  }
}

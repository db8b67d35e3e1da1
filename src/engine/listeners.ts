/**
 * Listening sockets: the proxy's own (`--listen=`, when nothing is passed in), opened through
 * libc like every other socket the engine serves, and what the engine asks of a passed one.
 * @module
 */
import { formatListenAddress, type ListenAddress } from "../cli/address.ts";
import { isIPAddress } from "../cli/target.ts";
import { ERRNO, SystemError } from "./errno.ts";
import type { Libc } from "./libc.ts";
import type { Resolver } from "./resolve.ts";
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  decode,
  encodeIP,
  encodeUnix,
  familyOf,
  formatSocketAddress,
  SOCKADDR_MAX,
  type SocketAddress,
} from "./sockaddr.ts";

const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0x800;
/** The listen backlog of our own sockets (the kernel caps it at net.core.somaxconn). */
const BACKLOG = 4096;

/** A listening socket of our own. */
export interface OwnListener {
  readonly fd: number;
  /** Where it listens. */
  readonly local: SocketAddress | null;
  /** The socket file to remove when it is closed, or null. */
  readonly path: string | null;
}

/** The address a socket is bound to (getsockname), or null when it cannot be told. */
export function localAddress(libc: Libc, fd: number): SocketAddress | null {
  const name = new Uint8Array(SOCKADDR_MAX);
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, SOCKADDR_MAX, true);
  if (libc.call.getsockname(fd, name, length) < 0) return null;
  return decode(name, new DataView(length.buffer).getUint32(0, true));
}

/** The address of a connected socket's peer (getpeername), as the kernel wrote it, or null. */
export function peerSockaddr(libc: Libc, fd: number): Uint8Array | null {
  const name = new Uint8Array(SOCKADDR_MAX);
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, SOCKADDR_MAX, true);
  if (libc.call.getpeername(fd, name, length) < 0) return null;
  return name.slice(0, new DataView(length.buffer).getUint32(0, true));
}

/** Where a listener listens, for logs: "127.0.0.1:80", "[::]:80", "/run/app.sock", "@name". */
export function describeListener(local: SocketAddress | null): string {
  return local === null ? "an unknown address" : formatSocketAddress(local);
}

/**
 * Makes `fd` non-blocking (a passed socket may come blocking, and an accept must never wait on
 * the event loop's thread).
 * @throws {SystemError} when fcntl fails.
 */
export function makeNonBlocking(libc: Libc, fd: number): void {
  const flags = libc.call.fcntl(fd, F_GETFL, 0);
  if (flags < 0 || libc.call.fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw new SystemError(libc.errno());
  }
}

/**
 * Listens on `address`: every address (IPv6 and IPv4) for a bare port, a host's first address,
 * a Unix socket path (replacing a socket file left by an earlier run that nobody listens on
 * any more) or an abstract name.
 * @throws {Error} saying what failed ("Cannot listen on 127.0.0.1:80: Address already in use").
 */
export async function openListener(
  libc: Libc,
  address: ListenAddress,
  resolve: Resolver,
): Promise<OwnListener> {
  try {
    const fd = await listenOn(libc, address, resolve);
    return {
      fd,
      local: localAddress(libc, fd),
      path: address.kind === "unix" ? address.path : null,
    };
  } catch (e) {
    throw new Error(`Cannot listen on ${formatListenAddress(address)}: ${(e as Error).message}`);
  }
}

async function listenOn(libc: Libc, address: ListenAddress, resolve: Resolver): Promise<number> {
  switch (address.kind) {
    case "abstract":
      return bound(libc, encodeUnix(address.name, true));
    case "unix":
      return listenOnPath(libc, address.path);
    case "tcp": {
      if (address.host === null) {
        try {
          return bound(libc, encodeIP("::", address.port), { dualStack: true });
        } catch (e) {
          if ((e as SystemError).errno !== ERRNO.EAFNOSUPPORT) throw e;
          return bound(libc, encodeIP("0.0.0.0", address.port)); // No IPv6 here.
        }
      }
      const host = isIPAddress(address.host) ? address.host : (await resolve(address.host))[0];
      if (host === undefined) throw new Error(`${address.host} has no addresses`);
      return bound(libc, encodeIP(host, address.port));
    }
  }
}

function listenOnPath(libc: Libc, path: string): number {
  const address = encodeUnix(path, false);
  try {
    return bound(libc, address);
  } catch (e) {
    if ((e as SystemError).errno !== ERRNO.EADDRINUSE || !stale(libc, path, address)) throw e;
    Deno.removeSync(path);
    return bound(libc, address);
  }
}

/** Whether `path` is a socket file that nobody listens on. */
function stale(libc: Libc, path: string, address: Uint8Array): boolean {
  if (!Deno.lstatSync(path).isSocket) return false;
  const fd = libc.call.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const refused = libc.call.connect(fd, address, address.length) < 0 &&
    libc.errno() === ERRNO.ECONNREFUSED;
  libc.call.close(fd);
  return refused;
}

/** A listening socket bound to `address`; with `dualStack`, IPv4 clients too. */
function bound(libc: Libc, address: Uint8Array, options: { dualStack?: boolean } = {}): number {
  const call = libc.call;
  const family = familyOf(address);
  const fd = call.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SystemError(libc.errno());
  const off = new Uint8Array(4);
  const on = new Uint8Array([1, 0, 0, 0]);
  const ok = (family !== AF_INET && family !== AF_INET6 ||
    call.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, on, 4) === 0) &&
    (!options.dualStack || call.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, off, 4) === 0) &&
    call.bind(fd, address, address.length) === 0 &&
    call.listen(fd, BACKLOG) === 0;
  if (ok) return fd;
  const errno = libc.errno();
  call.close(fd);
  throw new SystemError(errno);
}

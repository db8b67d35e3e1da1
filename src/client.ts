/**
 * Accepted clients, whichever listener they came from, as the proxy sees them.
 * @module
 */
import type { Socket } from "node:net";
import { connEndpoint, type Endpoint, socketEndpoint } from "./endpoint.ts";
import { takeEndpoint } from "./fastpath.ts";

/** How accepted `node:net` clients are read and written. */
export type DataPath = "fast" | "portable";

/** A TCP address, or null for a Unix socket (whose peers are nameless). */
export type NetAddress = Deno.NetAddr | null;

/** An accepted client connection that the proxy has not decided about yet. */
export interface Client {
  /** The peer's address (null for Unix clients); ask before {@link open} or {@link refuse}. */
  readonly remote: NetAddress;
  /** The address the client connected to (null for Unix sockets); ask before either too. */
  readonly local: NetAddress;
  /**
   * Takes the socket for forwarding, with TCP keepalive on if `keepalive`. Call at most once,
   * and not after {@link refuse}.
   */
  open(keepalive: boolean): Endpoint;
  /** Closes the connection unserved. */
  refuse(): void;
}

/** Formats an address for logs: "192.0.2.1:51234", "[2001:db8::1]:443" or "unix". */
export function formatAddress(address: NetAddress): string {
  if (address === null) return "unix";
  return address.hostname.includes(":")
    ? `[${address.hostname}]:${address.port}`
    : `${address.hostname}:${address.port}`;
}

function netAddress(host: string | undefined, port: number | undefined): NetAddress {
  if (host === undefined || port === undefined) return null;
  // Node reports IPv4 clients of a dual-stack listener as IPv4-mapped IPv6.
  const hostname = host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host;
  return { transport: "tcp", hostname, port };
}

/**
 * A client accepted by a `node:net` server (the adopted listeners). Its addresses are looked up
 * when first asked for (only PROXY headers and log lines need them), and the socket object is
 * let go of once the connection is taken over or refused. A class, so that a connection holds
 * one small object rather than a set of closures.
 */
class SocketClient implements Client {
  #socket: Socket | null;
  #remote: NetAddress | undefined;
  #local: NetAddress | undefined;

  constructor(socket: Socket, readonly dataPath: DataPath) {
    this.#socket = socket;
  }

  get remote(): NetAddress {
    const socket = this.#socket;
    return this.#remote ??= socket === null
      ? null
      : netAddress(socket.remoteAddress, socket.remotePort);
  }

  get local(): NetAddress {
    const socket = this.#socket;
    return this.#local ??= socket === null
      ? null
      : netAddress(socket.localAddress, socket.localPort);
  }

  open(keepalive: boolean): Endpoint {
    const socket = this.#socket!;
    this.#socket = null;
    if (!socket.destroyed) {
      socket.setNoDelay(true);
      if (keepalive) socket.setKeepAlive(true);
    }
    return (this.dataPath === "fast" ? takeEndpoint(socket) : null) ?? socketEndpoint(socket);
  }

  refuse(): void {
    this.#socket?.destroy();
    this.#socket = null;
  }
}

/** A client accepted by a `node:net` server (the adopted listeners). */
export function socketClient(socket: Socket, dataPath: DataPath): Client {
  return new SocketClient(socket, dataPath);
}

/** A client accepted by a `Deno.Listener` (the proxy's own `--listen` sockets). */
export function connClient(conn: Deno.Conn): Client {
  const tcp = conn.remoteAddr.transport === "tcp";
  return {
    remote: tcp ? conn.remoteAddr as Deno.NetAddr : null,
    local: tcp ? conn.localAddr as Deno.NetAddr : null,
    open(keepalive) {
      if (tcp) {
        (conn as Deno.TcpConn).setNoDelay(true);
        if (keepalive) (conn as Deno.TcpConn).setKeepAlive(true);
      }
      return connEndpoint(conn);
    },
    refuse() {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    },
  };
}

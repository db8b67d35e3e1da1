/**
 * Addresses for `--listen=`: where the proxy listens itself when no sockets are passed in.
 * Pure parsing, in the target syntax plus a bare port.
 * @module
 */
import {
  type AbstractTarget,
  formatTarget,
  parseTarget,
  type Target,
  type UnixTarget,
} from "./target.ts";

/** A TCP address to listen on; `host` null means every address (IPv6 and IPv4). */
export interface TcpListenAddress {
  readonly kind: "tcp";
  readonly host: string | null;
  readonly port: number;
}

/** Any address `--listen=` accepts. */
export type ListenAddress = TcpListenAddress | UnixTarget | AbstractTarget;

/**
 * Parses `PORT`, `HOST:PORT`, `[IPV6]:PORT`, `/PATH` or `@ABSTRACT`.
 *
 * @throws {RangeError} naming the input.
 */
export function parseListenAddress(text: string): ListenAddress {
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    if (port < 1 || port > 65535) {
      throw new RangeError(`Invalid listen address "${text}": port is not from 1 to 65535`);
    }
    return { kind: "tcp", host: null, port };
  }
  let parsed;
  try {
    parsed = parseTarget(text);
  } catch (e) {
    throw new RangeError((e as Error).message.replace("Invalid target", "Invalid listen address"));
  }
  if (parsed.kind === "vsock") {
    throw new RangeError(`Invalid listen address "${text}": vsock is for targets only`);
  }
  if (parsed.kind === "tcp" && !/:\d+$/.test(text)) {
    throw new RangeError(`Invalid listen address "${text}": a port is required`);
  }
  return parsed;
}

/** Formats a listen address for logs, in the syntax that parses back to it. */
export function formatListenAddress(address: ListenAddress): string {
  if (address.kind === "tcp" && address.host === null) return `${address.port}`;
  return formatTarget(address as Target);
}

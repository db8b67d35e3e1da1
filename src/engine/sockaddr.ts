/**
 * Socket addresses as the kernel reads and writes them (`struct sockaddr_in`, `sockaddr_in6`,
 * `sockaddr_un`), for the datagram relay, which talks to the kernel through libc. Pure: no I/O.
 * @module
 */
import { isIPv4, isIPv6 } from "../cli/target.ts";

/** Address families (Linux numbers). */
export const AF_UNIX = 1;
/** IPv4. */
export const AF_INET = 2;
/** IPv6. */
export const AF_INET6 = 10;
/** Virtual machine sockets. */
export const AF_VSOCK = 40;

/** The room any address needs (`sizeof(struct sockaddr_storage)`). */
export const SOCKADDR_MAX = 128;

/** A decoded address, for logs and PROXY-style reports. */
export type SocketAddress =
  | { readonly family: "ipv4" | "ipv6"; readonly host: string; readonly port: number }
  | { readonly family: "unix"; readonly path: string | null };

function parseIPv4(text: string, into: Uint8Array, at: number): void {
  text.split(".").forEach((part, i) => into[at + i] = Number(part));
}

/** The 16 bytes of an IPv6 address in text form (validated by the caller). */
export function parseIPv6(text: string): Uint8Array {
  const bytes = new Uint8Array(16);
  let head = text;
  let tail: number[] = [];
  if (text.includes(".")) {
    const last = text.lastIndexOf(":");
    const v4 = new Uint8Array(4);
    parseIPv4(text.slice(last + 1), v4, 0);
    tail = [(v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]];
    head = text.slice(0, last + 1);
    if (head.endsWith(":") && !head.endsWith("::")) head = head.slice(0, -1);
  }
  const [left, right] = head.split("::");
  const groups = (half: string | undefined) =>
    half === undefined || half === "" ? [] : half.split(":").map((g) => parseInt(g, 16));
  const before = groups(left);
  const after = [...groups(right), ...tail];
  const all = right === undefined
    ? [...before, ...tail]
    : [...before, ...Array(8 - before.length - after.length).fill(0), ...after];
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

/** An IPv6 address in RFC 5952 form ("2001:db8::1"); an IPv4-mapped one as plain IPv4. */
export function formatIPv6(bytes: Uint8Array): string {
  const mapped = bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff;
  if (mapped) return Array.from(bytes.subarray(12, 16)).join(".");
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i] << 8) | bytes[2 * i + 1]);
  // The longest run of two or more zero groups becomes "::" (the first, if tied).
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (from: number, to: number) =>
    groups.slice(from, to).map((g) => g.toString(16)).join(":");
  return best < 0 ? hex(0, 8) : `${hex(0, best)}::${hex(best + bestLength, 8)}`;
}

/**
 * Encodes an IP address and port: `sockaddr_in` for IPv4, `sockaddr_in6` for IPv6; with
 * `mapToIPv6`, an IPv4 address as IPv4-mapped IPv6 (for an AF_INET6 socket).
 * @throws {RangeError} when `host` is not an IP address.
 */
export function encodeIP(host: string, port: number, mapToIPv6 = false): Uint8Array {
  if (isIPv4(host) && !mapToIPv6) {
    const address = new Uint8Array(16);
    new DataView(address.buffer).setUint16(0, AF_INET, true);
    new DataView(address.buffer).setUint16(2, port, false);
    parseIPv4(host, address, 4);
    return address;
  }
  let ip: Uint8Array;
  if (isIPv4(host)) {
    ip = new Uint8Array(16);
    ip[10] = ip[11] = 0xff;
    parseIPv4(host, ip, 12);
  } else if (isIPv6(host)) {
    ip = parseIPv6(host);
  } else {
    throw new RangeError(`"${host}" is not an IP address`);
  }
  const address = new Uint8Array(28);
  new DataView(address.buffer).setUint16(0, AF_INET6, true);
  new DataView(address.buffer).setUint16(2, port, false);
  address.set(ip, 8);
  return address;
}

/**
 * Encodes a Unix socket address: a path, or an abstract name when `abstract` (a leading NUL,
 * no terminating one).
 */
export function encodeUnix(name: string, abstract: boolean): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  const address = new Uint8Array(2 + (abstract ? 1 : 0) + bytes.length + (abstract ? 0 : 1));
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(bytes, abstract ? 3 : 2);
  return address;
}

/** Encodes a vsock address (`struct sockaddr_vm`): context id `cid`, `port`. */
export function encodeVsock(cid: number, port: number): Uint8Array {
  const address = new Uint8Array(16);
  const view = new DataView(address.buffer);
  view.setUint16(0, AF_VSOCK, true);
  view.setUint32(4, port, true);
  view.setUint32(8, cid, true);
  return address;
}

/** The address family of an encoded address. */
export function familyOf(address: Uint8Array): number {
  return address.length < 2 ? 0 : address[0] | (address[1] << 8);
}

/**
 * Decodes the first `length` bytes of an address the kernel wrote.
 * @returns null for a family this program does not use.
 */
export function decode(address: Uint8Array, length = address.length): SocketAddress | null {
  const view = new DataView(address.buffer, address.byteOffset, length);
  switch (familyOf(address)) {
    case AF_INET:
      return {
        family: "ipv4",
        host: Array.from(address.subarray(4, 8)).join("."),
        port: view.getUint16(2, false),
      };
    case AF_INET6: {
      const host = formatIPv6(address.subarray(8, 24));
      return { family: host.includes(":") ? "ipv6" : "ipv4", host, port: view.getUint16(2) };
    }
    case AF_UNIX: {
      if (length <= 2) return { family: "unix", path: null };
      const abstract = address[2] === 0;
      let bytes = address.subarray(abstract ? 3 : 2, length);
      const nul = bytes.indexOf(0);
      if (!abstract && nul >= 0) bytes = bytes.subarray(0, nul);
      const text = new TextDecoder().decode(bytes);
      return { family: "unix", path: abstract ? `@${text}` : text };
    }
    default:
      return null;
  }
}

/** Formats a decoded address for logs: "192.0.2.1:53", "[2001:db8::1]:53", "/run/x", "unix". */
export function formatSocketAddress(address: SocketAddress | null): string {
  if (address === null) return "unknown";
  if (address.family === "unix") return address.path ?? "unix";
  return address.family === "ipv6"
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/**
 * PROXY protocol headers (HAProxy's specification, versions 1 and 2), which tell the backend the
 * real client and destination address before any client byte. Pure: builds bytes, no I/O.
 * @module
 */
import { isIPv4, isIPv6 } from "../cli/target.ts";

/** The PROXY protocol version, or none. */
export type ProxyProtocolVersion = "v1" | "v2";

/** The addresses of the proxied connection; null for a Unix socket. */
export interface ConnectionAddresses {
  /** The client (source). */
  readonly remote: { readonly hostname: string; readonly port: number } | null;
  /** Where the client connected (destination). */
  readonly local: { readonly hostname: string; readonly port: number } | null;
}

/** The 12-byte signature that starts every version 2 header. */
export const V2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);

type Family = "TCP4" | "TCP6";

/** Both addresses in one family (an IPv4 address is mapped into IPv6 if the other is IPv6). */
function family(addresses: ConnectionAddresses): [Family, string, string] | null {
  const { remote, local } = addresses;
  if (remote === null || local === null) return null;
  const kind = (h: string) => isIPv4(h) ? 4 : isIPv6(h) ? 6 : 0;
  const [a, b] = [kind(remote.hostname), kind(local.hostname)];
  if (a === 0 || b === 0) return null;
  if (a === 4 && b === 4) return ["TCP4", remote.hostname, local.hostname];
  const v6 = (h: string, k: number) => k === 4 ? `::ffff:${h}` : h;
  return ["TCP6", v6(remote.hostname, a), v6(local.hostname, b)];
}

/** Expands an IPv6 address (with optional embedded IPv4) into its 16 bytes. */
export function ipv6Bytes(address: string): Uint8Array {
  let text = address;
  const tail: number[] = [];
  if (text.includes(".")) {
    const colon = text.lastIndexOf(":");
    tail.push(...text.slice(colon + 1).split(".").map(Number));
    text = text.slice(0, colon + 1) + "0:0";
  }
  const [head, rest] = text.split("::");
  const groups = (part: string | undefined) => part ? part.split(":").filter(Boolean) : [];
  const left = groups(head);
  const right = groups(rest);
  const all = rest === undefined
    ? left
    : [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const out = new Uint8Array(16);
  all.forEach((group, i) => {
    const value = parseInt(group, 16);
    out[2 * i] = value >> 8;
    out[2 * i + 1] = value & 0xff;
  });
  if (tail.length === 4) out.set(tail, 12);
  return out;
}

/** A version 1 (text) header: "PROXY TCP4 src dst sport dport\r\n" or "PROXY UNKNOWN\r\n". */
export function proxyHeaderV1(addresses: ConnectionAddresses): Uint8Array {
  const f = family(addresses);
  const line = f === null
    ? "PROXY UNKNOWN\r\n"
    : `PROXY ${f[0]} ${f[1]} ${f[2]} ${addresses.remote!.port} ${addresses.local!.port}\r\n`;
  return new TextEncoder().encode(line);
}

/**
 * A version 2 (binary) header: signature, command PROXY (0x21), family TCP over IPv4 (0x11) or
 * IPv6 (0x21) with addresses and ports. A Unix client's peer has no address to tell: that is
 * command LOCAL (0x20) with family UNSPEC (0x00) and no address block, which the specification
 * obliges receivers to accept (PROXY with UNSPEC they may reject, and haproxy does).
 */
export function proxyHeaderV2(addresses: ConnectionAddresses): Uint8Array {
  const f = family(addresses);
  const size = f === null ? 0 : f[0] === "TCP4" ? 12 : 36;
  const out = new Uint8Array(16 + size);
  out.set(V2_SIGNATURE);
  const view = new DataView(out.buffer);
  view.setUint16(14, size);
  if (f === null) {
    out[12] = 0x20; // Version 2, command LOCAL.
    out[13] = 0x00; // AF_UNSPEC, UNSPEC transport.
    return out;
  }
  out[12] = 0x21; // Version 2, command PROXY.
  const { remote, local } = addresses;
  if (f[0] === "TCP4") {
    out[13] = 0x11; // AF_INET, STREAM.
    out.set(f[1].split(".").map(Number), 16);
    out.set(f[2].split(".").map(Number), 20);
    view.setUint16(24, remote!.port);
    view.setUint16(26, local!.port);
  } else {
    out[13] = 0x21; // AF_INET6, STREAM.
    out.set(ipv6Bytes(f[1]), 16);
    out.set(ipv6Bytes(f[2]), 32);
    view.setUint16(48, remote!.port);
    view.setUint16(50, local!.port);
  }
  return out;
}

/** The header for `version`. */
export function proxyHeader(
  version: ProxyProtocolVersion,
  addresses: ConnectionAddresses,
): Uint8Array {
  return version === "v1" ? proxyHeaderV1(addresses) : proxyHeaderV2(addresses);
}

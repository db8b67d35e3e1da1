/**
 * libc, opened under -A, and UDP sockets made through it (as a passed socket is made), for
 * the tests of the modules that serve datagram sockets.
 * @module
 */
import { ok } from "node:assert/strict";
import { type Libc, openLibc } from "../../src/engine/libc.ts";
import { decode, encodeIP } from "../../src/engine/sockaddr.ts";

const opened = openLibc();
if (!("call" in opened)) throw new Error(`libc: ${JSON.stringify(opened)}`);
/** libc, opened. */
export const libc: Libc = opened;

/** recv(2), which the relay does not use (it receives with recvmmsg): the tests' own. */
export const recv = Deno.dlopen(opened.path, {
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
}).symbols.recv;

/** socket(2) flags and types. */
export const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
/** recv(2) without waiting. */
export const MSG_DONTWAIT = 0x40;

/** A non-blocking socket of libc's: a UDP one by default. */
export function socketOf(family = 2, type = SOCK_DGRAM): number {
  const fd = libc.call.socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ok(fd >= 0, `socket: errno ${libc.errno()}`);
  return fd;
}

/** A UDP socket of libc's, bound to `host` (port 0: the kernel picks one); its fd and port. */
export function udpSocket(host = "127.0.0.1"): { fd: number; port: number } {
  const fd = socketOf(host.includes(":") ? 10 : 2);
  const address = encodeIP(host, 0);
  ok(libc.call.bind(fd, address, address.length) === 0, `bind: errno ${libc.errno()}`);
  const name = new Uint8Array(28);
  libc.call.getsockname(fd, name, new Uint8Array([28, 0, 0, 0]));
  const decoded = decode(name);
  return { fd, port: decoded !== null && decoded.family !== "unix" ? decoded.port : 0 };
}

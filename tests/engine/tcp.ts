/**
 * TCP connections with one end made through libc (as the engine's sockets are) and the other a
 * `Deno.Conn` the test reads and writes, for the tests of the stream side of the engine.
 * @module
 */
import { ok } from "node:assert/strict";
import { Poller } from "../../src/engine/poller.ts";
import { encodeIP } from "../../src/engine/sockaddr.ts";
import { libc, socketOf } from "./libc_udp.ts";

const SOCK_STREAM = 1;
const EINPROGRESS = 115;

/** A connected TCP pair: `fd` (libc's, non-blocking) and `conn` (the test's end). */
export interface Pair {
  readonly fd: number;
  readonly conn: Deno.TcpConn;
}

/** Connects a libc socket to a Deno listener on 127.0.0.1 and returns both ends. */
export async function tcpPair(): Promise<Pair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const fd = socketOf(2, SOCK_STREAM);
    const address = encodeIP("127.0.0.1", listener.addr.port);
    const connected = libc.call.connect(fd, address, address.length);
    ok(connected === 0 || libc.errno() === EINPROGRESS, `connect: errno ${libc.errno()}`);
    return { fd, conn: await listener.accept() };
  } finally {
    listener.close();
  }
}

/** Everything `conn` sends until it ends (or fails: then what came before, and the error). */
export async function readAll(conn: Deno.Conn): Promise<{ bytes: Uint8Array; error: unknown }> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(65536);
  let error: unknown = null;
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } catch (e) {
    error = e;
  }
  const bytes = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return { bytes, error };
}

/** Writes all of `data` to `conn`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}

/** `n` pseudo-random bytes (seeded: the same every run). */
export function bytesOf(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A poller for one test, closed by the returned function. */
export function testPoller(): { poller: Poller; close: () => Promise<void> } {
  const poller = new Poller(libc);
  return { poller, close: () => poller.close() };
}

/** A connected TCP pair made entirely through libc: `engine` for the code under test, `test`. */
export function libcPair(): { engine: number; test: number } {
  const listener = socketOf(2, SOCK_STREAM);
  const any = encodeIP("127.0.0.1", 0);
  ok(libc.call.bind(listener, any, any.length) === 0 && libc.call.listen(listener, 1) === 0);
  const name = new Uint8Array(16);
  libc.call.getsockname(listener, name, new Uint8Array([16, 0, 0, 0]));
  const test = socketOf(2, SOCK_STREAM);
  libc.call.connect(test, name, 16);
  let engine = -1;
  // The handshake completes within connect on loopback; accept4 may still need a moment.
  for (let i = 0; i < 1000 && engine < 0; i++) {
    engine = libc.call.accept4(listener, null, null, 0x800);
  }
  libc.call.close(listener);
  ok(engine >= 0, `accept4: errno ${libc.errno()}`);
  return { engine, test };
}

/** Writes to the non-blocking `fd` until the kernel takes no more; returns how much it took. */
export function fill(fd: number): number {
  const chunk = new Uint8Array(65536);
  let total = 0;
  for (;;) {
    const n = libc.call.write(fd, chunk, 65536n);
    if (n <= 0) return total;
    total += n;
  }
}

/** Closes `fd` with a reset (SO_LINGER 0) rather than a FIN. */
export function reset(fd: number): void {
  const linger = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
  ok(libc.call.setsockopt(fd, 1, 13, linger, 8) === 0, `SO_LINGER: errno ${libc.errno()}`);
  libc.call.close(fd);
}

import { deepEqual, equal, ok } from "node:assert/strict";
import { Connection, type ConnectionHost } from "../../src/engine/connection.ts";
import { ERRNO, SystemError } from "../../src/engine/errno.ts";
import type { Libc, LibcSymbols } from "../../src/engine/libc.ts";
import type { Poller } from "../../src/engine/poller.ts";
import { libc } from "./libc_udp.ts";
import { bytesOf, fill, libcPair, readAll, reset, tcpPair, testPoller, writeAll } from "./tcp.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const F_SETPIPE_SZ = 1031;

/**
 * libc as the engine sees it, with some calls `replaced`, and what it did with pipes: the ends
 * of every pipe it made, every descriptor it closed, how many splices it made.
 */
function spyLibc(replaced: Partial<LibcSymbols> = {}, errno: () => number = libc.errno) {
  const seen = { pipes: [] as number[], closed: new Set<number>(), splices: 0 };
  const real = { ...libc.call, ...replaced };
  const call: LibcSymbols = {
    ...real,
    pipe2(ends, flags) {
      const result = real.pipe2(ends, flags);
      if (result === 0) seen.pipes.push(...new Int32Array((ends as Int32Array).buffer));
      return result;
    },
    splice(...args) {
      seen.splices++;
      return real.splice(...args);
    },
    close(fd) {
      seen.closed.add(fd);
      return real.close(fd);
    },
  };
  const spied: Libc = { ...libc, call, errno };
  return { libc: spied, seen };
}

/** A host for one connection: the shared buffer (of `size` bytes) and the end it reports. */
function hostOf(poller: Poller, size = 256 * 1024, through: Libc = libc) {
  const ended = Promise.withResolvers<Error | null>();
  const buffer = new Uint8Array(size);
  const host: ConnectionHost = {
    libc: through,
    poller,
    buffer,
    bufferSize: BigInt(size),
    ended: (_connection, error) => ended.resolve(error),
    borrow: () => new Uint8Array(size),
    giveBack: () => {},
  };
  return { host, ended: ended.promise };
}

/**
 * A connection between two TCP pairs: the test's `client` end talks to the engine's client
 * socket, the engine's backend socket to the test's `backend` end.
 */
async function connection(options: { size?: number; first?: Uint8Array; libc?: Libc } = {}) {
  const { poller, close } = testPoller();
  const [client, backend] = [await tcpPair(), await tcpPair()];
  const { host, ended } = hostOf(poller, options.size, options.libc);
  const connection = new Connection(host, client.fd, false);
  connection.open(backend.fd, 0, 0, options.first ?? null);
  return {
    connection,
    client: client.conn,
    backend: backend.conn,
    ended,
    async close() {
      for (const conn of [client.conn, backend.conn]) {
        try {
          conn.close();
        } catch {
          // Closed by the test.
        }
      }
      await close();
    },
  };
}

Deno.test("Connection: bytes both ways arrive exactly; both ended, both sockets closed", async () => {
  const c = await connection();
  try {
    const up = bytesOf(3 * 1024 * 1024 + 17, 1);
    const down = bytesOf(2 * 1024 * 1024 + 5, 2);
    const [atBackend, atClient] = await Promise.all([
      readAll(c.backend),
      readAll(c.client),
      writeAll(c.client, up).then(() => c.client.closeWrite()),
      writeAll(c.backend, down).then(() => c.backend.closeWrite()),
    ]);
    deepEqual(atBackend.bytes, up);
    deepEqual(atClient.bytes, down);
    equal(await c.ended, null);
    equal(c.connection.sent, up.length);
    equal(c.connection.received, down.length);
    ok(c.connection.closed);
  } finally {
    await c.close();
  }
});

Deno.test("Connection: the client half-closes first; the backend still replies", async () => {
  const c = await connection();
  try {
    await writeAll(c.client, encoder.encode("ping"));
    await c.client.closeWrite();
    const request = await readAll(c.backend);
    equal(decoder.decode(request.bytes), "ping", "the backend saw the request, then EOF");
    await writeAll(c.backend, encoder.encode("pong"));
    await c.backend.closeWrite();
    equal(decoder.decode((await readAll(c.client)).bytes), "pong");
    equal(await c.ended, null);
  } finally {
    await c.close();
  }
});

Deno.test("Connection: the backend half-closes first; the client can still send", async () => {
  const c = await connection();
  try {
    await writeAll(c.backend, encoder.encode("hello"));
    await c.backend.closeWrite();
    equal(decoder.decode((await readAll(c.client)).bytes), "hello");
    await writeAll(c.client, encoder.encode("more"));
    await c.client.closeWrite();
    equal(decoder.decode((await readAll(c.backend)).bytes), "more");
    equal(await c.ended, null);
  } finally {
    await c.close();
  }
});

for (const through of ["a pipe", "a copy"]) {
  Deno.test(`Connection: a slow reader gets every byte (backpressure through ${through})`, async () => {
    // A read fills the small buffer at once: the direction splices, unless pipe2 fails.
    const spy = spyLibc(through === "a pipe" ? {} : { pipe2: () => -1 });
    const c = await connection({ size: 4096, libc: spy.libc });
    try {
      const up = bytesOf(4 * 1024 * 1024, 3);
      const sending = writeAll(c.client, up).then(() => c.client.closeWrite());
      // The backend reads 1 KiB at a time, letting the event loop run between reads.
      const chunks: Uint8Array[] = [];
      const buffer = new Uint8Array(1024);
      let total = 0;
      for (;;) {
        const n = await c.backend.read(buffer);
        if (n === null) break;
        chunks.push(buffer.slice(0, n));
        total += n;
        if (chunks.length % 64 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      await sending;
      equal(total, up.length);
      deepEqual(new Uint8Array(chunks.flatMap((chunk) => [...chunk])), up);
      await c.backend.closeWrite();
      equal((await readAll(c.client)).bytes.length, 0);
      equal(await c.ended, null);
      equal(spy.seen.pipes.length, through === "a pipe" ? 2 : 0, "the client's bytes' pipe");
      ok(through === "a pipe" ? spy.seen.splices > 0 : spy.seen.splices === 0);
    } finally {
      await c.close();
    }
  });
}

Deno.test("Connection: a PROXY header (or any first bytes) goes before the client's", async () => {
  const c = await connection({ first: encoder.encode("PROXY UNKNOWN\r\n") });
  try {
    await writeAll(c.client, encoder.encode("GET /"));
    await c.client.closeWrite();
    equal(decoder.decode((await readAll(c.backend)).bytes), "PROXY UNKNOWN\r\nGET /");
    await c.backend.closeWrite();
    await readAll(c.client);
    equal(await c.ended, null);
  } finally {
    await c.close();
  }
});

Deno.test("Connection: a reset of the client, while its bytes wait for a backend that does not read, closes both", async () => {
  const { poller, close } = testPoller();
  const client = libcPair();
  const backend = await tcpPair();
  const spy = spyLibc();
  const { host, ended } = hostOf(poller, 256 * 1024, spy.libc);
  const connection = new Connection(host, client.engine, false);
  connection.open(backend.fd, 0, 0, null);
  try {
    // The backend's end reads nothing: the client's bytes fill every buffer on the way.
    let sent = 0;
    for (let round = 0; round < 50; round++) {
      sent += fill(client.test);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    ok(sent > 0);
    reset(client.test);
    const error = await ended;
    ok(error instanceof SystemError, String(error));
    equal(error.message, "Connection reset by peer");
    const rest = await readAll(backend.conn);
    ok(rest.bytes.length > 0 && rest.bytes.length < sent, `${rest.bytes.length} of ${sent}`);
    equal(spy.seen.pipes.length, 2, "the bytes waited in a pipe");
    ok(spy.seen.pipes.every((fd) => spy.seen.closed.has(fd)), "the pipe is closed");
  } finally {
    backend.conn.close();
    await close();
  }
});

Deno.test("Connection: a backend reset closes the client", async () => {
  const { poller, close } = testPoller();
  const client = await tcpPair();
  const backend = libcPair();
  const { host, ended } = hostOf(poller);
  const connection = new Connection(host, client.fd, false);
  connection.open(backend.engine, 0, 0, null);
  try {
    await writeAll(client.conn, encoder.encode("x"));
    reset(backend.test);
    const error = await ended;
    ok(error instanceof SystemError, String(error));
    equal((await readAll(client.conn)).bytes.length, 0, "the client sees the end");
  } finally {
    client.conn.close();
    await close();
  }
});

type Connected = Awaited<ReturnType<typeof connection>>;

/** Sends a small request and its reply through `c`. */
async function pingPong(c: Connected) {
  await writeAll(c.client, encoder.encode("ping"));
  const request = new Uint8Array(4);
  equal(await c.backend.read(request), 4);
  await writeAll(c.backend, encoder.encode("pong"));
  const reply = new Uint8Array(4);
  equal(await c.client.read(reply), 4);
  equal(decoder.decode(reply), "pong");
}

/** Sends a small request and its reply, then `bulk` bytes each way; then both half-close. */
async function exchange(c: Connected, bulk: number) {
  await pingPong(c);
  const up = bytesOf(bulk, 4);
  const down = bytesOf(bulk + 3, 5);
  const [atBackend, atClient] = await Promise.all([
    readAll(c.backend),
    readAll(c.client),
    writeAll(c.client, up).then(() => c.client.closeWrite()),
    writeAll(c.backend, down).then(() => c.backend.closeWrite()),
  ]);
  deepEqual(atBackend.bytes, up);
  deepEqual(atClient.bytes, down);
  equal(await c.ended, null);
}

Deno.test("Connection: small messages are copied; a bulk direction splices through its own pipe, closed with the connection", async () => {
  const spy = spyLibc();
  const c = await connection({ size: 16384, libc: spy.libc });
  try {
    await pingPong(c);
    equal(spy.seen.pipes.length, 0, "no pipe for a small message");
    await exchange(c, 3 * 1024 * 1024);
    equal(spy.seen.pipes.length, 4, "a pipe each way");
    ok(spy.seen.splices > 0);
    ok(spy.seen.pipes.every((fd) => spy.seen.closed.has(fd)), "the pipes are closed");
  } finally {
    await c.close();
  }
});

Deno.test("Connection: without a pipe (pipe2 fails: out of descriptors) bulk is copied", async () => {
  const spy = spyLibc({ pipe2: () => -1 });
  const c = await connection({ size: 16384, libc: spy.libc });
  try {
    await exchange(c, 3 * 1024 * 1024);
    equal(spy.seen.splices, 0);
  } finally {
    await c.close();
  }
});

Deno.test("Connection: a pipe refused its size (F_SETPIPE_SZ) is closed and bulk copied", async () => {
  const fcntl: LibcSymbols["fcntl"] = (fd, command, argument) =>
    command === F_SETPIPE_SZ ? -1 : libc.call.fcntl(fd, command, argument);
  const spy = spyLibc({ fcntl });
  const c = await connection({ size: 16384, libc: spy.libc });
  try {
    await exchange(c, 3 * 1024 * 1024);
    equal(spy.seen.pipes.length, 4, "a pipe tried each way, once");
    ok(spy.seen.pipes.every((fd) => spy.seen.closed.has(fd)), "the pipes are closed");
    equal(spy.seen.splices, 0);
  } finally {
    await c.close();
  }
});

Deno.test("Connection: a socket that cannot be spliced from (EINVAL) is copied from", async () => {
  let failed = false;
  const splice: LibcSymbols["splice"] = () => {
    failed = true;
    return -1;
  };
  const errno = () => failed ? ERRNO.EINVAL : libc.errno();
  const spy = spyLibc({ splice }, () => {
    const value = errno();
    failed = false;
    return value;
  });
  const c = await connection({ size: 16384, libc: spy.libc });
  try {
    await exchange(c, 3 * 1024 * 1024);
    equal(spy.seen.pipes.length, 4);
    equal(spy.seen.splices, 2, "one splice each way, refused");
    ok(spy.seen.pipes.every((fd) => spy.seen.closed.has(fd)), "the pipes are closed");
  } finally {
    await c.close();
  }
});

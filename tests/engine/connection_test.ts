import { deepEqual, equal, ok } from "node:assert/strict";
import { Connection, type ConnectionHost } from "../../src/engine/connection.ts";
import { SystemError } from "../../src/engine/errno.ts";
import type { Poller } from "../../src/engine/poller.ts";
import { libc } from "./libc_udp.ts";
import { bytesOf, fill, libcPair, readAll, reset, tcpPair, testPoller, writeAll } from "./tcp.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A host for one connection: the shared buffer (of `size` bytes) and the end it reports. */
function hostOf(poller: Poller, size = 256 * 1024) {
  const ended = Promise.withResolvers<Error | null>();
  const buffer = new Uint8Array(size);
  const host: ConnectionHost = {
    libc,
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
async function connection(options: { size?: number; first?: Uint8Array } = {}) {
  const { poller, close } = testPoller();
  const [client, backend] = [await tcpPair(), await tcpPair()];
  const { host, ended } = hostOf(poller, options.size);
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

Deno.test("Connection: a slow reader gets every byte (backpressure through a small buffer)", async () => {
  const c = await connection({ size: 4096 });
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
  } finally {
    await c.close();
  }
});

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
  const { host, ended } = hostOf(poller);
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

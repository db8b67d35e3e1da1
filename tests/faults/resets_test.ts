/**
 * Faults: the backend dies mid-transfer, resets, closes early or stops reading; the client
 * resets or goes away mid-transfer; thousands of clients reset at once. Through the real
 * proxy: every affected connection closes promptly on both sides, its descriptors are released,
 * and every other connection carries on with its bytes intact.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import net from "node:net";
import type { Buffer } from "node:buffer";
import { freePort, pseudoRandomBytes } from "../integration/harness.ts";
import {
  BackendProcess,
  fnv1a,
  type LimitedProxy,
  report,
  startLimitedProxy,
  waitUntil,
  warmUp,
  within,
} from "./helpers.ts";

/**
 * A close that has not come by then is taken to be a close that never comes. Nothing in the
 * proxy under test would close these connections but the event (or, where the test says so, the
 * `--idle-timeout` it is about): with it missing they would stay open for ever. How soon
 * they close is reported, not asserted, since a loaded machine can take seconds for it.
 */
const NEVER_MS = 20_000;
const CHUNK = pseudoRandomBytes(64 * 1024, 7);

// ---------------------------------------------------------------------------------------------
// A backend in the test process (node:net, so that it can reset and stop reading). The client's
// first byte says what to do: E echo, S stream forever, R stream 256 KiB then reset, F stream
// 256 KiB then close, P stop reading at once, H stream until held back (the client does not
// read) then reset.

interface BackendConn {
  readonly command: string;
  /** Resolves with performance.now() when the proxy's side went away (see endOf). */
  readonly closed: Promise<number>;
  /** Bytes written so far. */
  sent: number;
  /** Bytes read so far. */
  received: number;
  /** Resolves with performance.now() when an R, F or H connection reset or closed. */
  readonly cut: Promise<number>;
}

/**
 * Resolves with performance.now() when `socket` sees the peer go: end of stream, reset or
 * close, whichever comes first (a half-open capable socket sees only the end of stream).
 */
function endOf(socket: net.Socket): Promise<number> {
  return new Promise((resolve) => {
    const done = () => resolve(performance.now());
    socket.once("end", done);
    socket.once("error", done);
    socket.once("close", done);
  });
}

class CommandBackend {
  readonly server: net.Server;
  readonly conns: BackendConn[] = [];
  readonly #sockets = new Set<net.Socket>();
  #onConn: Array<() => void> = [];

  constructor() {
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.#serve(socket));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    return `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  /** Waits until `count` connections with `command` have arrived; returns them. */
  async waitFor(command: string, count: number): Promise<BackendConn[]> {
    for (;;) {
      const found = this.conns.filter((c) => c.command === command);
      if (found.length >= count) return found;
      await new Promise<void>((resolve) => this.#onConn.push(resolve));
    }
  }

  #serve(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => {});
    const closed = endOf(socket);
    socket.once("data", (first: Buffer) => {
      const cut = Promise.withResolvers<number>();
      const conn: BackendConn = {
        command: String.fromCharCode(first[0]),
        closed,
        sent: 0,
        received: 0,
        cut: cut.promise,
      };
      const reset = () => {
        cut.resolve(performance.now());
        socket.resetAndDestroy();
      };
      this.conns.push(conn);
      for (const wake of this.#onConn.splice(0)) wake();
      const rest = first.subarray(1);
      switch (conn.command) {
        case "E":
          if (rest.length > 0) socket.write(rest);
          socket.on("data", (data: Buffer) => {
            conn.received += data.length;
            socket.write(data);
          });
          socket.on("end", () => socket.end());
          break;
        case "S":
          this.#stream(socket, conn, Infinity, () => {});
          break;
        case "R":
          this.#stream(socket, conn, 256 * 1024, reset);
          break;
        case "F":
          this.#stream(socket, conn, 256 * 1024, () => {
            cut.resolve(performance.now());
            socket.end(() => socket.destroy());
          });
          break;
        case "H":
          this.#stream(socket, conn, Infinity, () => {}, reset);
          break;
        case "P":
          socket.pause();
          break;
      }
    });
  }

  /** Streams `limit` bytes, then calls `then`; `held` is called if a write waits 500 ms. */
  #stream(
    socket: net.Socket,
    conn: BackendConn,
    limit: number,
    then: () => void,
    held?: () => void,
  ): void {
    const more = () => {
      while (!socket.destroyed && conn.sent < limit) {
        const chunk = CHUNK.subarray(0, Math.min(CHUNK.length, limit - conn.sent));
        conn.sent += chunk.length;
        if (!socket.write(chunk)) {
          const timer = held === undefined ? undefined : setTimeout(held, 500);
          return void socket.once("drain", () => {
            clearTimeout(timer);
            more();
          });
        }
      }
      if (!socket.destroyed) then();
    };
    more();
  }

  close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

/**
 * A node:net client (it can reset), with what it read and when the proxy closed it. It keeps a
 * checksum of what it read, or with `pattern` checks each byte against tests/faults/backend.ts's
 * stream (a byte's value is its offset modulo 251).
 */
class Client {
  readonly socket: net.Socket;
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  received = 0;
  checksum = 0x811c9dc5;
  /** Bytes that differed from the pattern. */
  wrong = 0;
  #onData: Array<() => void> = [];

  constructor(port: number, command: string, pattern = false) {
    this.socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    this.socket.on("error", () => {});
    this.opened = new Promise((resolve) => this.socket.once("connect", () => resolve()));
    this.closed = endOf(this.socket);
    this.socket.on("data", (data: Buffer) => {
      if (pattern) {
        for (let i = 0; i < data.length; i++) {
          if (data[i] !== (this.received + i) % 251) this.wrong++;
        }
      } else {
        this.checksum = fnv1a(data, this.checksum);
      }
      this.received += data.length;
      for (const wake of this.#onData.splice(0)) wake();
    });
    if (command !== "") this.socket.write(command);
  }

  /** Resolves once at least `bytes` have arrived; fails if the connection ends first. */
  async receive(bytes: number): Promise<void> {
    let ended = false;
    this.closed.then(() => {
      ended = true;
      for (const wake of this.#onData.splice(0)) wake();
    });
    while (this.received < bytes) {
      if (ended) throw new Error(`connection ended after ${this.received} of ${bytes} bytes`);
      await new Promise<void>((resolve) => this.#onData.push(resolve));
    }
  }
}

/** A client in echo mode, to show that other connections carry on untouched. */
class Survivor extends Client {
  #sent = 0;
  #sentChecksum = 0x811c9dc5;

  /** @param command "E" for the test's own backend; "" for one that only echoes. */
  constructor(port: number, command = "E") {
    super(port, command);
  }

  /** Sends `bytes` more and waits until all of it has come back; checks every byte. */
  async roundTrip(bytes: number): Promise<void> {
    const data = CHUNK.subarray(0, bytes);
    this.#sent += data.length;
    this.#sentChecksum = fnv1a(data, this.#sentChecksum);
    this.socket.write(data);
    await this.receive(this.#sent);
    equal(this.received, this.#sent);
    equal(this.checksum, this.#sentChecksum, "an unaffected connection's bytes arrived intact");
  }
}

async function openSurvivors(port: number, count: number, command = "E"): Promise<Survivor[]> {
  const survivors = Array.from({ length: count }, () => new Survivor(port, command));
  await Promise.all(survivors.map((s) => s.roundTrip(1024)));
  return survivors;
}

async function stillServing(survivors: Survivor[]): Promise<void> {
  await Promise.all(survivors.map((s) => s.roundTrip(CHUNK.length)));
}

/** How {@link withProxy} starts the proxy. */
interface ProxySetup {
  /** Proxy options before the target. */
  readonly args?: string[];
  /** Its environment. */
  readonly env?: Record<string, string>;
  /** Makes the first connection, which starts the proxy; by default an echo round trip. */
  readonly warm?: (port: number) => Promise<Client>;
}

async function echoWarmUp(port: number): Promise<Client> {
  const first = new Survivor(port);
  await first.roundTrip(1);
  return first;
}

/** Runs `body` against a proxy forwarding to `target`; checks the proxy survived it. */
async function withProxy(
  target: string,
  body: (port: number, proxy: LimitedProxy) => Promise<void>,
  setup: ProxySetup = {},
): Promise<void> {
  const port = freePort();
  const proxy = await startLimitedProxy({
    listen: [`127.0.0.1:${port}`],
    args: [...setup.args ?? [], target],
    env: setup.env,
  });
  try {
    const first = await (setup.warm ?? echoWarmUp)(port);
    await warmUp(proxy);
    const open = proxy.usage().fds;
    first.socket.destroy();
    await waitUntil(() => proxy.usage().fds <= open - 2, "the first connection to be released");
    await body(port, proxy);
    ok(await proxy.running(), "the proxy is still running");
    ok(!/panicked|Uncaught/.test(proxy.stderr), proxy.stderr);
  } finally {
    await proxy.stop();
  }
}

/** Waits for the proxy to hold exactly `connections` connections' worth of descriptors. */
async function settles(proxy: LimitedProxy, base: number, connections: number): Promise<void> {
  await waitUntil(
    () => proxy.usage().fds === base + 2 * connections,
    () =>
      `${connections} connections' descriptors (${base} + 2 × ${connections}, now ${proxy.usage().fds})`,
  );
}

function ms(t: number): string {
  return `${t.toFixed(0)} ms`;
}

// ---------------------------------------------------------------------------------------------

Deno.test("the backend resets or closes mid-transfer: the client is closed at once, others go on", async () => {
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage().fds;
    const survivors = await openSurvivors(port, 20);
    for (const command of ["R", "F"]) {
      const victims = Array.from({ length: 20 }, () => new Client(port, command));
      const ends = await backend.waitFor(command, victims.length);
      const backendClosed = await Promise.all(ends.map((c) => c.closed));
      const clientClosed = await Promise.all(
        victims.map((v) => within(v.closed, NEVER_MS, Infinity)),
      );
      const latest = Math.max(...clientClosed.map((t, i) => t - backendClosed[i]));
      ok(Number.isFinite(latest), `the clients were not closed after the backend's ${command}`);
      if (command === "F") {
        // A clean close delivers everything first.
        let expected = 0x811c9dc5;
        for (let i = 0; i < 4; i++) expected = fnv1a(CHUNK, expected);
        for (const v of victims) {
          equal(v.received, 4 * CHUNK.length);
          equal(v.checksum, expected, "the bytes before the close arrived intact");
        }
        // Half-close: the client may still send; once it ends too, the proxy lets go.
        for (const v of victims) v.socket.end();
      }
      await stillServing(survivors);
      await settles(proxy, base, survivors.length);
      report(
        `backend ${command === "R" ? "reset" : "close"} mid-transfer: 20 connections ` +
          `closed on the client side within ${ms(latest)}; 20 others intact`,
      );
    }
    for (const s of survivors) s.socket.end();
    await Promise.all(survivors.map((s) => s.closed));
    await settles(proxy, base, 0);
  });
  await backend.close();
});

Deno.test("the backend process dies mid-transfer: every client is closed at once, serving goes on", async () => {
  let backend = await BackendProcess.start("stream");
  try {
    await withProxy(backend.target, async (port, proxy) => {
      const base = proxy.usage().fds;
      const victims = Array.from({ length: 50 }, () => new Client(port, "S", true));
      await Promise.all(victims.map(async (v) => {
        await v.receive(256 * 1024);
        v.socket.pause(); // Hold the stream back rather than read gigabytes meanwhile.
      }));
      const killed = performance.now();
      await backend.kill("SIGKILL");
      for (const v of victims) v.socket.resume();
      const closed = await Promise.all(
        victims.map((v) => within(v.closed, NEVER_MS, Infinity)),
      );
      const latest = Math.max(...closed) - killed;
      ok(Number.isFinite(latest), "the clients were not closed after the backend's death");
      // What did arrive is the backend's stream, byte for byte, up to the cut.
      equal(victims.reduce((sum, v) => sum + v.wrong, 0), 0, "the bytes before the cut are intact");
      await settles(proxy, base, 0);
      // A backend that comes back is used again, without a restart of the proxy.
      backend = await BackendProcess.start("echo", backend.port);
      const after = await openSurvivors(port, 5, "");
      await stillServing(after);
      for (const s of after) s.socket.end();
      await Promise.all(after.map((s) => s.closed));
      await settles(proxy, base, 0);
      report(`backend killed mid-transfer: 50 streaming connections closed within ${ms(latest)}`);
    }, {
      warm: async (port) => {
        const first = new Client(port, "S");
        await first.receive(1);
        return first;
      },
    });
  } finally {
    await backend.kill();
  }
});

Deno.test("the client resets or goes away mid-transfer: the backend is closed at once, others go on", async () => {
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage().fds;
    const survivors = await openSurvivors(port, 20);
    for (const how of ["reset", "close"] as const) {
      const victims = Array.from({ length: 20 }, () => new Client(port, "S"));
      await Promise.all(victims.map((v) => v.receive(128 * 1024)));
      const ends = (await backend.waitFor("S", victims.length * (how === "reset" ? 1 : 2)))
        .slice(how === "reset" ? 0 : victims.length);
      const cut = performance.now();
      for (const v of victims) how === "reset" ? v.socket.resetAndDestroy() : v.socket.destroy();
      const closed = await Promise.all(ends.map((c) => within(c.closed, NEVER_MS, Infinity)));
      const latest = Math.max(...closed) - cut;
      ok(Number.isFinite(latest), `the backend sides were not closed after the clients' ${how}`);
      await stillServing(survivors);
      await settles(proxy, base, survivors.length);
      report(`client ${how} mid-transfer: 20 backend connections closed within ${ms(latest)}`);
    }
    for (const s of survivors) s.socket.end();
    await Promise.all(survivors.map((s) => s.closed));
    await settles(proxy, base, 0);
  });
  await backend.close();
});

/** Opens a connection whose backend never reads, and writes until the proxy stops taking. */
async function stuckClient(
  port: number,
  backend: CommandBackend,
): Promise<{ client: Client; written: number }> {
  const client = new Client(port, "P");
  await client.opened;
  await backend.waitFor("P", backend.conns.filter((c) => c.command === "P").length + 1);
  let written = 0;
  for (let i = 0; i < 4096; i++) {
    written += CHUNK.length;
    if (!client.socket.write(CHUNK)) {
      const drained = await within(new Promise((r) => client.socket.once("drain", r)), 500, false);
      if (drained === false) break;
    }
  }
  ok(written < 4096 * CHUNK.length, "the client was held back");
  return { client, written };
}

Deno.test("the backend stops reading: the client is held back in bounded memory, others go on; --idle-timeout ends it", async () => {
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage();
    const survivors = await openSurvivors(port, 10);
    const { client, written } = await stuckClient(port, backend);
    const [closedAt] = await Promise.all([within(client.closed, 0, null), stillServing(survivors)]);
    equal(closedAt, null, "a stuck connection is held, not dropped");
    const grown = proxy.usage().rssKiB - base.rssKiB;
    ok(grown < 64 * 1024, `the proxy buffered ${grown} KiB for a backend that does not read`);
    // Nothing moves either way, so the idle timeout closes both sides; the survivors' traffic
    // keeps theirs open.
    const stuckAt = performance.now();
    let over = false;
    const [closed] = await Promise.all([
      within(client.closed, 10_000, Infinity).finally(() => over = true),
      (async () => {
        while (!over) await stillServing(survivors);
      })(),
    ]);
    const after = closed - stuckAt;
    ok(after < 10_000, `--idle-timeout=1s closed the stuck connection (after ${ms(after)})`);
    await settles(proxy, base.fds, survivors.length);
    for (const s of survivors) s.socket.end();
    await Promise.all(survivors.map((s) => s.closed));
    await settles(proxy, base.fds, 0);
    report(
      `backend stops reading: client held back after ${(written / 1024 / 1024).toFixed(1)} MiB, ` +
        `proxy RSS +${grown} KiB; --idle-timeout=1s closed it after ${ms(after)}`,
    );
  }, { args: ["--idle-timeout=1s"] });
  await backend.close();
});

Deno.test("the backend stops reading and the client resets: both sides close at once", async () => {
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage().fds;
    const survivors = await openSurvivors(port, 10);
    const { client } = await stuckClient(port, backend);
    client.socket.resetAndDestroy();
    // Nothing reads the client while its data waits for the backend, and the backend does not
    // read: only the error epoll reports on the client can tell. The descriptors are released.
    const took = await waitUntil(
      () => proxy.usage().fds === base + 2 * survivors.length,
      () => `the stuck connection's descriptors to be released (${proxy.usage().fds} open)`,
      NEVER_MS,
    );
    await stillServing(survivors);
    for (const s of survivors) s.socket.end();
    await Promise.all(survivors.map((s) => s.closed));
    report(`backend stops reading, then the client resets: both sides closed within ${ms(took)}`);
  });
  await backend.close();
});

Deno.test("the backend stops reading and the client waits: --idle-timeout ends the stuck connection", async () => {
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage().fds;
    const { client } = await stuckClient(port, backend);
    const stuck = performance.now();
    await waitUntil(
      () => proxy.usage().fds === base,
      () => `the stuck connection's descriptors to be released (${proxy.usage().fds} open)`,
      NEVER_MS,
    );
    const took = performance.now() - stuck;
    client.socket.destroy();
    report(`--idle-timeout=1s: a stuck connection closed ${ms(took)} after it stuck`);
  }, { args: ["--idle-timeout=1s"] });
  await backend.close();
});

Deno.test("the client stops reading and the backend resets: both sides close at once", async () => {
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage().fds;
    const survivors = await openSurvivors(port, 10);
    const client = new Client(port, "H");
    client.socket.pause(); // reads nothing more once its buffer is full
    const [conn] = await backend.waitFor("H", 1);
    // The backend streams until it is held back, then resets. The proxy's write to the
    // client waits, so nothing reads the backend: only the error epoll reports can tell.
    const cut = await conn.cut;
    await waitUntil(
      () => proxy.usage().fds === base + 2 * survivors.length,
      () => `the held connection's descriptors to be released (${proxy.usage().fds} open)`,
      NEVER_MS,
    );
    const took = performance.now() - cut;
    await stillServing(survivors);
    for (const s of survivors) s.socket.end();
    await Promise.all(survivors.map((s) => s.closed));
    client.socket.destroy();
    report(
      `client stops reading, then the backend resets: both sides closed within ` +
        ms(took),
    );
  });
  await backend.close();
});

Deno.test("thousands of clients reset at once: all closed on the backend side, others go on", async () => {
  const COUNT = Number(Deno.env.get("RESET_COUNT") ?? 5_000);
  const backend = new CommandBackend();
  const target = await backend.listen();
  await withProxy(target, async (port, proxy) => {
    const base = proxy.usage().fds;
    const survivors = await openSurvivors(port, 50);
    const victims: Survivor[] = [];
    for (let i = 0; i < COUNT; i += 250) {
      const batch = Array.from({ length: Math.min(250, COUNT - i) }, () => new Survivor(port));
      await Promise.all(batch.map((v) => v.roundTrip(64)));
      victims.push(...batch);
    }
    await settles(proxy, base, survivors.length + COUNT);
    const ends = (await backend.waitFor("E", 1 + survivors.length + COUNT)).slice(-COUNT);
    const cut = performance.now();
    for (const v of victims) v.socket.resetAndDestroy();
    const closed = await Promise.all(ends.map((c) => within(c.closed, NEVER_MS, Infinity)));
    const latest = Math.max(...closed) - cut;
    ok(Number.isFinite(latest), `not all ${COUNT} backend sides were closed`);
    await stillServing(survivors);
    await settles(proxy, base, survivors.length);
    for (const s of survivors) s.socket.end();
    await Promise.all(survivors.map((s) => s.closed));
    await settles(proxy, base, 0);
    deepEqual(
      survivors.map((s) => s.received),
      survivors.map(() => 1024 + CHUNK.length),
    );
    report(
      `${COUNT} clients reset at once: all backend sides closed within ${ms(latest)}; ` +
        `50 others intact`,
    );
  }, { args: [`--connections-max=${COUNT + 100}`] });
  await backend.close();
});

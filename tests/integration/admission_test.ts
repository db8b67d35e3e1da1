/**
 * Admission through the real program: --when-full=wait (arrival order, never more than N at the
 * backend), --connections-per-source with clients from several loopback addresses, the refusal's
 * line written before the client sees the end, refusals counted in STATUS= and the stop line,
 * and HOST:* targets.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import net from "node:net";
import {
  Backend,
  DENO_RUN,
  echoBackend,
  expectClosed,
  freePort,
  MAIN,
  NotifyReceiver,
  ping,
  Process,
  readAll,
  runProxy,
  startProxy,
  tempSocketPath,
  writeAll,
} from "./harness.ts";

/** An echo backend that counts the connections it has at once (each counted out before its
 * end of stream goes back, so before the proxy can let the next client in). */
class CountingBackend {
  current = 0;
  peak = 0;
  /** The first byte of each connection, in the order they were accepted. */
  readonly firstBytes: number[] = [];
  readonly backend: Backend;

  constructor() {
    this.backend = new Backend(
      Deno.listen({ hostname: "127.0.0.1", port: 0 }),
      (conn) => this.#serve(conn),
    );
  }

  get target(): string {
    return `127.0.0.1:${(this.backend.listener.addr as Deno.NetAddr).port}`;
  }

  async #serve(conn: Deno.Conn): Promise<void> {
    this.peak = Math.max(this.peak, ++this.current);
    const buffer = new Uint8Array(4096);
    let first = true;
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        if (first) this.firstBytes.push(buffer[0]);
        first = false;
        await writeAll(conn, buffer.subarray(0, n));
      }
    } finally {
      this.current--;
    }
    await conn.closeWrite();
  }
}

/** A node:net client from `localAddress` (a loopback address), once connected. */
function connectFrom(localAddress: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress }, () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Sends `byte` and resolves with what comes back first: the byte, or null at the end. */
function echoOf(socket: net.Socket, byte: number): Promise<number | null> {
  return new Promise((resolve) => {
    const done = (value: number | null) => {
      socket.off("data", onData);
      socket.off("close", onEnd);
      socket.off("end", onEnd);
      resolve(value);
    };
    const onData = (data: Uint8Array) => done(data[0]);
    const onEnd = () => done(null);
    socket.on("data", onData);
    socket.once("end", onEnd);
    socket.once("close", onEnd);
    socket.on("error", () => {});
    socket.write(new Uint8Array([byte]));
  });
}

/** Resolves once the proxy closed `socket` without sending anything. */
function refused(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.on("error", () => {});
    socket.once("data", () => reject(new Error("a refused client got data")));
    socket.once("close", () => resolve());
  });
}

/** Waits for a STATUS= that matches `pattern`. */
async function status(receiver: NotifyReceiver, pattern: RegExp): Promise<string> {
  const message = await receiver.waitFor((m) => pattern.test(m.STATUS ?? ""));
  return message.STATUS;
}

/** A wrapper that sends the proxy's stderr to `file` (so a test can read it at any moment). */
function stderrTo(file: string): string[] {
  return ["sh", "-c", 'f=$1; shift; exec "$@" 2>"$f"', "sh", file];
}

Deno.test("--when-full=wait: a burst waits and is served in full, never more than -c at the backend", async () => {
  const backend = new CountingBackend();
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["-c", "3", "--when-full=wait", backend.target],
    env: { NOTIFY_SOCKET: receiver.address },
  });
  try {
    const holders = await Promise.all(
      ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map((address) => connectFrom(address, port)),
    );
    deepEqual(await Promise.all(holders.map((h, i) => echoOf(h, i))), [0, 1, 2]);
    // 60 more from five addresses, all at once: they wait while the three are held.
    const sources = ["127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", "127.0.0.9"];
    const burst = await Promise.all(
      Array.from({ length: 60 }, (_, i) => connectFrom(sources[i % sources.length], port)),
    );
    const replies = burst.map((socket, i) =>
      echoOf(socket, 10 + i).then((byte) => {
        socket.end();
        return byte;
      })
    );
    await status(receiver, /: 3 active, 60 waiting, 3 served$/);
    equal(backend.backend.accepted, 3, "the waiting clients have not reached the backend");
    for (const holder of holders) holder.end();
    deepEqual(await Promise.all(replies), Array.from({ length: 60 }, (_, i) => 10 + i));
    ok(backend.peak <= 3, `the backend had ${backend.peak} at once`);
    equal(backend.backend.accepted, 63);
    await status(receiver, /: 0 active, 0 waiting, 63 served$/);
    proxy.child.kill("SIGTERM");
    const { stderr } = await proxy.exit();
    ok(!stderr.includes("refus"), stderr);
    match(stderr, /at most 3 connections, more waiting in arrival order\./);
    match(stderr, /Stopped: 63 connection\(s\) served, none cut off\.\n/);
  } finally {
    await proxy.stop();
    await receiver.close();
    await backend.backend.close();
  }
});

Deno.test("--when-full=wait: waiting clients get the freed slots in arrival order", async () => {
  const backend = new CountingBackend();
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["-c", "1", "--when-full=wait", backend.target],
    env: { NOTIFY_SOCKET: receiver.address },
  });
  try {
    const holder = await connectFrom("127.0.0.2", port);
    equal(await echoOf(holder, 0), 0);
    const waiting: Array<Promise<number | null>> = [];
    for (const [i, address] of ["127.0.0.3", "127.0.0.4", "127.0.0.3", "127.0.0.5"].entries()) {
      const client = await connectFrom(address, port);
      await status(receiver, new RegExp(`: 1 active, ${i + 1} waiting,`));
      waiting.push(
        echoOf(client, i + 1).then((byte) => {
          client.end();
          return byte;
        }),
      );
    }
    holder.end();
    deepEqual(await Promise.all(waiting), [1, 2, 3, 4]);
    deepEqual(backend.firstBytes, [0, 1, 2, 3, 4], "the backend saw them in arrival order");
    equal(backend.peak, 1);
  } finally {
    await proxy.stop();
    await receiver.close();
    await backend.backend.close();
  }
});

Deno.test("--connections-per-source: over it from one address refused, logged; other addresses and Unix clients served", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const port = freePort();
  const path = tempSocketPath();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`, path],
    args: ["--connections-per-source=2", target],
  });
  try {
    const first = await connectFrom("127.0.0.2", port);
    const second = await connectFrom("127.0.0.2", port);
    equal(await echoOf(first, 1), 1);
    equal(await echoOf(second, 2), 2);
    const third = await connectFrom("127.0.0.2", port);
    await refused(third);
    await proxy.waitForLog(
      /Hit per-source connection limit, refusing connection from 127\.0\.0\.2:\d+ \(2 open or waiting from 127\.0\.0\.2\)/,
    );
    const other = await connectFrom("127.0.0.3", port);
    equal(await echoOf(other, 3), 3, "another address is served");
    // Unix clients are not counted per source: three at once are all served.
    const unix = await Promise.all([0, 1, 2].map(() => Deno.connect({ transport: "unix", path })));
    for (const [i, conn] of unix.entries()) ok(await ping(conn, 10 + i), `Unix client ${i}`);
    for (const conn of unix) conn.close();
    // A slot from 127.0.0.2 freed: it may connect again.
    first.end();
    let again = null;
    for (let attempt = 0; attempt < 50 && again !== 4; attempt++) {
      const next = await connectFrom("127.0.0.2", port);
      again = await echoOf(next, 4);
      next.end();
    }
    equal(again, 4);
    second.end();
    other.end();
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("--connections-per-source with --when-full=wait: over the source limit refused, not queued; refusals counted by reason", async () => {
  const backend = new CountingBackend();
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const port = freePort();
  const log = Deno.makeTempFileSync({ prefix: "socket-proxyd-test-" });
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["-c", "2", "--when-full=wait", "--connections-per-source=1", backend.target],
    env: { NOTIFY_SOCKET: receiver.address },
    wrapper: stderrTo(log),
  });
  try {
    const a = await connectFrom("127.0.0.2", port);
    const b = await connectFrom("127.0.0.3", port);
    deepEqual(await Promise.all([echoOf(a, 1), echoOf(b, 2)]), [1, 2]);
    const waiting = await connectFrom("127.0.0.4", port);
    const waited = echoOf(waiting, 3);
    await status(receiver, /: 2 active, 1 waiting, 2 served$/);
    const overSource = await connectFrom("127.0.0.2", port);
    await refused(overSource);
    // The line was written before the client saw its connection end.
    match(
      Deno.readTextFileSync(log),
      /Hit per-source connection limit, refusing connection from 127\.0\.0\.2:\d+ \(1 open or waiting from 127\.0\.0\.2\)/,
    );
    await status(
      receiver,
      /: 2 active, 1 waiting, 2 served, 1 refused \(0 over --connections-max, 1 over --connections-per-source\)$/,
    );
    a.end();
    equal(await waited, 3, "the waiting client is served once a slot frees");
    waiting.end();
    b.end();
    proxy.child.kill("SIGTERM");
    await proxy.exit();
    match(
      Deno.readTextFileSync(log),
      /Stopped: 3 connection\(s\) served, none cut off; 1 refused \(0 over --connections-max, 1 over --connections-per-source\)\.\n/,
    );
    ok(backend.peak <= 2);
  } finally {
    await proxy.stop();
    await receiver.close();
    await backend.backend.close();
    Deno.removeSync(log);
  }
});

Deno.test("a refusal at the limit: its line is written before the client sees the end", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const port = freePort();
  const log = Deno.makeTempFileSync({ prefix: "socket-proxyd-test-" });
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["-c", "1", target],
    wrapper: stderrTo(log),
  });
  try {
    // The process starts on the first connection: the refusal comes at once after it.
    const holder = await Deno.connect({ hostname: "127.0.0.1", port });
    const refusedConn = await Deno.connect({ hostname: "127.0.0.1", port });
    await expectClosed(refusedConn);
    refusedConn.close();
    match(Deno.readTextFileSync(log), /Hit connection limit, refusing connection \(1 open\)\n/);
    ok(await ping(holder, 1));
    holder.close();
  } finally {
    await proxy.stop();
    await backend.close();
    Deno.removeSync(log);
  }
});

/** A backend on 127.0.0.2 (port 0: any) that sends `name` and closes. */
function namedBackend(name: string, port = 0): Backend {
  return new Backend(Deno.listen({ hostname: "127.0.0.2", port }), async (conn) => {
    await writeAll(conn, new TextEncoder().encode(name));
    await conn.closeWrite();
  });
}

async function answer(port: number): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const text = new TextDecoder().decode(await readAll(conn));
  conn.close();
  return text;
}

const portOf = (backend: Backend) => (backend.listener.addr as Deno.NetAddr).port;

Deno.test("HOST:*: each listener forwards to its own port on HOST, positional and --target=NAME=HOST:*", async () => {
  const one = namedBackend("one");
  const two = namedBackend("two");
  const three = namedBackend("three");
  const proxy = await startProxy({
    listen: [`127.0.0.1:${portOf(one)}`, `127.0.0.1:${portOf(two)}`, `127.0.0.1:${portOf(three)}`],
    fdnames: ["a", "b", "c"],
    args: ["--target=c=127.0.0.2:*", "127.0.0.2:*"],
  });
  try {
    equal(await answer(portOf(one)), "one");
    equal(await answer(portOf(two)), "two");
    equal(await answer(portOf(three)), "three");
    await proxy.waitForLog(
      new RegExp(
        `127\\.0\\.0\\.1:${portOf(one)} \\(fd 3, "a"\\) to 127\\.0\\.0\\.2:${portOf(one)}`,
      ),
    );
  } finally {
    await proxy.stop();
    await Promise.all([one.close(), two.close(), three.close()]);
  }
});

Deno.test("HOST:* and a Unix listener: refused at start-up with the reason", async () => {
  const path = tempSocketPath();
  const proxy = await startProxy({ listen: [path], args: ["127.0.0.2:*"] });
  const conn = await Deno.connect({ transport: "unix", path }); // Starts the proxy.
  const { code, stderr } = await proxy.exit();
  conn.close();
  equal(code, 1);
  match(
    stderr,
    /Cannot serve the socket on fd 3 \("unknown"\): the target 127\.0\.0\.2:\* takes the listener's port, and this listener has none \(a Unix socket\); name the port: 127\.0\.0\.2:PORT \(TARGET=127\.0\.0\.2:PORT in a template instance's \.conf\)\./,
  );
  ok(!stderr.includes("Forwarding"), stderr);

  const own = tempSocketPath();
  const listened = await runProxy([`--listen=${own}`, "127.0.0.2:*"]);
  equal(listened.code, 1);
  match(
    listened.stderr,
    /Cannot serve --listen=\S+: the target 127\.0\.0\.2:\* takes the listener's port/,
  );
});

Deno.test("HOST:* under --listen: the own listener's port", async () => {
  const backend = namedBackend("own");
  const port = portOf(backend);
  const proxy = new Process(DENO_RUN[0], [
    ...DENO_RUN.slice(1),
    MAIN,
    `--listen=127.0.0.1:${port}`,
    "127.0.0.2:*",
  ]);
  try {
    await proxy.waitForLog(/Forwarding /);
    equal(await answer(port), "own");
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("--when-full=wait and SIGTERM: waiting clients are served during the drain; the rest closed at its end", async () => {
  const backend = new CountingBackend();
  for (const drain of ["5s", "300ms"]) {
    const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
    const port = freePort();
    const proxy = await startProxy({
      listen: [`127.0.0.1:${port}`],
      args: ["-c", "1", "--when-full=wait", `--drain-timeout=${drain}`, backend.target],
      env: { NOTIFY_SOCKET: receiver.address },
    });
    try {
      const holder = await connectFrom("127.0.0.2", port);
      equal(await echoOf(holder, 1), 1);
      const waiting = [await connectFrom("127.0.0.3", port), await connectFrom("127.0.0.4", port)];
      const replies = waiting.map((client, i) =>
        echoOf(client, 2 + i).then((byte) => {
          client.end();
          return byte;
        })
      );
      await status(receiver, /: 1 active, 2 waiting, 1 served$/);
      proxy.child.kill("SIGTERM");
      await proxy.waitForLog(
        /Received SIGTERM, stopping: no longer accepting; 1 connection\(s\) open and 2 waiting,/,
      );
      if (drain === "5s") {
        holder.end();
        deepEqual(await Promise.all(replies), [2, 3], "served during the drain");
        const { stderr } = await proxy.exit();
        match(stderr, /Stopped: 3 connection\(s\) served, none cut off\.\n/);
      } else {
        deepEqual(await Promise.all(replies), [null, null], "closed unserved at the end");
        const { stderr } = await proxy.exit();
        match(
          stderr,
          /Stopped: 1 connection\(s\) served, 1 still open and 2 still waiting after the drain timeout closed\.\n/,
        );
        holder.destroy();
      }
    } finally {
      await proxy.stop();
      await receiver.close();
    }
  }
  await backend.backend.close();
});

/**
 * inetd style, and where log lines go: a connection passed as standard input (Accept=yes with
 * StandardInput=socket, `systemd-socket-activate --inetd --accept`) is forwarded and the proxy
 * exits; log lines never reach a client, and a stderr that is not read never stalls forwarding.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  AS_JOURNAL_STREAM,
  Backend,
  DENO_RUN,
  freePort,
  MAIN,
  Process,
  pseudoRandomBytes,
  readAll,
  ROOT,
  roundTrip,
  sha256,
  startProxy,
  tempSocketPath,
  writeAll,
} from "./harness.ts";

const LAUNCHER = `${ROOT}tests/integration/stdio_launch.py`;

/** A backend that reads the client to its end, then answers with what it got and a payload. */
function answeringBackend(reply: Uint8Array): Backend & { got: Promise<string> } {
  const got = Promise.withResolvers<string>();
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    got.resolve(await sha256(await readAll(conn)));
    await writeAll(conn, reply);
    await conn.closeWrite();
  });
  return Object.assign(backend, { got: got.promise });
}

function targetOf(backend: Backend): string {
  return `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
}

/** Connects to a TCP port or Unix path, sends `payload`, half-closes, returns the reply. */
function exchange(address: string, payload: Uint8Array): Promise<Uint8Array> {
  return roundTrip(
    address.startsWith("/")
      ? { transport: "unix", path: address }
      : { hostname: "127.0.0.1", port: Number(address) },
    payload,
  ).catch(() => new Uint8Array(0)); // A reset: nothing came.
}

for (const kind of ["tcp", "unix"] as const) {
  Deno.test(`systemd-socket-activate --inetd --accept (${kind}): the connection on stdin is forwarded both ways with half-close, then the proxy exits 0`, async () => {
    const reply = pseudoRandomBytes(2_000_000, 5);
    const payload = pseudoRandomBytes(3_000_000, 9);
    const backend = answeringBackend(reply);
    const address = kind === "tcp" ? String(freePort()) : tempSocketPath("inetd.sock");
    const activator = await startProxy({
      listen: [kind === "tcp" ? `127.0.0.1:${address}` : address],
      activateFlags: ["--inetd", "--accept"],
      args: [targetOf(backend)],
    });
    const back = await exchange(address, payload);
    equal(back.length, reply.length);
    equal(await sha256(back), await sha256(reply), "the client got exactly the backend's bytes");
    equal(await backend.got, await sha256(payload), "the backend got exactly the client's bytes");
    await activator.waitForLog(/died with code 0/);
    match(activator.stderr, /Forwarding connection on fd 0 to 127\.0\.0\.1:\d+/);
    await activator.stop();
    await backend.close();
  });
}

Deno.test("systemd-socket-activate --inetd without --accept: a listening socket on stdin is refused with the fix, exit 1", async () => {
  const port = freePort();
  const activator = await startProxy({
    listen: [`127.0.0.1:${port}`],
    activateFlags: ["--inetd"],
    args: ["127.0.0.1:1"],
  });
  (await Deno.connect({ hostname: "127.0.0.1", port })).close(); // Starts it.
  const { code, stderr } = await activator.exit(); // (It execs the proxy: one process.)
  equal(code, 1);
  match(stderr, /fd 0 \(name "connection"\) is a listening socket, not a connection; .*Accept=yes/);
});

/**
 * Settles as `promise` does, or fails after `ms`: a guard against hanging, generous enough never
 * to decide a test that works (it fails one that would otherwise wait forever).
 */
function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Starts stdio_launch.py with the proxy, waits until it listens. */
async function launch(stderr: string, args: string[]): Promise<[Process, string]> {
  const port = String(freePort());
  const launcher = new Process(LAUNCHER, [
    `--listen=${port}`,
    `--stderr=${stderr}`,
    "--",
    ...DENO_RUN,
    MAIN,
    ...args,
  ]);
  await launcher.waitForLog(/^listening$/m);
  return [launcher, port];
}

Deno.test("stderr is the client's connection: the client gets exactly the backend's bytes, no log line, even with -v", async () => {
  const reply = new TextEncoder().encode("HTTP/1.0 200 OK\r\n\r\nbackend bytes only");
  const backend = answeringBackend(reply);
  const [launcher, port] = await launch("socket", ["-v", targetOf(backend)]);
  const back = await exchange(port, pseudoRandomBytes(100_000));
  deepEqual(new TextDecoder().decode(back), new TextDecoder().decode(reply));
  await launcher.waitForLog(/^exit 0$/m);
  await launcher.exit();
  await backend.close();
});

Deno.test("stderr is the client's connection: failures send nothing either (backend down, usage error)", async () => {
  for (const args of [["--connect-timeout=0", `127.0.0.1:${freePort()}`], ["--bogus", "x:1"]]) {
    const [launcher, port] = await launch("socket", args);
    const back = await exchange(port, new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
    equal(new TextDecoder().decode(back), "", `the client got: ${new TextDecoder().decode(back)}`);
    await launcher.waitForLog(/^exit 1$/m);
    await launcher.exit();
  }
});

Deno.test("stderr a full pipe that nobody reads: the connection on stdin is still forwarded, and the proxy exits", async () => {
  const reply = pseudoRandomBytes(1_000_000, 3);
  const backend = answeringBackend(reply);
  const [launcher, port] = await launch("full-pipe", ["-v", targetOf(backend)]);
  const back = await within(60_000, exchange(port, pseudoRandomBytes(1_000_000, 4)), "exchange");
  equal(await sha256(back), await sha256(reply));
  await launcher.waitForLog(/^exit 0$/m);
  await launcher.exit();
  await backend.close();
});

Deno.test("stderr a pipe that stops being read: 2,000 connections with -v are all served; the lines that did not fit are counted", async () => {
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    await writeAll(conn, new TextEncoder().encode("pong"));
    await conn.closeWrite();
    await readAll(conn);
  });
  const port = freePort();
  // stderr is piped and never read: after 64 KiB, every write to it would block.
  const activator = new Deno.Command("systemd-socket-activate", {
    args: [`--listen=127.0.0.1:${port}`, "--", ...DENO_RUN, MAIN, "-v", targetOf(backend)],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Read stderr until the activator listens, then no more.
  const reader = activator.stderr.getReader();
  let early = "";
  while (!early.includes("Listening on")) {
    const { value } = await reader.read();
    early += new TextDecoder().decode(value);
  }
  try {
    for (let round = 0; round < 40; round++) {
      const replies = await within(
        60_000,
        Promise.all(Array.from({ length: 50 }, async () => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.closeWrite();
          const text = new TextDecoder().decode(await readAll(conn));
          conn.close();
          return text;
        })),
        `round ${round}`,
      );
      ok(replies.every((r) => r === "pong"), `round ${round}: ${replies.join(",")}`);
    }
  } finally {
    activator.kill("SIGTERM");
    // Now read what was written: the start-up line, some per-connection lines, and a count.
    let stderr = early;
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      stderr += new TextDecoder().decode(chunk.value);
    }
    await activator.status;
    await backend.close();
    match(stderr, /Forwarding 127\.0\.0\.1:\d+/);
    match(stderr, /\d+ log line\(s\) dropped: stderr did not keep up\./);
  }
});

Deno.test("JOURNAL_STREAM that is not stderr's: plain lines, no syslog prefix", async () => {
  const backend = answeringBackend(new Uint8Array(1));
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [targetOf(backend)],
    env: { JOURNAL_STREAM: "8:12345" },
  });
  await exchange(String(port), new Uint8Array(1));
  await proxy.waitForLog(/^Forwarding 127\.0\.0\.1/m);
  ok(!/^<\d>/m.test(proxy.stderr), proxy.stderr);
  await proxy.stop();
  await backend.close();
});

Deno.test("JOURNAL_STREAM naming stderr: lines with syslog prefixes", async () => {
  const backend = answeringBackend(new Uint8Array(1));
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [targetOf(backend)],
    wrapper: AS_JOURNAL_STREAM,
  });
  await exchange(String(port), new Uint8Array(1));
  await proxy.waitForLog(/^<6>Forwarding 127\.0\.0\.1/m);
  await proxy.stop();
  await backend.close();
});

Deno.test("inetd style with stderr the journal's stream (a socket, as systemd makes it): logged there with prefixes, nothing to the client", async () => {
  const reply = new TextEncoder().encode("backend bytes only");
  const backend = answeringBackend(reply);
  const [launcher, port] = await launch("journal", ["-v", targetOf(backend)]);
  const back = await exchange(port, new Uint8Array(10));
  equal(new TextDecoder().decode(back), "backend bytes only");
  await launcher.waitForLog(/^exit 0$/m);
  const { stderr } = await launcher.exit();
  match(stderr, /^<6>Forwarding connection on fd 0 to 127\.0\.0\.1:\d+/m);
  match(stderr, /^<7>127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+: 10 bytes sent, 18 received/m);
  await backend.close();
});

/**
 * Limits and life cycle through the real binary: the exact connection limit, a backend that is
 * down and comes up, and --exit-idle-time.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  Backend,
  DENO_RUN,
  echo,
  echoBackend,
  expectClosed,
  freePort,
  MAIN,
  ping,
  Process,
  readAll,
  ROOT,
  startProxy,
  writeAll,
} from "./harness.ts";

const encoder = new TextEncoder();

Deno.test("--connections-max is exact: the N+1th client is closed, a freed slot is reused", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const proxy = await startProxy({ listen: [`127.0.0.1:${port}`], args: ["-c", "2", target] });
  try {
    const first = await Deno.connect({ hostname: "127.0.0.1", port });
    const second = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(first, 1));
    ok(await ping(second, 2));

    const third = await Deno.connect({ hostname: "127.0.0.1", port });
    await expectClosed(third);
    third.close();
    await proxy.waitForLog(/Hit connection limit, refusing connection \(2 open\)/);
    equal(backend.accepted, 2, "the refused client never reached the backend");

    // Free a slot; the slot is released once both directions have ended, so retry until then.
    await first.closeWrite();
    await expectClosed(first);
    first.close();
    let admitted = false;
    for (let attempt = 0; attempt < 50 && !admitted; attempt++) {
      const next = await Deno.connect({ hostname: "127.0.0.1", port });
      admitted = await ping(next, 3);
      next.close();
      if (!admitted) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    ok(admitted, "a client was admitted after a slot freed");
    ok(await ping(second, 4), "the other connection was untouched");
    second.close();
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("refusals under a flood are logged at most once a second, and every one is counted by the stop", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const proxy = await startProxy({ listen: [`127.0.0.1:${port}`], args: ["-c", "1", target] });
  try {
    const holder = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(holder, 1));
    for (let i = 0; i < 200; i++) {
      const refused = await Deno.connect({ hostname: "127.0.0.1", port });
      await expectClosed(refused);
      refused.close();
    }
    await proxy.waitForLog(/Hit connection limit/);
    proxy.child.kill("SIGTERM");
    holder.close();
    const { stderr } = await proxy.exit();
    const lines = stderr.split("\n").filter((l) => l.includes("Hit connection limit"));
    ok(lines.length >= 1 && lines.length <= 20, `rate-limited, got ${lines.length} lines`);
    // Each line is one refusal or a count of them: together, all 200.
    const counted = lines.reduce(
      (sum, line) => sum + Number(/: (\d+) more connection\(s\) refused/.exec(line)?.[1] ?? 1),
      0,
    );
    equal(counted, 200, lines.join("\n"));
    match(
      stderr,
      /Stopped: 1 connection\(s\) served, none cut off; 200 refused \(200 over --connections-max, 0 over --connections-per-source\)\./,
    );
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("a backend that is down: the client is closed, logged, and serving goes on", async () => {
  const backendPort = freePort();
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--connect-timeout=0", `127.0.0.1:${backendPort}`],
  });
  try {
    const early = await Deno.connect({ hostname: "127.0.0.1", port });
    await expectClosed(early);
    early.close();
    await proxy.waitForLog(
      new RegExp(
        `Failed to connect to 127\\.0\\.0\\.1:${backendPort} for 127\\.0\\.0\\.1:\\d+: .*refused`,
        "i",
      ),
    );
    const backend = echoBackend({ hostname: "127.0.0.1", port: backendPort });
    const late = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(late, 42), "served once the backend is up");
    late.close();
    await backend.close();
  } finally {
    await proxy.stop();
  }
});

Deno.test("an unresolvable backend name: the client is closed, logged, and serving goes on", async () => {
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--connect-timeout=0", "no-such-host.invalid:80"],
  });
  try {
    for (let i = 0; i < 2; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await expectClosed(conn);
      conn.close();
    }
    await proxy.waitForLog(
      /Failed to connect to no-such-host\.invalid:80 .*cannot resolve no-such-host\.invalid/,
    );
  } finally {
    await proxy.stop();
  }
});

Deno.test("failures to connect are logged at most once a second; the rest are counted in a line when the second is over", async () => {
  const backendPort = freePort();
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--connect-timeout=0", `127.0.0.1:${backendPort}`],
  });
  try {
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await expectClosed(conn);
      conn.close();
    }
    const quick = performance.now() - started < 1000;
    // No further failure: the count comes by itself once the second is over.
    await proxy.waitForLog(
      /Failed to connect: \d+ more connection\(s\) failed since the last message\./,
    );
    const lines = proxy.stderr.split("\n").filter((line) => line.startsWith("Failed to connect"));
    if (quick) {
      // All 20 fell in the first second: one line for the first, one with the count of the rest.
      equal(lines.length, 2, lines.join("\n"));
      match(lines[0], /^Failed to connect to 127\.0\.0\.1:\d+ for 127\.0\.0\.1:\d+: /);
      equal(lines[1], "Failed to connect: 19 more connection(s) failed since the last message.");
    } else {
      ok(lines.length < 20, `${lines.length} lines for 20 failures`);
    }
  } finally {
    await proxy.stop();
  }
});

Deno.test("--exit-idle-time: held open while a connection is, exits 0 once idle for the span", async () => {
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), echo);
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--exit-idle-time=300ms", target],
  });
  let exited = false;
  proxy.child.status.then(() => exited = true);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  // Three spans with a connection open: no exit.
  await new Promise((resolve) => setTimeout(resolve, 900));
  equal(exited, false, "exited while a connection was open");
  ok(await ping(conn, 2));
  conn.close();
  const started = performance.now();
  const { code, stderr } = await proxy.exit();
  const waited = performance.now() - started;
  equal(code, 0);
  match(stderr, /Exiting after 300ms without connections\./);
  ok(waited >= 250, `exited ${waited.toFixed(0)} ms after the last close`);
  await backend.close();
});

Deno.test("--exit-idle-time is armed at start-up: no client at all, exit 0", async () => {
  // systemd-socket-activate only starts us on a connection; pass a socket by hand instead.
  const launcher = `${ROOT}tests/integration/listen_fds.py`;
  const proxy = new Process(launcher, [
    `--tcp=${freePort()}`,
    "--",
    ...DENO_RUN,
    MAIN,
    "--exit-idle-time=200ms",
    "127.0.0.1:1",
  ]);
  const { code, stderr } = await proxy.exit();
  equal(code, 0);
  deepEqual(stderr.split("\n").filter((l) => l.startsWith("Exiting")), [
    "Exiting after 200ms without connections.",
  ]);
});

Deno.test("the payload of a refused client is never forwarded", async () => {
  const seen: string[] = [];
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    seen.push(new TextDecoder().decode(await readAll(conn)));
  });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const proxy = await startProxy({ listen: [`127.0.0.1:${port}`], args: ["-c", "1", target] });
  try {
    const holder = await Deno.connect({ hostname: "127.0.0.1", port });
    await backend.waitForAccepted(1);
    const refused = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(refused, encoder.encode("refused")).catch(() => {});
    await expectClosed(refused);
    refused.close();
    await writeAll(holder, encoder.encode("holder"));
    await holder.closeWrite();
    await expectClosed(holder); // The backend has read everything and closed.
    holder.close();
  } finally {
    await proxy.stop();
    await backend.close();
  }
  deepEqual(seen, ["holder"]);
});

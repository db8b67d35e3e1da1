/**
 * Service-manager integration through the real binary: sd_notify readiness, status, stopping and
 * watchdog against a real receiver; graceful stop; --listen; Accept=yes; journal-style logs.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { REPEAT_WINDOW_MS } from "../../src/service/signals.ts";
import {
  AS_JOURNAL_STREAM,
  Backend,
  DENO_RUN,
  echo,
  echoBackend,
  expectClosed,
  freePort,
  MAIN,
  NotifyReceiver,
  ping,
  Process,
  readAll,
  ROOT,
  startProxy,
  tempSocketPath,
  writeAll,
} from "./harness.ts";

const LAUNCHER = `${ROOT}tests/integration/listen_fds.py`;
const encoder = new TextEncoder();

function backendTarget(backend: Backend): string {
  return `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
}

Deno.test("sd_notify: READY=1 with STATUS, live STATUS updates, STOPPING=1 on SIGTERM", async () => {
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [backendTarget(backend)],
    env: { NOTIFY_SOCKET: receiver.address },
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  const ready = await receiver.waitFor((m) => m.READY === "1");
  match(ready.STATUS, /^Forwarding to 127\.0\.0\.1:\d+: [01] active, [01] served$/);
  await receiver.waitFor((m) => /: 1 active, 1 served$/.test(m.STATUS ?? ""));
  conn.close();
  await receiver.waitFor((m) => /: 0 active, 1 served$/.test(m.STATUS ?? ""));
  proxy.child.kill("SIGTERM");
  const stopping = await receiver.waitFor((m) => m.STOPPING === "1");
  equal(stopping.STATUS, "Stopping: 0 active, 1 served");
  equal((await proxy.exit()).code, 0);
  equal(receiver.messages.filter((m) => m.READY === "1").length, 1);
  ok(receiver.raw.every((text) => text.split("\n").every((l) => l === "" || l.includes("="))));
  await receiver.close();
  await backend.close();
});

Deno.test("sd_notify to a socket path (allowed by a flag), and a watchdog at half the period", async () => {
  const path = tempSocketPath("notify.sock");
  const receiver = new NotifyReceiver(path);
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [backendTarget(backend)],
    env: { NOTIFY_SOCKET: path, WATCHDOG_USEC: "300000" },
    denoFlags: [`--allow-write=${path}`],
  });
  (await Deno.connect({ hostname: "127.0.0.1", port })).close();
  await receiver.waitFor((m) => m.READY === "1");
  const first = receiver.messages.length;
  // WATCHDOG=1 every 150 ms: three of them arrive.
  for (let i = 0; i < 3; i++) {
    const seen = receiver.messages.length;
    await receiver.waitFor((m) => m.WATCHDOG === "1", Math.max(first, seen));
  }
  await proxy.stop();
  await receiver.close();
  await backend.close();
});

Deno.test("sd_notify: no WATCHDOG=1 when WATCHDOG_PID names another process", async () => {
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["127.0.0.1:1"],
    env: { NOTIFY_SOCKET: receiver.address, WATCHDOG_USEC: "100000", WATCHDOG_PID: "1" },
  });
  (await Deno.connect({ hostname: "127.0.0.1", port })).close();
  await receiver.waitFor((m) => m.READY === "1");
  await new Promise((resolve) => setTimeout(resolve, 400)); // Four periods, proving an absence.
  equal(receiver.messages.filter((m) => m.WATCHDOG === "1").length, 0);
  await proxy.stop();
  await receiver.close();
});

Deno.test("sd_notify that is not permitted: one warning, serving goes on", async () => {
  const path = tempSocketPath("notify.sock");
  const receiver = new NotifyReceiver(path);
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [backendTarget(backend)],
    env: { NOTIFY_SOCKET: path },
  });
  for (let i = 0; i < 3; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(conn, i));
    conn.close();
  }
  await proxy.waitForLog(/Cannot notify the service manager, giving up: .*--allow-write=/);
  equal(proxy.stderr.match(/Cannot notify/g)?.length, 1);
  equal(receiver.messages.length, 0);
  await proxy.stop();
  await receiver.close();
  await backend.close();
});

Deno.test("SIGTERM: stops accepting, lets open connections finish, exits 0", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({ listen: [`127.0.0.1:${port}`], args: [backendTarget(backend)] });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  proxy.child.kill("SIGTERM");
  await proxy.waitForLog(/Received SIGTERM, stopping: no longer accepting; 1 connection\(s\) open/);
  ok(await ping(conn, 2), "the open connection still works while draining");
  await conn.closeWrite();
  await expectClosed(conn);
  conn.close();
  const { code, stderr } = await proxy.exit();
  equal(code, 0);
  match(stderr, /Stopped: 1 connection\(s\) served, none cut off\./);
  await backend.close();
});

Deno.test("SIGINT with --drain-timeout: what is still open then is closed, exit 0", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--drain-timeout=300ms", backendTarget(backend)],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  proxy.child.kill("SIGINT");
  await expectClosed(conn); // Closed by the proxy once the drain timeout has passed.
  conn.close();
  const { code, stderr } = await proxy.exit();
  equal(code, 0);
  match(stderr, /Stopped: 1 connection\(s\) served, 1 still open after the drain timeout closed\./);
  await backend.close();
});

Deno.test("copies of the signal that come with it are one request: the drain goes on", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--drain-timeout=1h", backendTarget(backend)],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  proxy.child.kill("SIGINT");
  await proxy.waitForLog(/Received SIGINT, stopping/);
  // As the copies from the terminal and from `deno task` come: within milliseconds.
  proxy.child.kill("SIGINT");
  proxy.child.kill("SIGTERM");
  ok(await ping(conn, 2), `the client is still served:\n${proxy.stderr}`);
  conn.close();
  const { code, stderr } = await proxy.exit();
  equal(code, 0);
  match(stderr, /Stopped: 1 connection\(s\) served, none cut off\./);
  ok(!stderr.includes("again"), stderr);
  await backend.close();
});

Deno.test("a second signal, after the copies of the first could come, exits at once", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--drain-timeout=1h", backendTarget(backend)],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  proxy.child.kill("SIGTERM");
  await proxy.waitForLog(/Received SIGTERM, stopping/);
  await new Promise((resolve) => setTimeout(resolve, REPEAT_WINDOW_MS + 100));
  proxy.child.kill("SIGTERM");
  const { code, stderr } = await proxy.exit();
  equal(code, 0);
  match(stderr, /Received SIGTERM again, exiting at once\./);
  conn.close();
  await backend.close();
});

Deno.test("after a stop the passed listener is intact: the service manager accepts the next client", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const held = new Process(LAUNCHER, [
    `--tcp=${port}`,
    "--hold",
    "--",
    ...DENO_RUN,
    MAIN,
    backendTarget(backend),
  ]);
  await held.waitForLog(/listening on 127\.0\.0\.1:\d+/);
  const pid = Number((await held.waitForLog(/pid \d+/)).slice(4));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  conn.close();
  await held.waitForLog(/Forwarding 127\.0\.0\.1:\d+/);
  Deno.kill(pid, "SIGTERM");
  await held.waitForLog(/no longer accepting/);
  // This client arrives after the proxy stopped accepting: it waits in the listen queue.
  const next = await Deno.connect({ hostname: "127.0.0.1", port });
  equal(new TextDecoder().decode(await readAll(next)), "from the service manager");
  next.close();
  const { code, stdout: out } = await held.exit();
  equal(code, 0);
  match(out, /exit 0\naccepted after exit/);
  await backend.close();
});

Deno.test("--listen without socket activation: TCP and a Unix path we create and remove", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const path = tempSocketPath("own.sock");
  const proxy = new Process(DENO_RUN[0], [
    ...DENO_RUN.slice(1),
    `--allow-read=${path}`,
    `--allow-write=${path}`,
    MAIN,
    `--listen=127.0.0.1:${port}`,
    `--listen=${path}`,
    backendTarget(backend),
  ]);
  await proxy.waitForLog(/Forwarding 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+, \/.*own\.sock to 127/);
  const tcp = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(tcp, 1));
  tcp.close();
  const unix = await Deno.connect({ transport: "unix", path });
  ok(await ping(unix, 2));
  unix.close();
  proxy.child.kill("SIGTERM");
  equal((await proxy.exit()).code, 0);
  let exists = true;
  try {
    Deno.lstatSync(path);
  } catch {
    exists = false;
  }
  equal(exists, false, "our own Unix socket is removed on exit");
  await backend.close();
});

Deno.test("--listen replaces a stale Unix socket file but not a live one", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const path = tempSocketPath("stale.sock");
  Deno.listen({ transport: "unix", path }).close(); // Leaves the file, nobody listening.
  const flags = [`--allow-read=${path}`, `--allow-write=${path}`];
  const proxy = new Process(DENO_RUN[0], [
    ...DENO_RUN.slice(1),
    ...flags,
    MAIN,
    `--listen=${path}`,
    backendTarget(backend),
  ]);
  await proxy.waitForLog(/Forwarding .*stale\.sock to/);
  const second = new Process(DENO_RUN[0], [
    ...DENO_RUN.slice(1),
    ...flags,
    MAIN,
    `--listen=${path}`,
    backendTarget(backend),
  ]);
  const { code, stderr } = await second.exit();
  equal(code, 1);
  match(stderr, /Cannot listen on .*stale\.sock: Address already in use/);
  const unix = await Deno.connect({ transport: "unix", path });
  ok(await ping(unix, 3), "the first proxy still serves");
  unix.close();
  proxy.child.kill("SIGTERM");
  equal((await proxy.exit()).code, 0);
  await backend.close();
});

Deno.test("passed sockets win over --listen, which is then ignored with a notice", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const unused = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [`--listen=127.0.0.1:${unused}`, backendTarget(backend)],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  conn.close();
  await proxy.waitForLog(/Sockets were passed in, so --listen is ignored\./);
  let refused = false;
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port: unused })).close();
  } catch {
    refused = true;
  }
  ok(refused, "nothing listens on the --listen address");
  await proxy.stop();
  await backend.close();
});

Deno.test("Accept=yes: each connection gets its own instance, which exits 0 when done", async () => {
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    const request = await readAll(conn);
    await writeAll(conn, encoder.encode(`got ${request.length} bytes`));
    await conn.closeWrite();
  });
  // systemd names Accept=yes sockets "connection"; a TCP one is recognised even unnamed.
  const cases = [[`127.0.0.1:${freePort()}`, undefined], [tempSocketPath("accept.sock"), [
    "connection",
  ]]];
  for (const [listen, fdnames] of cases as Array<[string, string[] | undefined]>) {
    const activator = await startProxy({
      listen: [listen],
      fdnames,
      activateFlags: ["--accept"],
      args: [backendTarget(backend)],
    });
    for (let i = 0; i < 2; i++) {
      const conn = listen.startsWith("/")
        ? await Deno.connect({ transport: "unix", path: listen })
        : await Deno.connect({ hostname: "127.0.0.1", port: Number(listen.split(":")[1]) });
      await writeAll(conn, new Uint8Array(5000 + i));
      await conn.closeWrite();
      equal(new TextDecoder().decode(await readAll(conn)), `got ${5000 + i} bytes`);
      conn.close();
    }
    await activator.waitForLog(/died with code 0[^]*died with code 0/);
    match(activator.stderr, /Forwarding connection on fd 3 to 127\.0\.0\.1:\d+/);
    await activator.stop();
  }
  await backend.close();
});

Deno.test("Accept=yes with the backend down: the instance exits 1", async () => {
  const port = freePort();
  const activator = await startProxy({
    listen: [`127.0.0.1:${port}`],
    activateFlags: ["--accept"],
    args: ["--connect-timeout=0", `127.0.0.1:${freePort()}`],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await expectClosed(conn);
  conn.close();
  await activator.waitForLog(/died with code 1/);
  await activator.stop();
});

Deno.test("logs: syslog priority prefixes when stderr is the journal's stream, a line per connection with -v", async () => {
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), echo);
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["-v", "-c", "1", backendTarget(backend)],
    wrapper: AS_JOURNAL_STREAM,
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await writeAll(conn, new Uint8Array(1234));
  const refused = await Deno.connect({ hostname: "127.0.0.1", port });
  await expectClosed(refused);
  refused.close();
  await conn.closeWrite();
  equal((await readAll(conn)).length, 1234);
  conn.close();
  await proxy.waitForLog(
    /<7>127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+: 1234 bytes sent, 1234 received, [\d.]+s, closed/,
  );
  const lines = proxy.stderr.split("\n").filter((l) => l.startsWith("<"));
  ok(lines.some((l) => l.startsWith("<6>Forwarding 127.0.0.1:")), lines.join("\n"));
  ok(lines.some((l) => l.startsWith("<4>Hit connection limit")), lines.join("\n"));
  proxy.child.kill("SIGTERM");
  await proxy.exit();
  deepEqual(
    proxy.stderr.split("\n").filter((l) => l.includes("Stopped:")).map((l) => l.slice(0, 3)),
    ["<6>"],
  );
  await backend.close();
});

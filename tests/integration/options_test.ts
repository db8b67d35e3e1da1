/**
 * The options operators ask for, through the real binary with real consumers: PROXY protocol
 * (nginx, haproxy), waiting for a starting backend, idle timeouts, keepalive, several targets.
 */
import { equal, match, ok } from "node:assert/strict";
import { startHaproxy, startNginx } from "./consumers.ts";
import {
  Backend,
  DENO_RUN,
  echoBackend,
  expectClosed,
  freePort,
  MAIN,
  ping,
  Process,
  readAll,
  ROOT,
  startProxy,
  tempSocketPath,
  writeAll,
} from "./harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sends an HTTP/1.0 request on `conn` and returns the response body. */
async function httpGet(conn: Deno.Conn): Promise<string> {
  await writeAll(conn, encoder.encode("GET / HTTP/1.0\r\nHost: test\r\n\r\n"));
  const response = decoder.decode(await readAll(conn));
  conn.close();
  match(response, /^HTTP\/1\.[01] 200/);
  return response.slice(response.indexOf("\r\n\r\n") + 4).trim();
}

for (const version of ["v1", "v2"]) {
  Deno.test(`PROXY protocol ${version} to nginx: it sees the real client address`, async () => {
    const nginx = await startNginx(freePort());
    const [v4, v6] = [freePort(), freePort("::1")];
    const proxy = await startProxy({
      listen: [`127.0.0.1:${v4}`, `[::1]:${v6}`],
      args: [`--proxy-protocol=${version}`, `127.0.0.1:${nginx.port}`],
    });
    try {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: v4 });
      const { port } = client.localAddr as Deno.NetAddr;
      equal(await httpGet(client), `127.0.0.1 ${port}`);
      const client6 = await Deno.connect({ hostname: "::1", port: v6 });
      const port6 = (client6.localAddr as Deno.NetAddr).port;
      equal(await httpGet(client6), `::1 ${port6}`);
    } finally {
      await proxy.stop();
      await nginx.stop();
    }
  });
}

Deno.test("PROXY protocol v2 to haproxy (accept-proxy): it sees the real client address", async () => {
  const haproxy = await startHaproxy(freePort());
  const listen = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${listen}`],
    args: ["--proxy-protocol=v2", `127.0.0.1:${haproxy.port}`],
  });
  try {
    for (let i = 0; i < 2; i++) {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listen });
      const { port } = client.localAddr as Deno.NetAddr;
      equal(await httpGet(client), `127.0.0.1 ${port}`);
    }
  } finally {
    await proxy.stop();
    await haproxy.stop();
  }
});

Deno.test("PROXY protocol for a Unix client: v1 UNKNOWN (nginx), v2 LOCAL (haproxy)", async () => {
  const nginx = await startNginx(freePort());
  const haproxy = await startHaproxy(freePort());
  const [v1, v2] = [tempSocketPath("pp1.sock"), tempSocketPath("pp2.sock")];
  const proxies = [
    await startProxy({ listen: [v1], args: ["--proxy-protocol=v1", `127.0.0.1:${nginx.port}`] }),
    await startProxy({ listen: [v2], args: ["--proxy-protocol=v2", `127.0.0.1:${haproxy.port}`] }),
  ];
  try {
    // nginx has no address to report; haproxy falls back to the connection's own addresses.
    equal(await httpGet(await Deno.connect({ transport: "unix", path: v1 })), "");
    match(await httpGet(await Deno.connect({ transport: "unix", path: v2 })), /^127\.0\.0\.1 \d+$/);
  } finally {
    for (const proxy of proxies) await proxy.stop();
    await nginx.stop();
    await haproxy.stop();
  }
});

Deno.test("PROXY protocol header bytes arrive before any client byte, exactly once", async () => {
  const seen = Promise.withResolvers<Uint8Array>();
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    seen.resolve(await readAll(conn));
  });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--proxy-protocol=v1", `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`],
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  const local = (client.localAddr as Deno.NetAddr).port;
  await writeAll(client, encoder.encode("client bytes"));
  await client.closeWrite();
  equal(
    decoder.decode(await seen.promise),
    `PROXY TCP4 127.0.0.1 127.0.0.1 ${local} ${port}\r\nclient bytes`,
  );
  client.close();
  await proxy.stop();
  await backend.close();
});

Deno.test("--connect-timeout: a backend that starts after the client arrived still serves it", async () => {
  const backendPort = freePort();
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--connect-timeout=10s", `127.0.0.1:${backendPort}`],
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  await proxy.waitForLog(/Forwarding 127\.0\.0\.1/); // Running, and retrying for this client.
  const backend = echoBackend({ hostname: "127.0.0.1", port: backendPort });
  ok(await ping(client, 7), "served once the backend came up");
  client.close();
  equal(proxy.stderr.includes("Failed to connect"), false);
  await proxy.stop();
  await backend.close();
});

Deno.test("--connect-timeout: when it runs out, the client is closed and it is logged", async () => {
  const backendPort = freePort();
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["--connect-timeout=400ms", `127.0.0.1:${backendPort}`],
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = performance.now();
  await expectClosed(client);
  const waited = performance.now() - started;
  client.close();
  ok(waited >= 300, `closed after ${waited.toFixed(0)} ms, before the window ran out`);
  await proxy.waitForLog(/Failed to connect to 127\.0\.0\.1:\d+ for 127\.0\.0\.1:\d+: .*refused/i);
  await proxy.stop();
});

Deno.test("--idle-timeout: a silent connection is closed on both sides; a busy one is not", async () => {
  const backendSaw = Promise.withResolvers<string>();
  let first = true;
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    const mine = first;
    first = false;
    const buffer = new Uint8Array(64);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      await writeAll(conn, buffer.subarray(0, n));
    }
    if (mine) backendSaw.resolve("closed");
  });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: [
      "-v",
      "--idle-timeout=300ms",
      `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`,
    ],
  });
  const silent = await Deno.connect({ hostname: "127.0.0.1", port });
  await backend.waitForAccepted(1);
  const busy = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = performance.now();
  const closed = expectClosed(silent).then(() => performance.now() - started);
  for (let i = 0; i < 8; i++) { // 800 ms of traffic every 100 ms
    ok(await ping(busy, i), `busy connection alive at round ${i}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const silentFor = await closed;
  ok(
    silentFor >= 250 && silentFor < 800,
    `silent connection closed after ${silentFor.toFixed(0)} ms`,
  );
  equal(await backendSaw.promise, "closed");
  await proxy.waitForLog(/aborted \(IdleTimeout: no traffic for 300 ms\)/);
  silent.close();
  busy.close();
  await proxy.stop();
  await backend.close();
});

/** The keepalive timers `ss` shows for established TCP sockets matching `filter`. */
async function keepaliveTimers(filter: string): Promise<string[]> {
  const output = await new Deno.Command("ss", {
    args: ["-tnoH", "state", "established", filter],
  }).output();
  return decoder.decode(output.stdout).split("\n").filter((l) => l.trim() !== "");
}

for (const keepalive of [true, false]) {
  Deno.test(`TCP keepalive is ${keepalive ? "on by default" : "off with --no-keepalive"}, both sides`, async () => {
    const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
    const backendPort = (backend.listener.addr as Deno.NetAddr).port;
    const port = freePort();
    const proxy = await startProxy({
      listen: [`127.0.0.1:${port}`],
      args: [...keepalive ? [] : ["--no-keepalive"], `127.0.0.1:${backendPort}`],
    });
    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(client, 1));
    // The proxy's end of each connection: the client side has source port `port`, the backend
    // side has destination port `backendPort` (and is not the backend's own socket).
    const clientSide = await keepaliveTimers(`( sport = :${port} )`);
    const backendSide = await keepaliveTimers(`( dport = :${backendPort} )`);
    equal(clientSide.length, 1, clientSide.join("\n"));
    equal(backendSide.length, 1, backendSide.join("\n"));
    for (const line of [...clientSide, ...backendSide]) {
      equal(line.includes("timer:(keepalive"), keepalive, line);
    }
    client.close();
    await proxy.stop();
    await backend.close();
  });
}

Deno.test("--target=NAME=TARGET: each passed socket goes to its own target", async () => {
  const named = (name: string) => async (conn: Deno.Conn) => {
    await writeAll(conn, encoder.encode(name));
    await conn.closeWrite();
    await readAll(conn);
  };
  const web = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), named("web"));
  const adminPath = tempSocketPath("admin.sock");
  const admin = new Backend(Deno.listen({ transport: "unix", path: adminPath }), named("admin"));
  const fallback = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), named("fallback"));
  const ports = [freePort(), freePort(), freePort()];
  const proxy = await startProxy({
    listen: ports.map((p) => `127.0.0.1:${p}`),
    fdnames: ["web", "admin", "other"],
    args: [
      `--target=web=127.0.0.1:${(web.listener.addr as Deno.NetAddr).port}`,
      `--target=admin=${adminPath}`,
      `127.0.0.1:${(fallback.listener.addr as Deno.NetAddr).port}`,
    ],
    denoFlags: [`--allow-read=${adminPath}`, `--allow-write=${adminPath}`],
  });
  try {
    for (
      const [port, expected] of [[ports[0], "web"], [ports[1], "admin"], [
        ports[2],
        "fallback",
      ]] as const
    ) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.closeWrite();
      equal(decoder.decode(await readAll(conn)), expected);
      conn.close();
    }
    await proxy.waitForLog(/\(fd 4, "admin"\) to \/.*admin\.sock/);
  } finally {
    await proxy.stop();
    await Promise.all([web.close(), admin.close(), fallback.close()]);
  }
});

Deno.test("--target: a passed socket whose name has no target is an error at start-up", async () => {
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`, `127.0.0.1:${freePort()}`],
    fdnames: ["web", "admin"],
    args: ["--target=web=127.0.0.1:1", "--target=typo=127.0.0.1:2"],
  });
  (await Deno.connect({ hostname: "127.0.0.1", port })).close();
  const { code, stderr } = await proxy.exit();
  equal(code, 1);
  match(stderr, /No target for the socket named "admin" \(fd 4\); give --target=admin=TARGET/);
});

Deno.test("--target naming no passed socket is warned about", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    fdnames: ["web"],
    args: [`--target=web=${target}`, `--target=typo=${target}`],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  conn.close();
  await proxy.waitForLog(/No passed socket is named "typo"; --target=typo=\.\.\. is unused\./);
  await proxy.stop();
  await backend.close();
});

Deno.test("LISTEN_FDNAMES with ':' in a name (a template unit's name) is served, unnamed", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    fdnames: ["socket-proxyd@127.0.0.1:8092.socket"],
    args: [`127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(conn, 1));
  conn.close();
  await proxy.waitForLog(/\(fd 3, "unknown"\) to 127\.0\.0\.1:\d+/);
  await proxy.stop();
  await backend.close();
});

Deno.test("LISTEN_FDNAMES that gives no name per fd: --target=NAME= fails, saying why", async () => {
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    fdnames: ["socket-proxyd@127.0.0.1:8092.socket"],
    args: ["--target=web=127.0.0.1:1", "127.0.0.1:2"],
  });
  (await Deno.connect({ hostname: "127.0.0.1", port })).close();
  const { code, stderr } = await proxy.exit();
  equal(code, 1);
  match(
    stderr,
    /--target=web=\.\.\. picks a socket by its name, but the passed sockets have no usable names: LISTEN_FDNAMES="socket-proxyd@127\.0\.0\.1:8092\.socket" splits at ':' into 2 names for 1 socket\(s\)/,
  );
});

Deno.test("vsock:CID:PORT target: dialled through AF_VSOCK", async () => {
  // This machine has no vsock loopback transport, so the connection cannot succeed here; what
  // is proven is that the target parses, passes the permission check and is dialled as vsock.
  const port = freePort();
  const proxy = new Process(`${ROOT}tests/integration/listen_fds.py`, [
    `--tcp=${port}`,
    "--",
    ...DENO_RUN,
    MAIN,
    "--connect-timeout=0",
    "vsock:1:9",
  ]);
  await proxy.waitForLog(/Forwarding 127\.0\.0\.1:\d+ \(fd 3, "unknown"\) to vsock:1:9/);
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  await expectClosed(client);
  client.close();
  await proxy.waitForLog(/Failed to connect to vsock:1:9 for 127\.0\.0\.1:\d+: /);
  await proxy.stop();
});

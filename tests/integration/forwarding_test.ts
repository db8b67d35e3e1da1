/**
 * Forwarding through the real binary, started by systemd-socket-activate, to real backends:
 * every target kind, every listener kind, half-close, integrity, concurrency, resets.
 */
import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import net from "node:net";
import {
  Backend,
  echoBackend,
  expectClosed,
  freePort,
  type Process,
  pseudoRandomBytes,
  readAll,
  readExactly,
  roundTrip,
  sha256,
  startProxy,
  tempSocketPath,
  writeAll,
} from "./harness.ts";

async function withProxy(
  proxyStart: Parameters<typeof startProxy>[0],
  body: (proxy: Process) => Promise<void>,
): Promise<void> {
  const proxy = await startProxy(proxyStart);
  try {
    await body(proxy);
  } finally {
    await proxy.stop();
  }
}

Deno.test(`TCP IPv4 target: bytes echo back exactly`, async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async (proxy) => {
    const payload = pseudoRandomBytes(100_000);
    assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
    await proxy.waitForLog(/Forwarding 127\.0\.0\.1:\d+ \(fd 3, "unknown"\) to 127\.0\.0\.1:\d+/);
  });
  await backend.close();
});

Deno.test(`bulk integrity: 64 MiB each way at once`, async () => {
  const size = 64 * 1024 * 1024;
  const up = pseudoRandomBytes(size, 7);
  const down = pseudoRandomBytes(size, 11);
  let receivedHash = "";
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    const [received] = await Promise.all([
      readAll(conn),
      writeAll(conn, down).then(() => conn.closeWrite()),
    ]);
    receivedHash = await sha256(received);
  });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const back = await roundTrip({ hostname: "127.0.0.1", port }, up);
    assertEquals(back.length, size);
    assertEquals(await sha256(back), await sha256(down));
  });
  await backend.close();
  assertEquals(receivedHash, await sha256(up));
});

Deno.test(`half-close, client first: the reply still arrives`, async () => {
  // The backend reads to end of stream, then answers: only works if our EOF is a half-close.
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    const request = await readAll(conn);
    await writeAll(conn, new TextEncoder().encode(`got ${request.length} bytes`));
    await conn.closeWrite();
  });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const back = await roundTrip({ hostname: "127.0.0.1", port }, pseudoRandomBytes(300_000));
    assertEquals(new TextDecoder().decode(back), "got 300000 bytes");
  });
  await backend.close();
});

Deno.test(`half-close, backend first: the client can still send`, async () => {
  const late = Promise.withResolvers<string>();
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    await writeAll(conn, new TextEncoder().encode("banner"));
    await conn.closeWrite(); // Done talking, still listening.
    late.resolve(new TextDecoder().decode(await readAll(conn)));
  });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    assertEquals(new TextDecoder().decode(await readAll(conn)), "banner"); // EOF seen...
    await writeAll(conn, new TextEncoder().encode("written after the backend's EOF"));
    await conn.closeWrite();
    assertEquals(await late.promise, "written after the backend's EOF");
    conn.close();
  });
  await backend.close();
});

Deno.test(`300 concurrent connections each echo their own bytes`, async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy(
    { listen: [`127.0.0.1:${port}`], args: ["--connections-max=300", target] },
    async () => {
      const results = await Promise.all(
        Array.from({ length: 300 }, async (_, i) => {
          const payload = pseudoRandomBytes(10_000 + i, i + 1);
          const back = await roundTrip({ hostname: "127.0.0.1", port }, payload);
          return back.length === payload.length && back.every((b, j) => b === payload[j]);
        }),
      );
      assertEquals(results.filter((ok) => !ok).length, 0);
    },
  );
  await backend.close();
});

Deno.test(`a client reset closes the backend connection promptly`, async () => {
  const backendDone = Promise.withResolvers<string>();
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    try {
      await readAll(conn);
      backendDone.resolve("closed");
    } catch (e) {
      backendDone.resolve((e as Error).name);
    }
  });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const client = net.connect({ host: "127.0.0.1", port });
    await new Promise((resolve) => client.once("connect", resolve));
    client.write("some bytes, then a reset");
    await backend.waitForAccepted(1);
    client.resetAndDestroy();
    assert(["closed", "ConnectionReset"].includes(await backendDone.promise));
  });
  await backend.close();
});

Deno.test(`a backend reset closes the client promptly`, async () => {
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    await readExactly(conn, 5);
    // Unread data pending at close makes the kernel send a reset.
    await new Promise((resolve) => setTimeout(resolve, 50));
  });
  const port = freePort();
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await writeAll(conn, new TextEncoder().encode("hello and more that nobody reads"));
    await expectClosed(conn);
    conn.close();
  });
  await backend.close();
});

Deno.test("TCP IPv6 target in brackets", async () => {
  const backend = echoBackend({ hostname: "::1", port: 0 });
  const port = freePort();
  const target = `[::1]:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const payload = pseudoRandomBytes(5000);
    assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
  });
  await backend.close();
});

Deno.test("TCP IPv6 target in the reference's unbracketed form", async () => {
  const backend = echoBackend({ hostname: "::1", port: 0 });
  const port = freePort();
  const target = `::1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const payload = pseudoRandomBytes(5000);
    assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
  });
  await backend.close();
});

Deno.test("host name target is resolved", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const target = `localhost:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [target] }, async () => {
    const payload = pseudoRandomBytes(5000);
    assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
  });
  await backend.close();
});

Deno.test("Unix socket path target", async () => {
  const path = tempSocketPath("backend.sock");
  const backend = echoBackend({ transport: "unix", path });
  const port = freePort();
  await withProxy(
    {
      listen: [`127.0.0.1:${port}`],
      args: [path],
      denoFlags: [`--allow-read=${path}`, `--allow-write=${path}`],
    },
    async () => {
      const payload = pseudoRandomBytes(200_000);
      assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
    },
  );
  await backend.close();
});

Deno.test("abstract Unix socket target", async () => {
  const name = `socket-proxyd-test-${crypto.randomUUID()}`;
  const backend = echoBackend({ transport: "unix", path: `\0${name}` });
  const port = freePort();
  await withProxy({ listen: [`127.0.0.1:${port}`], args: [`@${name}`] }, async () => {
    const payload = pseudoRandomBytes(200_000);
    assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
  });
  await backend.close();
});

Deno.test("IPv6 listener", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort("::1");
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`[::1]:${port}`], args: [target] }, async (proxy) => {
    const payload = pseudoRandomBytes(5000);
    assertEquals(await roundTrip({ hostname: "::1", port }, payload), payload);
    await proxy.waitForLog(new RegExp(`Forwarding \\[::1\\]:${port} \\(fd 3`));
  });
  await backend.close();
});

Deno.test("Unix listener (path), named by its path in the log, with the client half-closing first", async () => {
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    const request = await readAll(conn);
    await writeAll(conn, new TextEncoder().encode(`got ${request.length} bytes`));
    await conn.closeWrite();
  });
  const path = tempSocketPath("listen.sock");
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [path], args: [target] }, async (proxy) => {
    const back = await roundTrip({ transport: "unix", path }, pseudoRandomBytes(1_000_000));
    assertEquals(new TextDecoder().decode(back), "got 1000000 bytes");
    await proxy.waitForLog(new RegExp(`Forwarding ${RegExp.escape(path)} \\(fd 3`));
    // The passed socket's path is the service manager's: we never unlink it.
    assert(Deno.statSync(path).isSocket);
  });
  await backend.close();
});

Deno.test("abstract Unix listener", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const name = `socket-proxyd-listen-${crypto.randomUUID()}`;
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy({ listen: [`@${name}`], args: [target] }, async (proxy) => {
    const payload = pseudoRandomBytes(50_000);
    assertEquals(await roundTrip({ transport: "unix", path: `\0${name}` }, payload), payload);
    await proxy.waitForLog(new RegExp(`Forwarding @${name} \\(fd 3`));
  });
  await backend.close();
});

Deno.test("two passed sockets are both served, with their names in the log", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const [a, b] = [freePort(), freePort()];
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  await withProxy(
    { listen: [`127.0.0.1:${a}`, `127.0.0.1:${b}`], fdnames: ["web", "alt"], args: [target] },
    async (proxy) => {
      for (const port of [a, b, a]) {
        const payload = pseudoRandomBytes(1000, port);
        assertEquals(await roundTrip({ hostname: "127.0.0.1", port }, payload), payload);
      }
      await proxy.waitForLog(/\(fd 3, "web"\).*\(fd 4, "alt"\)/);
    },
  );
  await backend.close();
});

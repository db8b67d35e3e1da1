import { equal, ok, rejects } from "node:assert/strict";
import { dial, dialWithRetry } from "../src/dial.ts";

function freePort(hostname: string): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test("dial tries every resolved address in order until one connects", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const tried: string[] = [];
  const accepted = listener.accept();
  // ::1 comes first (as for "localhost" on many systems) but nothing listens there.
  const conn = await dial({ kind: "tcp", host: "backend.test", port }, (host) => {
    tried.push(host);
    return Promise.resolve(["::1", "127.0.0.1"]);
  });
  equal((conn.remoteAddr as Deno.NetAddr).hostname, "127.0.0.1");
  equal(tried.join(), "backend.test");
  conn.close();
  (await accepted).close();
  listener.close();
});

Deno.test("dial reports the last address's error when none connects", async () => {
  const port = freePort("127.0.0.1");
  await rejects(
    dial({ kind: "tcp", host: "backend.test", port }, () => Promise.resolve(["127.0.0.1"])),
    Deno.errors.ConnectionRefused,
  );
  await rejects(
    dial({ kind: "tcp", host: "backend.test", port }, () => Promise.resolve([])),
    /backend\.test has no addresses/,
  );
});

Deno.test("dial resolves real names with the system resolver", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const accepted = listener.accept();
  const conn = await dial({ kind: "tcp", host: "localhost", port });
  conn.close();
  (await accepted).close();
  listener.close();
});

Deno.test("dial connects IP literals, Unix paths and abstract names without resolving", async () => {
  const never = () => Promise.reject(new Error("must not resolve"));
  const v6 = Deno.listen({ hostname: "::1", port: 0 });
  const dir = Deno.makeTempDirSync();
  const unix = Deno.listen({ transport: "unix", path: `${dir}/s.sock` });
  const name = `dial-test-${crypto.randomUUID()}`;
  const abstract = Deno.listen({ transport: "unix", path: `\0${name}` });
  for (
    const [listener, target] of [
      [v6, { kind: "tcp", host: "::1", port: (v6.addr as Deno.NetAddr).port }],
      [unix, { kind: "unix", path: `${dir}/s.sock` }],
      [abstract, { kind: "abstract", name }],
    ] as const
  ) {
    const accepted = listener.accept();
    const conn = await dial(target, never);
    conn.close();
    (await accepted).close();
    listener.close();
  }
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("dialWithRetry: waits for a backend that starts listening late", async () => {
  const port = freePort("127.0.0.1");
  let attempts = 0;
  let listener: Deno.Listener | null = null;
  const conn = await dialWithRetry({ kind: "tcp", host: "127.0.0.1", port }, 5000, (target) => {
    attempts++;
    // The backend comes up after two refused attempts.
    if (attempts === 3) listener = Deno.listen({ hostname: "127.0.0.1", port });
    return dial(target);
  });
  equal(attempts, 3, "two refused attempts, then the one that connects");
  conn.close();
  (listener as Deno.Listener | null)?.close();
});

Deno.test("dialWithRetry: gives up after the timeout with the last error", async () => {
  const port = freePort("127.0.0.1");
  const started = performance.now();
  await rejects(
    dialWithRetry({ kind: "tcp", host: "127.0.0.1", port }, 200),
    Deno.errors.ConnectionRefused,
  );
  const waited = performance.now() - started;
  ok(waited >= 150 && waited < 2000, `waited ${waited} ms`);
});

Deno.test("dialWithRetry: 0 tries exactly once", async () => {
  let attempts = 0;
  await rejects(
    dialWithRetry({ kind: "tcp", host: "127.0.0.1", port: 1 }, 0, () => {
      attempts++;
      return Promise.reject(new Deno.errors.ConnectionRefused("refused"));
    }),
    Deno.errors.ConnectionRefused,
  );
  equal(attempts, 1);
});

Deno.test("dialWithRetry: a permission error is not retried", async () => {
  for (const error of [Deno.errors.NotCapable, Deno.errors.PermissionDenied]) {
    let attempts = 0;
    await rejects(
      dialWithRetry({ kind: "unix", path: "/nope" }, 5000, () => {
        attempts++;
        return Promise.reject(new error("no"));
      }),
      error,
    );
    equal(attempts, 1);
  }
});

Deno.test("dialWithRetry: running out of file descriptors is retried until they free up", async () => {
  const port = freePort("127.0.0.1");
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  let attempts = 0;
  const conn = await dialWithRetry({ kind: "tcp", host: "127.0.0.1", port }, 5000, (target) => {
    attempts++;
    if (attempts < 3) {
      const error = Object.assign(new Error("Too many open files (os error 24)"), {
        code: "EMFILE",
      });
      return Promise.reject(error);
    }
    return dial(target);
  });
  equal(attempts, 3);
  conn.close();
  listener.close();
});

Deno.test("dialWithRetry: an attempt that hangs is cut off at the deadline", async () => {
  const never = () => new Promise<Deno.Conn>(() => {});
  await rejects(
    dialWithRetry({ kind: "tcp", host: "192.0.2.1", port: 9 }, 100, never),
    Deno.errors.TimedOut,
  );
});

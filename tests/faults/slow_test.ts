/**
 * Faults: slow clients, through the real proxy. A client that does not read while the backend
 * sends gigabytes holds the backend back instead of growing the proxy's memory, and then gets
 * every byte; a client that connects and sends nothing is held without a leak, closed by
 * `--idle-timeout` when one is set, and released as soon as it goes away.
 */
import { equal, ok } from "node:assert/strict";
import { createHash } from "node:crypto";
import { Backend, echo, freePort, pseudoRandomBytes } from "../integration/harness.ts";
import {
  closeQuietly,
  drain,
  type LimitedProxy,
  mib,
  portOf,
  report,
  startLimitedProxy,
  type Usage,
  waitUntil,
  warmUp,
  within,
} from "./helpers.ts";

const CHUNK = pseudoRandomBytes(1024 * 1024, 11);
/** What the backend sends to the client that does not read: "gigabytes". */
const BULK = 2 * 1024 * 1024 * 1024;
/** The proxy may grow by this much at most while forwarding it (its buffers are 1 MiB). */
const MAX_GROWTH_KIB = 64 * 1024;

/**
 * Starts the proxy in front of `target` with a first connection, which it then closes.
 * @returns the proxy, its port, and its usage once that connection is released.
 */
async function proxyFor(
  backend: Backend,
  args: string[] = [],
): Promise<[LimitedProxy, number, Usage]> {
  const port = freePort();
  const target = `127.0.0.1:${portOf(backend.listener.addr)}`;
  const proxy = await startLimitedProxy({ listen: [`127.0.0.1:${port}`], args: [...args, target] });
  const first = await Deno.connect({ hostname: "127.0.0.1", port });
  await warmUp(proxy);
  await backend.waitForAccepted(1);
  const open = proxy.usage().fds;
  first.close();
  await waitUntil(() => proxy.usage().fds <= open - 2, "the first connection to be released");
  return [proxy, port, proxy.usage()];
}

Deno.test("a client that does not read while the backend sends gigabytes: bounded memory, every byte", async () => {
  let sent = 0;
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    if ((await conn.read(new Uint8Array(1))) === null) return; // The warm-up connection.
    while (sent < BULK) {
      const at = sent % CHUNK.length; // A write may take part of what it was given.
      sent += await conn.write(CHUNK.subarray(at, Math.min(CHUNK.length, at + BULK - sent)));
    }
    await conn.closeWrite();
  });
  const [proxy, port, base] = await proxyFor(backend);
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port });
    await client.write(new Uint8Array([1]));

    // The client does not read: the backend is held back once the buffers on the way are full.
    let last = -1;
    await waitUntil(
      () => {
        const stalled = sent > 0 && sent === last;
        last = sent;
        return stalled;
      },
      "the backend to be held back",
      10_000,
      300,
    );
    const held = sent;
    ok(held < 256 * 1024 * 1024, `the backend was held back after ${mib(held)}`);
    let peak = proxy.usage().rssKiB - base.rssKiB;

    // Now it reads everything; every byte is checked, and the proxy stays small throughout.
    const hash = createHash("sha256");
    const sampler = setInterval(() => {
      peak = Math.max(peak, proxy.usage().rssKiB - base.rssKiB);
    }, 50);
    const started = performance.now();
    const { bytes, reset } = await drain(
      client,
      (chunk) => hash.update(chunk),
      new Uint8Array(1024 * 1024),
    );
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);
    client.close();
    equal(reset, false);
    equal(bytes, BULK, "every byte arrived");
    const expected = createHash("sha256");
    for (let done = 0; done < BULK; done += CHUNK.length) expected.update(CHUNK);
    equal(hash.digest("hex"), expected.digest("hex"), "every byte arrived intact");
    ok(peak < MAX_GROWTH_KIB, `the proxy grew by ${peak} KiB at most`);
    report(
      `client not reading while the backend sends ${mib(BULK)}: backend held back after ` +
        `${mib(held)}, proxy RSS +${(peak / 1024).toFixed(1)} MiB at most; then ${mib(bytes)} ` +
        `verified (SHA-256) in ${seconds.toFixed(1)} s`,
    );
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

/** Resolves with the time an echo backend saw its client's end of stream, for each connection. */
function watchedEcho(): { backend: Backend; ended: number[] } {
  const ended: number[] = [];
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    await echo(conn).catch(() => {});
    ended.push(performance.now());
  });
  return { backend, ended };
}

Deno.test("clients that connect and send nothing: held without a leak, released when they go", async () => {
  const SILENT = 500;
  const { backend, ended } = watchedEcho();
  const [proxy, port, base] = await proxyFor(backend, [
    "-c",
    "1000",
  ]);
  const silent: Deno.Conn[] = [];
  try {
    await waitUntil(() => ended.length === 1, "the warm-up connection to end");
    for (let i = 0; i < SILENT; i++) {
      silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    }
    await backend.waitForAccepted(1 + SILENT);
    await waitUntil(
      () => proxy.usage().fds === base.fds + 2 * SILENT,
      () => `${SILENT} silent connections held (${proxy.usage().fds} fds)`,
    );
    // Held: nothing closes them while they wait (no idle timeout is set).
    const reads = silent.map((conn) => drain(conn));
    equal(await within(Promise.race(reads), 2_000, "held"), "held");
    equal(ended.length, 1, "no backend connection was closed");
    const perConnection = (proxy.usage().rssKiB - base.rssKiB) / SILENT;

    // They go away (half by FIN, half by a plain close): both sides are released at once.
    const left = performance.now();
    silent.forEach((conn, i) => i % 2 === 0 ? conn.closeWrite() : conn.close());
    await waitUntil(
      () => ended.length === 1 + SILENT,
      () => `backends closed (${ended.length - 1})`,
    );
    const backendsClosed = Math.max(...ended.slice(1)) - left;
    await waitUntil(
      () => proxy.usage().fds === base.fds,
      () => `descriptors back to ${base.fds} (${proxy.usage().fds})`,
    );
    ok(backendsClosed < 2_000, `backend sides closed ${backendsClosed.toFixed(0)} ms after`);
    report(
      `${SILENT} silent clients: held 2 s without a timeout (${perConnection.toFixed(1)} KiB ` +
        `each), all backend sides closed ${backendsClosed.toFixed(0)} ms after they left; ` +
        `fds ${base.fds} before and after`,
    );
  } finally {
    for (const conn of silent) closeQuietly(conn);
    await proxy.stop();
    await backend.close();
  }
});

Deno.test({
  name: "a client that connects and sends nothing is closed on both sides by --idle-timeout",
  fn: async () => {
    const { backend, ended } = watchedEcho();
    const [proxy, port, base] = await proxyFor(backend, [
      "--idle-timeout=1s",
    ]);
    try {
      await waitUntil(() => ended.length === 1, "the warm-up connection to end");
      const busy = await Deno.connect({ hostname: "127.0.0.1", port });
      const silent = await Deno.connect({ hostname: "127.0.0.1", port });
      const opened = performance.now();
      const closed = drain(silent).then(() => performance.now());
      // The busy connection keeps talking and outlives the silent one.
      let silentClosedAt = 0;
      closed.then((t) => silentClosedAt = t);
      const buffer = new Uint8Array(1);
      for (let i = 0; i < 100 && silentClosedAt === 0; i++) {
        await busy.write(new Uint8Array([i]));
        equal(await busy.read(buffer), 1);
        await new Promise((resolve) => setTimeout(resolve, 50)); // Traffic every 50 ms.
      }
      const after = (await within(closed, 5_000, Infinity)) - opened;
      ok(
        after >= 900 && after < 3_000,
        `the silent client was closed after ${after.toFixed(0)} ms`,
      );
      await waitUntil(() => ended.length === 2, "its backend side to be closed");
      await busy.write(new Uint8Array([7]));
      equal(await busy.read(buffer), 1, "the busy connection is still served");
      await waitUntil(
        () => proxy.usage().fds === base.fds + 2,
        () => `only the busy connection to be left (${proxy.usage().fds} fds)`,
      );
      busy.close();
      silent.close();
      report(
        `silent client with --idle-timeout=1s: closed on both sides after ${after.toFixed(0)} ms`,
      );
    } finally {
      await proxy.stop();
      await backend.close();
    }
  },
});

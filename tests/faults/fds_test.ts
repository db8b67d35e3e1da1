/**
 * Fault: file descriptors run out. The real proxy runs under `ulimit -n 64` and gets far more
 * clients than it has descriptors for: it must not crash, must not spin on a listener that
 * keeps waking, and must serve again as soon as descriptors are free (an accept that fails with
 * EMFILE rests its listener for a moment, see src/engine/streams.ts). Covers a passed TCP
 * listener, a passed Unix listener and the proxy's own `--listen` socket.
 */
import { equal, ok } from "node:assert/strict";
import { echoBackend, freePort, tempSocketPath, writeAll } from "../integration/harness.ts";
import {
  CLOCK_TICKS,
  closeQuietly,
  type LimitedProxy,
  report,
  startLimitedProxy,
  waitUntil,
  warmUp,
  within,
} from "./helpers.ts";

/** The proxy's limit on open files: Deno itself holds about 25. */
const NOFILE = 64;
/** Clients thrown at it at once: several times what the limit lets it serve. */
const FLOOD = 100;
/** A listener that keeps waking would burn a whole core; allow a twentieth of one. */
const MAX_CPU_SHARE = 0.05;

type Address = { hostname: string; port: number } | { transport: "unix"; path: string };

/** A client that sent one byte; `answer` settles when the proxy echoes it or closes. */
interface Client {
  readonly conn: Deno.Conn;
  readonly answer: Promise<"served" | "closed">;
}

/** Connects and sends one byte; the answer is the echo (served) or an end or reset (closed). */
async function client(address: Address): Promise<Client> {
  const conn = await Deno.connect(address as Deno.ConnectOptions);
  const buffer = new Uint8Array(1);
  const answer = writeAll(conn, new Uint8Array([42]))
    .then(() => conn.read(buffer))
    .then((n) => n === 1 && buffer[0] === 42 ? "served" as const : "closed" as const)
    .catch(() => "closed" as const);
  return { conn, answer };
}

/** A fresh client's answer within `ms`, or "waiting". */
async function tryClient(address: Address, ms: number): Promise<string> {
  const { conn, answer } = await client(address);
  try {
    return await within(answer, ms, "waiting");
  } finally {
    closeQuietly(conn);
  }
}

async function exhaustAndRecover(
  label: string,
  address: Address,
  start: (target: string) => Promise<LimitedProxy>,
): Promise<void> {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
  const proxy = await start(target);
  const flood: Client[] = [];
  try {
    equal(await tryClient(address, 10_000), "served", "the proxy serves before the fault");
    await warmUp(proxy);
    const limit = proxy.fdLimit();
    equal(limit, NOFILE, "the proxy runs under the descriptor limit");
    const base = proxy.usage();

    // The fault: far more clients than descriptors, all at once, all kept open.
    flood.push(...await Promise.all(Array.from({ length: FLOOD }, () => client(address))));
    await waitUntil(
      () => proxy.usage().fds >= limit - 1,
      () => `the proxy to run out of descriptors (${proxy.usage().fds} of ${limit} open)`,
    );
    const early = await Promise.all(flood.map((c) => within(c.answer, 1_000, "waiting")));
    const servedEarly = early.filter((o) => o === "served").length;
    const queued = early.filter((o) => o === "waiting").length;
    ok(queued > FLOOD / 2, `the limit held clients back (${servedEarly} served at once)`);

    // Out of descriptors: alive, and idle rather than spinning on a listener that keeps waking.
    const before = proxy.usage().cpuTicks;
    const window = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // A measuring window.
    const spent = (proxy.usage().cpuTicks - before) / CLOCK_TICKS;
    const share = spent / ((performance.now() - window) / 1000);
    ok(share < MAX_CPU_SHARE, `CPU use while out of descriptors: ${(share * 100).toFixed(0)}%`);
    ok(await proxy.running(), "the proxy survived running out of descriptors");

    // Descriptors free up as answered clients leave: every queued client is answered in turn,
    // each closing as soon as it has its answer, and then a new client is served at once.
    const freed = performance.now();
    let firstQueuedServed = Infinity;
    const answers = await within(
      Promise.all(flood.map(async (c, i) => {
        const answer = await c.answer;
        if (early[i] === "waiting" && answer === "served") {
          firstQueuedServed = Math.min(firstQueuedServed, performance.now() - freed);
        }
        closeQuietly(c.conn);
        return answer;
      })),
      30_000,
      null,
    );
    ok(answers !== null, `every queued client was answered once descriptors were freed (${label})`);
    const served = answers.filter((a) => a === "served").length;
    ok(served > servedEarly, `queued clients were served (${served - servedEarly} of ${queued})`);
    const drained = performance.now() - freed;
    equal(await tryClient(address, 5_000), "served", "a new client is served");
    ok(await proxy.running());

    // Nothing leaked, and nothing spins once idle.
    await waitUntil(
      () => proxy.usage().fds <= base.fds,
      () => `the proxy's descriptors to return to ${base.fds} (now ${proxy.usage().fds})`,
    );
    const idleBefore = proxy.usage().cpuTicks;
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // A measuring window.
    const idle = (proxy.usage().cpuTicks - idleBefore) / CLOCK_TICKS;
    ok(idle < MAX_CPU_SHARE, `idle CPU use after recovery: ${(idle * 100).toFixed(0)}%`);
    ok(!/panicked|Uncaught/.test(proxy.stderr), proxy.stderr);
    report(
      `fds exhausted (${label}): limit ${limit}, ${FLOOD} clients at once, ${servedEarly} ` +
        `served at once, ${queued} queued; CPU ${(share * 100).toFixed(0)}% while out of fds; ` +
        `first queued client served ${firstQueuedServed.toFixed(0)} ms after fds began to ` +
        `free, all ${FLOOD} answered in ${drained.toFixed(0)} ms (${served} served, ` +
        `${FLOOD - served} refused); fds ${base.fds} before, ${proxy.usage().fds} after`,
    );
  } finally {
    for (const c of flood) closeQuietly(c.conn);
    await proxy.stop();
    await backend.close();
  }
}

Deno.test("out of file descriptors, passed TCP listener: no crash, no spin, serves again", async () => {
  const port = freePort();
  await exhaustAndRecover(
    "passed TCP listener",
    { hostname: "127.0.0.1", port },
    (target) =>
      startLimitedProxy({
        listen: [`127.0.0.1:${port}`],
        args: ["-c", "1000", target],
        nofile: NOFILE,
      }),
  );
});

Deno.test("out of file descriptors, passed Unix listener: no crash, no spin, serves again", async () => {
  const path = tempSocketPath("fds.sock");
  await exhaustAndRecover(
    "passed Unix listener",
    { transport: "unix", path },
    (target) => startLimitedProxy({ listen: [path], args: ["-c", "1000", target], nofile: NOFILE }),
  );
  // The replaced listener never unlinks the path the service manager owns.
  ok(Deno.lstatSync(path).isSocket, "the passed socket's path is still there");
});

Deno.test("out of file descriptors, own --listen socket: no crash, no spin, serves again", async () => {
  const port = freePort();
  await exhaustAndRecover(
    "own --listen socket",
    { hostname: "127.0.0.1", port },
    async (target) => {
      const proxy = await startLimitedProxy({
        listen: [],
        args: ["-c", "1000", `--listen=127.0.0.1:${port}`, target],
        nofile: NOFILE,
      });
      await warmUp(proxy);
      return proxy;
    },
  );
});

import { deepEqual, equal, ok } from "node:assert/strict";
import {
  BUFFER_SIZE,
  SPARES_KEPT,
  type StreamOptions,
  StreamRelay,
} from "../../src/engine/streams.ts";
import { Reclaimer } from "../../src/service/reclaim.ts";
import { openListener } from "../../src/engine/listeners.ts";
import { type LogWriter, setLogWriter, writerFor } from "../../src/service/log.ts";
import type { Target } from "../../src/cli/target.ts";
import { libc } from "./libc_udp.ts";
import { readAll, testPoller, writeAll } from "./tcp.ts";

const encoder = new TextEncoder();
/** What has not come by then never comes: nothing but the relay under test would bring it. */
const NEVER_MS = 20_000;

/** `promise`, or a failure naming `what` after `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} never came`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
const decoder = new TextDecoder();

/** The relay's options in these tests, unless a test says otherwise. */
const DEFAULTS: StreamOptions = {
  connectionsMax: 256,
  whenFull: "refuse",
  connectionsPerSource: null,
  proxyProtocol: null,
  connectTimeoutMs: 0,
  idleTimeoutMs: Infinity,
  keepalive: false,
  onChange: () => {},
};

/** A relay on a listening socket of its own (127.0.0.1, a free port) to `target`. */
async function relayTo(target: Target, options: Partial<StreamOptions> = {}) {
  const { poller, close } = testPoller();
  const lines: string[] = [];
  const writer: LogWriter = {
    write: (level, message) => lines.push(`${level}: ${message}`),
    flush: () => Promise.resolve(),
  };
  setLogWriter(writer);
  const changes: string[] = [];
  const relay: StreamRelay = new StreamRelay(libc, poller, {
    ...DEFAULTS,
    onChange: () => changes.push(`${relay.active}/${relay.waiting}`),
    ...options,
  });
  const own = await openListener(
    libc,
    { kind: "tcp", host: "127.0.0.1", port: 0 },
    () => Promise.reject(new Error("no lookups")),
  );
  const port = own.local !== null && own.local.family !== "unix" ? own.local.port : 0;
  const where = relay.addListener(own.fd, target, { path: null });
  relay.start();
  return {
    relay,
    port,
    where,
    lines,
    changes,
    async close() {
      relay.stopAccepting();
      await relay.drain(0);
      await close();
      setLogWriter(writerFor("stderr"));
    },
  };
}

/** A backend that answers each connection with its order of arrival, then closes. */
function numberingBackend() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const arrived: Array<PromiseWithResolvers<Deno.Conn>> = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      (arrived[conns.length - 1] ??= Promise.withResolvers()).resolve(conn);
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    /** The `i`th connection (from 0), once it arrives. */
    nth: (i: number) => (arrived[i] ??= Promise.withResolvers()).promise,
    count: () => conns.length,
    close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // Closed by the test.
        }
      }
    },
  };
}

Deno.test("StreamRelay: a client is forwarded to the backend and back; counts follow", async () => {
  const backend = numberingBackend();
  const proxy = await relayTo({ kind: "tcp", host: "127.0.0.1", port: backend.port });
  try {
    equal(proxy.where, `127.0.0.1:${proxy.port}`);
    const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await writeAll(client, encoder.encode("hello"));
    await client.closeWrite();
    const at = await backend.nth(0);
    equal(decoder.decode((await readAll(at)).bytes), "hello");
    await writeAll(at, encoder.encode("world"));
    at.close();
    equal(decoder.decode((await readAll(client)).bytes), "world");
    client.close();
    equal(proxy.relay.served, 1);
    equal(proxy.relay.failed, 0);
  } finally {
    await proxy.close();
    backend.close();
  }
});

Deno.test("StreamRelay: an unreachable target fails the client, logged once, counted", async () => {
  const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = gone.addr.port;
  gone.close();
  const proxy = await relayTo({ kind: "tcp", host: "127.0.0.1", port });
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    equal((await readAll(client)).bytes.length, 0, "closed unserved");
    client.close();
    equal(proxy.relay.failed, 1);
    equal(proxy.relay.served, 0);
    ok(
      proxy.lines.some((line) =>
        /^error: Failed to connect to 127\.0\.0\.1:\d+ for 127\.0\.0\.1:\d+: Connection refused$/
          .test(line)
      ),
      proxy.lines.join("\n"),
    );
  } finally {
    await proxy.close();
  }
});

Deno.test("StreamRelay: --when-full=wait with a full queue leaves the rest in the kernel's, then serves all in order", async () => {
  const backend = numberingBackend();
  const proxy = await relayTo({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    connectionsMax: 1,
    whenFull: "wait",
    maxWaiting: 2,
  });
  try {
    // One served, two waiting in the relay's queue, two more in the kernel's accept queue.
    const clients: Deno.Conn[] = [];
    for (let i = 0; i < 5; i++) {
      clients.push(await Deno.connect({ hostname: "127.0.0.1", port: proxy.port }));
      await writeAll(clients[i], encoder.encode(`${i}`));
    }
    for (let i = 0; i < 5; i++) {
      const at = await within(NEVER_MS, backend.nth(i), `client ${i} at the backend`);
      // Only one at the backend at a time: the next arrives once this one ends.
      equal(backend.count(), i + 1);
      const got = new Uint8Array(1);
      equal(await at.read(got), 1);
      equal(decoder.decode(got), `${i}`, "in arrival order");
      at.close();
      await readAll(clients[i]);
      clients[i].close();
    }
    equal(proxy.relay.served, 5);
    equal(proxy.relay.refused, "", "nobody refused");
    ok(proxy.changes.includes("1/2"), `two waited in the queue: ${proxy.changes.join(" ")}`);
    ok(!proxy.changes.includes("1/3"), "never more than two");
  } finally {
    await proxy.close();
    backend.close();
  }
});

Deno.test("StreamRelay: the drain closes what is still open at its timeout, and says how many", async () => {
  const backend = numberingBackend();
  const proxy = await relayTo({ kind: "tcp", host: "127.0.0.1", port: backend.port });
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await writeAll(client, encoder.encode("x"));
    await backend.nth(0);
    proxy.relay.stopAccepting();
    deepEqual(await proxy.relay.drain(50), { open: 1, waiting: 0 });
    equal((await readAll(client)).bytes.length, 0, "the client sees the end");
    client.close();
  } finally {
    await proxy.close();
    backend.close();
  }
});

Deno.test("StreamRelay: buffers for bytes a side has not taken are lent and taken back, a few kept", async () => {
  const { poller, close } = testPoller();
  try {
    const relay = new StreamRelay(libc, poller, DEFAULTS);
    const lent = Array.from({ length: SPARES_KEPT + 4 }, () => relay.borrow());
    equal(new Set(lent).size, lent.length, "each one its own");
    equal(lent[0].length, relay.buffer.length);
    for (const buffer of lent) relay.giveBack(buffer);
    const again = Array.from({ length: SPARES_KEPT + 1 }, () => relay.borrow());
    equal(
      again.filter((buffer) => lent.includes(buffer)).length,
      SPARES_KEPT,
      "kept, and lent again",
    );
  } finally {
    await close();
  }
});

Deno.test("StreamRelay: a reclaim lets go of the spares and the shared buffer; a spare kept asks for one", async () => {
  const { poller, close } = testPoller();
  const reclaimed: string[] = [];
  const timers: Array<() => void> = [];
  const reclaimer = new Reclaimer({
    steps: [() => reclaimed.push("trim")],
    minConnections: 100,
    schedule: (run) => timers.push(run),
    cancel: () => {},
  });
  try {
    const relay = new StreamRelay(libc, poller, { ...DEFAULTS, reclaimer });
    const shared = relay.buffer;
    equal(relay.buffer, shared, "one shared buffer");
    const spare = relay.borrow();
    // A reclaim while the spare is lent (datagram sessions rested) does not let it go...
    reclaimer.held();
    reclaimer.rested();
    deepEqual(reclaimed, ["trim"]);
    relay.giveBack(spare);
    // ...and kept in the pool once given back, it makes the next rest reclaim, though no
    // connection came.
    reclaimer.idle();
    equal(timers.length, 1, "a reclaim is armed");
    timers[0]();
    deepEqual(reclaimed, ["trim", "trim"]);
    ok(relay.buffer !== shared, "the shared buffer was let go, and is made again");
    equal(relay.buffer.length, BUFFER_SIZE);
    ok(relay.borrow() !== spare, "the spare was let go");
  } finally {
    await close();
  }
});

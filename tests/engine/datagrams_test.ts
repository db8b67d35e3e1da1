import { deepEqual, equal, match, ok } from "node:assert/strict";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { type LogWriter, setLogWriter, writerFor } from "../../src/service/log.ts";
import {
  EVICT_IDLE_MS,
  Relay,
  type RelayCounts,
  type RelayOptions,
} from "../../src/engine/datagrams.ts";
import { Reclaimer, REST_MS } from "../../src/service/reclaim.ts";
import { Poller } from "../../src/engine/poller.ts";
import { encodeUnix } from "../../src/engine/sockaddr.ts";
import type { Target } from "../../src/cli/target.ts";
import { libc, socketOf, udpSocket } from "./libc_udp.ts";
import { freeUdpPort, udpEcho, UdpEnd } from "../integration/datagrams.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The relay's counts: `some`, and 0 for the rest. */
function countsOf(some: Partial<RelayCounts>): RelayCounts {
  return {
    sessions: 0,
    evicted: 0,
    forwarded: 0,
    returned: 0,
    undeliverable: { target: 0, client: 0 },
    dropped: 0,
    refused: { full: 0, source: 0 },
    excessReplies: 0,
    fromTarget: 0,
    ...some,
  };
}

/** A relay on one libc-made UDP socket (as if passed) to `target`; what it logs is kept. */
function relayOn(target: Target, options: Partial<RelayOptions> = {}) {
  const listener = udpSocket();
  const changes: number[] = [];
  const lines: string[] = [];
  const writer: LogWriter = {
    write: (level, message) => lines.push(`${level}: ${message}`),
    flush: () => Promise.resolve(),
  };
  setLogWriter(writer);
  const poller = new Poller(libc);
  const relay: Relay = new Relay(libc, poller, {
    sessionsMax: 256,
    sessionsPerSource: null,
    idleTimeoutMs: 60_000,
    onChange: () => changes.push(relay.active),
    ...options,
  });
  const description = relay.add(listener.fd, 2, target).local;
  relay.start();
  return {
    relay,
    port: listener.port,
    description,
    changes,
    lines,
    async close() {
      await relay.drain(0);
      await poller.close();
      libc.call.close(listener.fd);
      setLogWriter(writerFor("stderr"));
    },
  };
}

Deno.test("Relay: one session per client, replies from the listener, counted", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port });
  const clients = [new UdpEnd(), new UdpEnd()];
  try {
    equal(proxy.description, `127.0.0.1:${proxy.port}`);
    for (let i = 0; i < 3; i++) {
      for (const [c, client] of clients.entries()) {
        const [data, from] = await client.ask(encoder.encode(`${c}.${i}`), "127.0.0.1", proxy.port);
        equal(decoder.decode(data), `${c}.${i}`);
        deepEqual([from.hostname, from.port], ["127.0.0.1", proxy.port]);
      }
    }
    equal(proxy.relay.active, 2);
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 2,
        forwarded: 6,
        returned: 6,
        dropped: 0,
        refused: { full: 0, source: 0 },
      }),
    );
    deepEqual(proxy.changes, [1, 2]);
  } finally {
    await proxy.close();
    await Promise.all(clients.map((c) => c.close()));
    await backend.close();
  }
  deepEqual(proxy.changes, [1, 2, 1, 0], "drain closes every session");
});

Deno.test("Relay: over sessionsMax a new client is dropped and counted; the line is throttled", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    sessionsMax: 1,
  });
  const [first, second] = [new UdpEnd(), new UdpEnd()];
  try {
    await first.ask(encoder.encode("in"), "127.0.0.1", proxy.port);
    for (let i = 0; i < 5; i++) await second.send(encoder.encode("out"), "127.0.0.1", proxy.port);
    // The listener is read in order: once this is answered, the five were read.
    await first.ask(encoder.encode("still in"), "127.0.0.1", proxy.port);
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 1,
        forwarded: 2,
        returned: 2,
        dropped: 5,
        refused: { full: 5, source: 0 },
      }),
    );
    equal(backend.received, 2);
    deepEqual(proxy.lines, [
      "warning: Hit connection limit, dropping a datagram from a new client (1 session open)",
    ]);
  } finally {
    await proxy.close();
    await first.close();
    await second.close();
    await backend.close();
  }
});

Deno.test("Relay: over sessionsPerSource a new client from that address is dropped; another address is not", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    sessionsPerSource: 1,
  });
  const [first, second, other] = [new UdpEnd(), new UdpEnd(), new UdpEnd("127.0.0.2")];
  try {
    await first.ask(encoder.encode("in"), "127.0.0.1", proxy.port);
    await second.send(encoder.encode("out"), "127.0.0.1", proxy.port);
    await other.ask(encoder.encode("other"), "127.0.0.1", proxy.port);
    equal(proxy.relay.active, 2);
    deepEqual(proxy.relay.counts.refused, { full: 0, source: 1 });
    equal(proxy.relay.counts.dropped, 1);
    deepEqual(proxy.lines, [
      "warning: Hit per-source connection limit, dropping a datagram from " +
      `127.0.0.1:${second.port} (1 session open from 127.0.0.1)`,
    ]);
  } finally {
    await proxy.close();
    for (const end of [first, second, other]) await end.close();
    await backend.close();
  }
});

Deno.test("Relay: a silent session ends after idleTimeoutMs; the client's next datagram opens another", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    idleTimeoutMs: 100,
  });
  const client = new UdpEnd();
  try {
    await client.ask(encoder.encode("a"), "127.0.0.1", proxy.port);
    while (proxy.changes.at(-1) !== 0) await new Promise((resolve) => setTimeout(resolve, 20));
    equal(proxy.relay.active, 0);
    await client.ask(encoder.encode("b"), "127.0.0.1", proxy.port);
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 2,
        forwarded: 2,
        returned: 2,
        dropped: 0,
        refused: { full: 0, source: 0 },
      }),
    );
  } finally {
    await proxy.close();
    await client.close();
    await backend.close();
  }
});

/** Waits for `event`; one that has not come in 20 s never comes, and fails the test as `never`. */
async function comes(event: Promise<void>, never: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(never)), 20_000);
  });
  await Promise.race([event, late]).finally(() => clearTimeout(timer));
}

/**
 * A relay to a UDP echo with `reclaimer`, and two clients that have each had one answer through
 * it (two sessions); `body` runs with them, and everything is closed after.
 */
async function withTwoSessions(
  idleTimeoutMs: number,
  reclaimer: Reclaimer,
  body: (proxy: ReturnType<typeof relayOn>, clients: UdpEnd[]) => Promise<void>,
): Promise<void> {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    idleTimeoutMs,
    reclaimer,
  });
  const clients = [new UdpEnd(), new UdpEnd()];
  try {
    for (const client of clients) await client.ask(encoder.encode("a"), "127.0.0.1", proxy.port);
    await body(proxy, clients);
  } finally {
    await proxy.close();
    for (const client of clients) await client.close();
    await backend.close();
  }
}

Deno.test("Relay: sessions drive the reclaimer: busy as each opens, idle when the last ends", async () => {
  const ran: string[] = [];
  const reclaimed = Promise.withResolvers<void>();
  const reclaimer = new Reclaimer({
    steps: [() => ran.push("reclaimed"), reclaimed.resolve],
    minConnections: 2,
    restMs: 0,
  });
  await withTwoSessions(100, reclaimer, async (proxy) => {
    equal(proxy.relay.active, 2);
    deepEqual(ran, [], "no reclaim while sessions are open");
    // The sessions end after 100 ms of silence.
    await comes(reclaimed.promise, "no reclaim after the sessions ended");
    equal(proxy.relay.active, 0, "reclaimed once both sessions had ended");
    deepEqual(ran, ["reclaimed"]);
  });
});

/** A reclaimer that counts the rests it is told of, and resolves `told[n]` at the n-th. */
class CountingReclaimer extends Reclaimer {
  readonly told = [Promise.withResolvers<void>(), Promise.withResolvers<void>()];
  rests = 0;
  override rested(): void {
    super.rested();
    this.told[this.rests++]?.resolve();
  }
}

Deno.test("Relay: open sessions that carry nothing for a while have the reclaimer told, once a spell", async () => {
  const reclaimed: number[] = [];
  // Told through rested() only: restMs never fires (no session ends), minConnections 2.
  const reclaimer: CountingReclaimer = new CountingReclaimer({
    steps: [() => reclaimed.push(reclaimer.rests)],
    minConnections: 2,
    schedule: () => undefined,
    cancel: () => {},
  });
  await withTwoSessions(60_000, reclaimer, async (proxy, clients) => {
    const started = performance.now();
    await comes(reclaimer.told[0].promise, "not told of the rest");
    ok(performance.now() - started >= REST_MS, "only after a rest of REST_MS");
    equal(proxy.relay.active, 2, "both sessions still open");
    deepEqual(reclaimed, [0], "reclaimed at the first rest");
    // A repeat would come at the next sweeps (one a second here): none comes while it stays quiet.
    await new Promise((resolve) => setTimeout(resolve, 2.5 * REST_MS));
    equal(reclaimer.rests, 1, "told once for the spell");
    await clients[0].ask(encoder.encode("b"), "127.0.0.1", proxy.port);
    await comes(reclaimer.told[1].promise, "not told of the next rest");
    equal(reclaimer.rests, 2, "told again only after a datagram");
    deepEqual(reclaimed, [0], "no second reclaim: no new session came since");
  });
});

Deno.test("Relay: a target by name: datagrams wait for the name, then go in order", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "localhost", port: backend.port });
  const client = new UdpEnd();
  try {
    for (let i = 0; i < 5; i++) await client.send(encoder.encode(`${i}`), "127.0.0.1", proxy.port);
    const got = [];
    for (let i = 0; i < 5; i++) got.push(decoder.decode((await client.next())[0]));
    deepEqual(got, ["0", "1", "2", "3", "4"]);
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 1,
        forwarded: 5,
        returned: 5,
        dropped: 0,
        refused: { full: 0, source: 0 },
      }),
    );
  } finally {
    await proxy.close();
    await client.close();
    await backend.close();
  }
});

Deno.test("Relay: a name that does not resolve ends the session, its datagrams counted as dropped", async () => {
  const proxy = relayOn({ kind: "tcp", host: "nonexistent.invalid", port: 9 });
  const client = new UdpEnd();
  try {
    await client.send(encoder.encode("lost"), "127.0.0.1", proxy.port);
    while (proxy.changes.at(-1) !== 0) await new Promise((resolve) => setTimeout(resolve, 20));
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 1,
        forwarded: 0,
        returned: 0,
        dropped: 1,
        refused: { full: 0, source: 0 },
      }),
    );
    equal(proxy.lines.length, 1);
    equal(
      proxy.lines[0].startsWith(
        "error: Failed to forward datagrams to nonexistent.invalid:9 for 127.0.0.1:" +
          `${client.port}: cannot resolve nonexistent.invalid`,
      ),
      true,
      proxy.lines[0],
    );
  } finally {
    await proxy.close();
    await client.close();
  }
});

Deno.test("Relay: a Unix client keeps its one session whatever other clients' names were", async () => {
  const backend = udpEcho();
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-relay-" });
  const listener = socketOf(1);
  const path = `${dir}/listener`;
  const address = encodeUnix(path, false);
  equal(libc.call.bind(listener, address, address.length), 0);
  const poller = new Poller(libc);
  const relay = new Relay(libc, poller, {
    sessionsMax: 16,
    sessionsPerSource: null,
    idleTimeoutMs: 60_000,
    onChange: () => {},
  });
  relay.add(listener, 1, { kind: "tcp", host: "127.0.0.1", port: backend.port });
  relay.start();
  // Names of odd and even lengths: the kernel gives 2 + path + NUL bytes for each.
  const clients = [`${dir}/a1`, `${dir}/b`, `${dir}/ccccccccccccccccccccccccc`].map((p) =>
    Deno.listenDatagram({ transport: "unixpacket", path: p })
  );
  try {
    for (let round = 0; round < 3; round++) {
      for (const [i, client] of clients.entries()) {
        await client.send(encoder.encode(`${i}.${round}`), { transport: "unixpacket", path });
        const [data] = await client.receive(new Uint8Array(100));
        equal(decoder.decode(data), `${i}.${round}`);
      }
    }
    deepEqual(
      relay.counts,
      countsOf({
        sessions: 3,
        forwarded: 9,
        returned: 9,
        dropped: 0,
        refused: { full: 0, source: 0 },
      }),
    );
  } finally {
    await relay.drain(0);
    await poller.close();
    for (const client of clients) client.close();
    libc.call.close(listener);
    await backend.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

/** The descriptors this process has open. */
function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test("Relay: a session that ends during its name lookup opens no socket after; its datagrams count as dropped", async () => {
  const backend = udpEcho();
  // Each lookup answered by hand, one at a time (as lookups that take longer than --idle-timeout).
  const lookups: Array<(addresses: string[]) => void> = [];
  const asked = [Promise.withResolvers<void>(), Promise.withResolvers<void>()];
  const proxy = relayOn({ kind: "tcp", host: "backend.test", port: backend.port }, {
    idleTimeoutMs: 100,
    resolve: () =>
      new Promise((resolve) => {
        asked[lookups.length]?.resolve();
        lookups.push(resolve);
      }),
  });
  const client = new UdpEnd();
  const opened = openFds();
  try {
    await client.send(encoder.encode("lost"), "127.0.0.1", proxy.port);
    await comes(asked[0].promise, "no lookup for the first session");
    // Ended by --idle-timeout while its name is still being looked up.
    while (proxy.changes.at(-1) !== 0) await new Promise((resolve) => setTimeout(resolve, 20));
    await client.send(encoder.encode("served"), "127.0.0.1", proxy.port);
    await comes(asked[1].promise, "no lookup for the second session");
    lookups[0](["127.0.0.1"]); // The first session's answer, late: it must not open a socket.
    lookups[1](["127.0.0.1"]);
    equal(decoder.decode((await client.next())[0]), "served");
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 2,
        forwarded: 1,
        returned: 1,
        dropped: 1,
        refused: { full: 0, source: 0 },
      }),
    );
    equal(openFds(), opened + 1, "one socket: the open session's");
  } finally {
    await proxy.close();
    await client.close();
    await backend.close();
  }
});

/** V8's full garbage collection (`--expose-gc` set at run time applies to new contexts). */
function fullGc(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc");
}

Deno.test("Relay: sessions to many local addresses of a wildcard listener leave nothing behind once ended", async () => {
  const gc = fullGc();
  const backend = udpEcho();
  const listener = udpSocket("0.0.0.0");
  const poller = new Poller(libc);
  const relay = new Relay(libc, poller, {
    sessionsMax: 1000,
    sessionsPerSource: null,
    idleTimeoutMs: 60_000,
    repliesPerDatagram: 1, // Each session ends with its reply.
    onChange: () => {},
  });
  relay.add(listener.fd, 2, { kind: "tcp", host: "127.0.0.1", port: backend.port });
  relay.start();
  const client = new UdpEnd();
  /** 1,000 sessions, each to its own address 127.N.x.y, answered, then ended. */
  const wave = async (n: number) => {
    const addresses = Array.from(
      { length: 1000 },
      (_, i) => `127.${n}.${(i >> 7) + 1}.${(i & 127) + 1}`,
    );
    // A hundred at a time: the sockets' queues hold them all.
    for (let at = 0; at < addresses.length; at += 100) {
      for (const address of addresses.slice(at, at + 100)) {
        await client.send(encoder.encode(address), address, listener.port);
      }
      for (let i = 0; i < 100; i++) await client.next();
    }
    while (relay.active > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  };
  const heap = () => {
    gc();
    return Deno.memoryUsage().heapUsed;
  };
  try {
    await wave(1); // Warms up: code, maps and batches at their working size.
    const before = heap();
    for (let n = 2; n <= 11; n++) await wave(n);
    const grown = heap() - before;
    equal(relay.counts.sessions, 11_000);
    equal(relay.counts.returned, 11_000);
    // A map entry per local address, kept for good, cost 275 bytes per ended session here (2.75
    // MB); without it the heap moved by 0.2-0.4 MB (the test's own arrays, V8's caches).
    ok(grown < 10_000 * 100, `the heap grew ${grown} bytes over 10,000 ended sessions`);
  } finally {
    await relay.drain(0);
    await poller.close();
    libc.call.close(listener.fd);
    await client.close();
    await backend.close();
  }
});

/** A backend that answers every datagram with `count` datagrams, then one every `everyMs` (if any) until closed. */
function chattyBackend(count: number, everyMs?: number): { end: UdpEnd; stop: () => void } {
  const timers: Array<ReturnType<typeof setInterval>> = [];
  const end = new UdpEnd("127.0.0.1", 0, (data, from, self) => {
    const text = decoder.decode(data);
    for (let i = 0; i < count; i++) {
      self.send(encoder.encode(`${text}.${i}`), from.hostname, from.port).catch(() => {});
    }
    if (everyMs !== undefined) {
      timers.push(setInterval(() => {
        self.send(encoder.encode(`${text}.more`), from.hostname, from.port).catch(() => {});
      }, everyMs));
    }
  });
  return { end, stop: () => timers.forEach(clearInterval) };
}

Deno.test("Relay: a backend that keeps sending does not keep a session open: it ends idleTimeoutMs after its client's last datagram", async () => {
  const backend = chattyBackend(1, 10);
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.end.port }, {
    idleTimeoutMs: 300,
  });
  const client = new UdpEnd();
  try {
    const started = performance.now();
    await client.send(encoder.encode("one"), "127.0.0.1", proxy.port);
    const ended = Promise.withResolvers<void>();
    const poll = setInterval(() => proxy.changes.at(-1) === 0 && ended.resolve(), 20);
    await comes(ended.promise, "the session was kept open by its backend's datagrams").finally(
      () => clearInterval(poll),
    );
    ok(performance.now() - started >= 300, "not before the idle timeout");
    ok(proxy.relay.counts.returned >= 2, "the backend's datagrams went to the client meanwhile");
    equal(proxy.relay.counts.forwarded, 1);
  } finally {
    backend.stop();
    await proxy.close();
    await client.close();
    await backend.end.close();
  }
});

Deno.test("Relay: repliesPerDatagram passes that many replies per client datagram, then the session ends", async () => {
  const backend = chattyBackend(5);
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.end.port }, {
    repliesPerDatagram: 2,
  });
  const client = new UdpEnd();
  try {
    await client.send(encoder.encode("a"), "127.0.0.1", proxy.port);
    const got = [
      decoder.decode((await client.next())[0]),
      decoder.decode((await client.next())[0]),
    ];
    deepEqual(got, ["a.0", "a.1"]);
    // A new datagram opens a new session: the first ended with its two replies.
    await client.send(encoder.encode("b"), "127.0.0.1", proxy.port);
    got.push(decoder.decode((await client.next())[0]), decoder.decode((await client.next())[0]));
    deepEqual(got, ["a.0", "a.1", "b.0", "b.1"], "no third reply to either");
    equal(client.received, 4);
    const { counts } = proxy.relay;
    deepEqual([counts.sessions, counts.forwarded, counts.returned], [2, 2, 4]);
    equal(counts.dropped, counts.excessReplies, "only replies over the bound were dropped");
    deepEqual(proxy.changes.slice(0, 2), [1, 0], "the first ended before the second opened");
  } finally {
    await proxy.close();
    await client.close();
    await backend.end.close();
  }
});

Deno.test("Relay: when full, a new client ends the oldest one-datagram session idle for EVICT_IDLE_MS, never one with traffic", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    sessionsMax: 2,
  });
  const [regular, oneShot, newcomer, late] = [
    new UdpEnd(),
    new UdpEnd(),
    new UdpEnd(),
    new UdpEnd(),
  ];
  try {
    await regular.ask(encoder.encode("r1"), "127.0.0.1", proxy.port);
    await regular.ask(encoder.encode("r2"), "127.0.0.1", proxy.port);
    await oneShot.ask(encoder.encode("once"), "127.0.0.1", proxy.port);
    // Only time makes a one-datagram session evictable: nothing to wait on but the clock.
    await new Promise((resolve) => setTimeout(resolve, EVICT_IDLE_MS + 50));
    const [data] = await newcomer.ask(encoder.encode("new"), "127.0.0.1", proxy.port);
    equal(decoder.decode(data), "new", "admitted in place of the one-datagram session");
    // The newcomer's session is one-datagram too, but too recent: the next one is refused.
    await late.send(encoder.encode("late"), "127.0.0.1", proxy.port);
    equal(
      decoder.decode((await regular.ask(encoder.encode("r3"), "127.0.0.1", proxy.port))[0]),
      "r3",
    );
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 3,
        evicted: 1,
        forwarded: 5,
        returned: 5,
        dropped: 1,
        refused: { full: 1, source: 0 },
      }),
    );
    equal(proxy.relay.active, 2);
    equal(proxy.lines.length, 2, proxy.lines.join("\n"));
    match(
      proxy.lines[0],
      new RegExp(
        `^warning: Hit connection limit, ending the session of 127\\.0\\.0\\.1:${oneShot.port}, ` +
          "idle for 1\\.\\ds after its one datagram, for a new client \\(2 sessions open\\)$",
      ),
    );
    match(proxy.lines[1], /^warning: Hit connection limit, dropping a datagram from a new client/);
  } finally {
    await proxy.close();
    for (const end of [regular, oneShot, newcomer, late]) await end.close();
    await backend.close();
  }
});

Deno.test("Relay: a datagram from the target's own address is dropped, not looped back to it", async () => {
  const backend = udpEcho();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port });
  const client = new UdpEnd();
  try {
    // The backend's own socket writes to the listener, as a forged source address would: the
    // session would send it to the echo, whose answer would come back through the listener to
    // the echo, which answers again, and so on.
    await backend.send(encoder.encode("loop"), "127.0.0.1", proxy.port);
    equal(
      decoder.decode((await client.ask(encoder.encode("ok"), "127.0.0.1", proxy.port))[0]),
      "ok",
    );
    equal(backend.received, 1, "only the client's datagram reached the backend");
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 1,
        forwarded: 1,
        returned: 1,
        dropped: 1,
        fromTarget: 1,
      }),
    );
    deepEqual(proxy.lines, [
      `warning: Dropping a datagram from 127.0.0.1:${backend.port}, the target itself: ` +
      "forwarding it would loop (a forwarding loop, or a forged source address)",
    ]);
  } finally {
    await proxy.close();
    await client.close();
    await backend.close();
  }
});

/** Resolves once `condition()` holds, checked every 10 ms (for counts that change on events). */
async function until(condition: () => boolean, never: string): Promise<void> {
  const held = Promise.withResolvers<void>();
  const poll = setInterval(() => condition() && held.resolve(), 10);
  await comes(held.promise, never).finally(() => clearInterval(poll));
}

Deno.test("Relay: a UDP target that is not there: each ICMP error counts a datagram undeliverable, not forwarded; one line names the target; served once it is up", async () => {
  const port = freeUdpPort();
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port });
  const client = new UdpEnd();
  let backend: UdpEnd | undefined;
  try {
    for (let i = 1; i <= 3; i++) {
      await client.send(encoder.encode(`lost ${i}`), "127.0.0.1", proxy.port);
      await until(
        () => proxy.relay.counts.undeliverable.target === i,
        `no ICMP error seen for datagram ${i}: ${JSON.stringify(proxy.relay.counts)}`,
      );
      equal(proxy.relay.counts.forwarded, 0, "an undeliverable datagram is not forwarded");
    }
    deepEqual(proxy.lines, [
      `warning: Failed to deliver a datagram to 127.0.0.1:${port} for 127.0.0.1:${client.port}: ` +
      "Connection refused (nothing is bound there: ICMP port unreachable, or no Unix socket)",
    ]);
    backend = udpEcho("127.0.0.1", port);
    const [data] = await client.ask(encoder.encode("up"), "127.0.0.1", proxy.port);
    equal(decoder.decode(data), "up", "the same session is served once the target is up");
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 1,
        forwarded: 1,
        returned: 1,
        undeliverable: { target: 3, client: 0 },
      }),
    );
    proxy.relay.stopReading(); // Writes what the throttle held back.
    equal(
      proxy.lines[1],
      "warning: Failed to deliver datagrams: 2 more not delivered to the target since the last message.",
    );
  } finally {
    await proxy.close();
    await client.close();
    await backend?.close();
  }
});

Deno.test("Relay: a Unix target not there yet, then gone and back: undeliverable meanwhile, served again by a fresh connect", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-relay-" });
  const path = `${dir}/backend.sock`;
  const proxy = relayOn({ kind: "unix", path });
  const client = new UdpEnd();
  const echo = () => {
    const socket = Deno.listenDatagram({ transport: "unixpacket", path });
    const loop = (async () => {
      try {
        for (;;) {
          const [data, from] = await socket.receive();
          await socket.send(data, from);
        }
      } catch {
        // Closed.
      }
    })();
    return async () => {
      socket.close();
      await loop;
      Deno.removeSync(path);
    };
  };
  try {
    await client.send(encoder.encode("early"), "127.0.0.1", proxy.port);
    await until(
      () => proxy.relay.counts.undeliverable.target === 1,
      "no fault for a missing target",
    );
    match(
      proxy.lines[0],
      new RegExp(
        `^warning: Failed to deliver a datagram to ${path} for 127\\.0\\.0\\.1:\\d+: No such file`,
      ),
    );
    let stop = echo();
    equal(
      decoder.decode((await client.ask(encoder.encode("one"), "127.0.0.1", proxy.port))[0]),
      "one",
    );
    await stop();
    await client.send(encoder.encode("gone"), "127.0.0.1", proxy.port);
    await until(() => proxy.relay.counts.undeliverable.target === 2, "no fault for a target gone");
    stop = echo(); // A new socket at the same path: the session connects to it.
    equal(
      decoder.decode((await client.ask(encoder.encode("two"), "127.0.0.1", proxy.port))[0]),
      "two",
    );
    await stop();
    deepEqual(
      proxy.relay.counts,
      countsOf({
        sessions: 1,
        forwarded: 2,
        returned: 2,
        undeliverable: { target: 2, client: 0 },
      }),
    );
  } finally {
    await proxy.close();
    await client.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("Relay: counts are told after the events that change them, and not while idle", async () => {
  const backend = udpEcho();
  let told = 0;
  const proxy = relayOn({ kind: "tcp", host: "127.0.0.1", port: backend.port }, {
    onCounts: () => told++,
  });
  const client = new UdpEnd();
  try {
    for (let i = 0; i < 5; i++) await client.ask(encoder.encode(`${i}`), "127.0.0.1", proxy.port);
    ok(told >= 5 && told <= 10, `told ${told} times for 5 exchanges`);
    const before = told;
    await new Promise((resolve) => setTimeout(resolve, 300));
    equal(told, before, "nothing told while idle");
  } finally {
    await proxy.close();
    await client.close();
    await backend.close();
  }
});

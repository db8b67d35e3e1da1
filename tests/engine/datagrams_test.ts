import { deepEqual, equal, ok } from "node:assert/strict";
import { type LogWriter, setLogWriter, writerFor } from "../../src/service/log.ts";
import { Relay, type RelayOptions } from "../../src/engine/datagrams.ts";
import { Reclaimer, REST_MS } from "../../src/service/reclaim.ts";
import { classify } from "../../src/engine/libc.ts";
import { encodeUnix } from "../../src/engine/sockaddr.ts";
import type { Target } from "../../src/cli/target.ts";
import { libc, socketOf, udpSocket } from "./libc_udp.ts";
import { udpEcho, UdpEnd } from "../integration/datagrams.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

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
  const relay: Relay = new Relay(libc, {
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
      libc.call.close(listener.fd);
      setLogWriter(writerFor("stderr"));
    },
  };
}

Deno.test("classify: a UDP socket is a datagram one of its family; TCP is stream; -1 is none", () => {
  const udp = udpSocket();
  const udp6 = udpSocket("::1");
  const tcp = socketOf(2, 1);
  try {
    deepEqual(classify(libc, udp.fd), { type: "datagram", family: 2 });
    deepEqual(classify(libc, udp6.fd), { type: "datagram", family: 10 });
    deepEqual(classify(libc, tcp), { type: "stream" });
    deepEqual(classify(libc, -1), { type: "other", why: "errno 9" });
  } finally {
    for (const fd of [udp.fd, udp6.fd, tcp]) libc.call.close(fd);
  }
});

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
    deepEqual(proxy.relay.counts, {
      sessions: 2,
      forwarded: 6,
      returned: 6,
      dropped: 0,
      refused: { full: 0, source: 0 },
    });
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
    deepEqual(proxy.relay.counts, {
      sessions: 1,
      forwarded: 2,
      returned: 2,
      dropped: 5,
      refused: { full: 5, source: 0 },
    });
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
    deepEqual(proxy.relay.counts, {
      sessions: 2,
      forwarded: 2,
      returned: 2,
      dropped: 0,
      refused: { full: 0, source: 0 },
    });
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
    deepEqual(proxy.relay.counts, {
      sessions: 1,
      forwarded: 5,
      returned: 5,
      dropped: 0,
      refused: { full: 0, source: 0 },
    });
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
    deepEqual(proxy.relay.counts, {
      sessions: 1,
      forwarded: 0,
      returned: 0,
      dropped: 1,
      refused: { full: 0, source: 0 },
    });
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
  const relay = new Relay(libc, {
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
    deepEqual(relay.counts, {
      sessions: 3,
      forwarded: 9,
      returned: 9,
      dropped: 0,
      refused: { full: 0, source: 0 },
    });
  } finally {
    await relay.drain(0);
    for (const client of clients) client.close();
    libc.call.close(listener);
    await backend.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

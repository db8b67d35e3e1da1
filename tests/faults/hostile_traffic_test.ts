/**
 * Hostile traffic, all at once, against one real proxy serving datagram and stream sockets:
 * floods of one-datagram clients from fresh source ports, 0- and 65,507-byte datagrams, a
 * backend that streams without end, a backend that is not there, a target name whose DNS
 * stalls (a DNS server of the test's own, reached through a `resolv.conf` of the proxy's own in
 * a mount namespace), and stream clients beside them. Throughout, a well-behaved datagram
 * client and a stream client must be answered within a second. After, descriptors and memory
 * must come back, and SIGTERM must stop the proxy cleanly.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import {
  freeTcpUdpPort,
  freeUdpPort,
  stopProxy,
  TestDns,
  udpEcho,
  UdpEnd,
} from "../integration/datagrams.ts";
import { DENO_RUN, echoBackend, MAIN, ping, Process, ROOT } from "../integration/harness.ts";
import { report, type Usage, usage, waitUntil, within } from "./helpers.ts";

const LAUNCHER = `${ROOT}tests/integration/listen_fds.py`;
const encoder = new TextEncoder();

/** How long the attack lasts. */
const ATTACK_MS = 8000;
/** New source ports a second, spread over the datagram listeners. */
const FLOOD_PER_SECOND = 500;
/** The slowest answer the well-behaved clients accept. */
const ANSWER_MS = 1000;

const HOSTILE = `${ROOT}tests/faults/hostile_udp.py`;

/** `hostile_udp.py stream`: a backend that answers every datagram without end; and its port. */
async function streamingBackend(): Promise<{ process: Process; port: number }> {
  const process = new Process("python3", [HOSTILE, "stream"]);
  const line = await process.waitForLog(/^port \d+$/m);
  return { process, port: Number(line.slice(5)) };
}

/**
 * The proxy's usage once every session and connection has ended: a STATUS-free check, its
 * descriptor count unchanged for 3 s (longer than --idle-timeout=2s and the reclaim a second
 * after the last session, see reclaim.ts).
 */
async function atRest(pid: number): Promise<Usage> {
  let last = -1;
  let since = performance.now();
  await waitUntil(
    () => {
      const { fds } = usage(pid);
      if (fds !== last) [last, since] = [fds, performance.now()];
      return performance.now() - since >= 3000;
    },
    "the proxy's descriptors to settle",
    60_000,
    100,
  );
  return usage(pid);
}

/** Runs `step` every `everyMs` until `running()` is false; the slowest step's time. */
async function every(everyMs: number, running: () => boolean, step: () => Promise<void>) {
  let slowest = 0;
  while (running()) {
    const started = performance.now();
    await step();
    slowest = Math.max(slowest, performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return slowest;
}

Deno.test("hostile traffic all at once: well-behaved clients answered within 1 s throughout; descriptors and memory come back; SIGTERM stops cleanly", async () => {
  const dns = new TestDns("127.0.0.78", { "stalled.hostile.test": "127.0.0.1" });
  const good = udpEcho();
  const streaming = await streamingBackend();
  const deadPort = freeUdpPort();
  const tcpPort = freeTcpUdpPort();
  const tcpEcho = echoBackend({ hostname: "127.0.0.1", port: tcpPort });
  const namedPort = freeTcpUdpPort();
  const namedUdp = udpEcho("127.0.0.1", namedPort);
  const namedTcp = echoBackend({ hostname: "127.0.0.1", port: namedPort });
  const ports = {
    good: freeUdpPort(),
    stream: freeUdpPort(),
    dead: freeUdpPort(),
    named: freeUdpPort(),
    tcp: freeTcpUdpPort(),
    tcpNamed: freeTcpUdpPort(),
  };
  const [prefix, ...prefixArgs] = dns.inNamespace();
  const proxy = new Process(prefix, [
    ...prefixArgs,
    LAUNCHER,
    ...[ports.good, ports.stream, ports.dead, ports.named].map((p) => `--udp=${p}`),
    `--tcp=${ports.tcp}`,
    `--tcp=${ports.tcpNamed}`,
    "--env=LISTEN_FDNAMES=good:stream:dead:named:tcp:tcp-named",
    "--",
    ...DENO_RUN,
    MAIN,
    "-c",
    "64",
    "--idle-timeout=2s",
    "--connect-timeout=1s",
    `--target=good=127.0.0.1:${good.port}`,
    `--target=stream=127.0.0.1:${streaming.port}`,
    `--target=dead=127.0.0.1:${deadPort}`,
    `--target=named=stalled.hostile.test:${namedPort}`,
    `--target=tcp=127.0.0.1:${tcpPort}`,
    `--target=tcp-named=stalled.hostile.test:${namedPort}`,
  ], { DENO_NO_UPDATE_CHECK: "1" }); // Deno's own lookup of its release server would stall too.
  const client = new UdpEnd();
  const streamClients = Array.from({ length: 10 }, () => new UdpEnd());
  const held: Deno.Conn[] = [];
  let conn: Deno.Conn | undefined;
  let attacking = true;
  let flood: Process | undefined;
  try {
    await proxy.waitForLog(/Forwarding /, 30_000);
    const pid = proxy.child.pid;
    // Warm up every path once, then let it all end: what the proxy holds at rest, before.
    await client.ask(encoder.encode("warm"), "127.0.0.1", ports.good, 30_000);
    const warm = await Deno.connect({ hostname: "127.0.0.1", port: ports.tcp });
    ok(await ping(warm, 0));
    warm.close();
    const before = await atRest(pid);
    conn = await Deno.connect({ hostname: "127.0.0.1", port: ports.tcp });

    // Floods of one-datagram clients, each from a port of its own, on three datagram listeners,
    // one in twenty of 65,507 bytes and one in twenty empty (a process of their own).
    flood = new Process("python3", [
      HOSTILE,
      "flood",
      String(FLOOD_PER_SECOND),
      ...[ports.good, ports.dead, ports.named].map(String),
    ]);
    await flood.waitForLog(/flooding/);
    // TCP clients of the stalled name: each waits for the lookup, then its connect timeout.
    const tcpNamed = every(200, () => attacking, async () => {
      held.push(await Deno.connect({ hostname: "127.0.0.1", port: ports.tcpNamed }));
    });
    // Sessions whose backend streams back without end.
    for (const end of streamClients) {
      await end.send(encoder.encode("go"), "127.0.0.1", ports.stream);
    }

    // The well-behaved clients, throughout.
    let sequence = 0;
    const stopAt = performance.now() + ATTACK_MS;
    const [udpSlowest, tcpSlowest] = await Promise.all([
      every(200, () => performance.now() < stopAt, async () => {
        const text = `good ${sequence++}`;
        const [data] = await client.ask(encoder.encode(text), "127.0.0.1", ports.good, ANSWER_MS);
        equal(new TextDecoder().decode(data), text);
      }),
      every(200, () => performance.now() < stopAt, async () => {
        ok(await within(ping(conn!, sequence & 255), ANSWER_MS, false), "TCP answered within 1 s");
      }),
    ]);
    attacking = false;
    await tcpNamed;
    const during = usage(pid);
    await flood.stop();

    // Recovery: DNS answers, every client leaves, the streaming backend is left talking to
    // closed ports, sessions end after --idle-timeout.
    await dns.answer();
    for (const c of held.splice(0)) c.close();
    conn.close();
    conn = undefined;
    await client.close();
    const after = await atRest(pid);
    equal(after.fds, before.fds, "descriptors back");
    const counts = await stopProxy(proxy);
    equal(counts.sessionsOpen, 0);
    ok(counts.undeliverable > 0, "the dead backend's datagrams counted undeliverable");
    ok(counts.evicted + counts.dropped > 0, "the flood hit the limit");
    const growth = (after.rssKiB - before.rssKiB) / 1024;
    ok(growth < 32, `RSS ${before.rssKiB} KiB before, ${after.rssKiB} KiB after`);
    deepEqual(dns.queries.get("stalled.hostile.test")! <= 4, true, "one lookup at a time");
    report(
      `hostile traffic for ${ATTACK_MS / 1000} s (${FLOOD_PER_SECOND} new source ports/s, ` +
        "65,507- and 0-byte datagrams among them, 10 endless streams, a dead backend, a " +
        "stalled DNS " +
        `name, TCP clients): slowest answer ${udpSlowest.toFixed(0)} ms over UDP, ` +
        `${tcpSlowest.toFixed(0)} ms over TCP; ${counts.sessions} sessions ` +
        `(${counts.evicted} ended early), ${counts.forwarded} forwarded, ${counts.returned} ` +
        `returned, ${counts.undeliverable} undeliverable, ${counts.dropped} dropped; ` +
        `descriptors ${before.fds} -> ${during.fds} -> ${after.fds}; RSS ` +
        `${(before.rssKiB / 1024).toFixed(1)} -> ${(during.rssKiB / 1024).toFixed(1)} -> ` +
        `${(after.rssKiB / 1024).toFixed(1)} MiB; stopped by SIGTERM with exit 0`,
    );
  } finally {
    attacking = false;
    await flood?.stop();
    for (const c of held) c.close();
    conn?.close();
    await Promise.all([client, ...streamClients].map((end) => end.close().catch(() => {})));
    await proxy.stop();
    await dns.close();
    await Promise.all([
      good.close(),
      streaming.process.stop(),
      tcpEcho.close(),
      namedUdp.close(),
      namedTcp.close(),
    ]);
  }
});

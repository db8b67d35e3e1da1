/**
 * Targets by name whose DNS stalls, through the real program: a DNS server of the test's own
 * (`TestDns`), reached through a `resolv.conf` of the proxy's own in a mount namespace, never
 * the machine's resolver.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { freeTcpUdpPort, freeUdpPort, stopProxy, TestDns, udpEcho, UdpEnd } from "./datagrams.ts";
import { DENO_RUN, echoBackend, MAIN, ping, Process, ROOT } from "./harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const LAUNCHER = `${ROOT}tests/integration/listen_fds.py`;

/** A loopback address for the test's DNS server, unused by anything else here. */
const DNS_ADDRESS = "127.0.0.77";

Deno.test("stalled name lookups freeze nothing: 40 TCP and 40 datagram clients of a name wait, another listener answers within 1 s; all are served once DNS answers, with one lookup", async () => {
  const dns = new TestDns(DNS_ADDRESS, { "backend.stall.test": "127.0.0.1" });
  const ip = udpEcho();
  const namedPort = freeTcpUdpPort();
  const tcpBackend = echoBackend({ hostname: "127.0.0.1", port: namedPort });
  const udpBackend = udpEcho("127.0.0.1", namedPort);
  const [udpIp, tcpNamed] = [freeUdpPort(), freeTcpUdpPort()];
  const udpNamed = freeUdpPort();
  const proxy = new Process(dns.inNamespace()[0], [
    ...dns.inNamespace().slice(1),
    LAUNCHER,
    `--udp=${udpIp}`,
    `--tcp=${tcpNamed}`,
    `--udp=${udpNamed}`,
    "--env=LISTEN_FDNAMES=ip:tcp-named:udp-named",
    "--",
    ...DENO_RUN,
    MAIN,
    "--connect-timeout=60s",
    `--target=ip=127.0.0.1:${ip.port}`,
    `--target=tcp-named=backend.stall.test:${namedPort}`,
    `--target=udp-named=backend.stall.test:${namedPort}`,
  ]);
  const waiting: Deno.Conn[] = [];
  const named = Array.from({ length: 40 }, () => new UdpEnd());
  const client = new UdpEnd();
  try {
    await proxy.waitForLog(/Forwarding /);
    equal(
      decoder.decode((await client.ask(encoder.encode("before"), "127.0.0.1", udpIp))[0]),
      "before",
    );
    for (let i = 0; i < 40; i++) {
      waiting.push(await Deno.connect({ hostname: "127.0.0.1", port: tcpNamed }));
      await named[i].send(encoder.encode(`named ${i}`), "127.0.0.1", udpNamed);
    }
    // Every one of them waits for the same name; the relay must not wait behind them.
    let slowest = 0;
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      const [data] = await client.ask(encoder.encode(`ip ${i}`), "127.0.0.1", udpIp, 1000);
      slowest = Math.max(slowest, performance.now() - started);
      equal(decoder.decode(data), `ip ${i}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // One lookup for the name while it stalls: its A and AAAA queries (glibc asks both).
    const queries = dns.queries.get("backend.stall.test");
    ok(queries !== undefined && queries <= 2, `${queries} DNS queries for one name`);
    await dns.answer();
    const pings = await Promise.all(waiting.map((conn, i) => ping(conn, i)));
    deepEqual(pings, Array(40).fill(true), "every TCP client that waited is served");
    const replies = await Promise.all(
      named.map(async (end) => decoder.decode((await end.next())[0])),
    );
    deepEqual(replies, named.map((_, i) => `named ${i}`), "every datagram that waited is sent on");
    for (const conn of waiting.splice(0)) conn.close();
    const counts = await stopProxy(proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [
      41,
      51,
      51,
      0,
    ]);
    console.log(
      `stalled DNS: the other listener's slowest answer ${slowest.toFixed(0)} ms while 40 TCP ` +
        `and 40 datagram clients waited; ${queries} DNS queries for the name`,
    );
  } finally {
    for (const conn of waiting) conn.close();
    await Promise.all([...named, client].map((end) => end.close()));
    await proxy.stop();
    await dns.close();
    await Promise.all([ip.close(), tcpBackend.close(), udpBackend.close()]);
  }
});

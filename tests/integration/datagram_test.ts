/**
 * Datagram sockets (ListenDatagram=) through the real program: started by
 * `systemd-socket-activate --datagram` or by a launcher that passes stream and datagram sockets
 * together, against real backends (UDP and Unix echo servers, dnsmasq) and real clients (Deno's
 * UDP sockets, `dgram.py`, dig and kdig).
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  BIG_TXT,
  Dnsmasq,
  dnsQuery,
  fdCount,
  freeTcpUdpPort,
  freeUdpPort,
  pythonAsk,
  pythonEcho,
  rssKiB,
  stopProxy,
  udpEcho,
  UdpEnd,
} from "./datagrams.ts";
import {
  AS_JOURNAL_STREAM,
  DENO_RUN,
  echoBackend,
  expectClosed,
  MAIN,
  NotifyReceiver,
  ping,
  Process,
  pseudoRandomBytes,
  ROOT,
  startProxy,
  tempSocketPath,
} from "./harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const LAUNCHER = `${ROOT}tests/integration/listen_fds.py`;

/** Starts the proxy on a UDP socket at 127.0.0.1:port; it runs from the first datagram on. */
function startUdpProxy(port: number, args: string[], listen = [`127.0.0.1:${port}`]) {
  return startProxy({ listen, args, activateFlags: ["--datagram"] });
}

Deno.test("the first datagram, queued before the proxy runs, is answered; replies keep coming", async () => {
  const backend = udpEcho();
  const port = freeUdpPort();
  const proxy = await startUdpProxy(port, [`127.0.0.1:${backend.port}`]);
  const client = new UdpEnd();
  try {
    // One datagram, no retry: it starts the proxy and waits in the socket's queue meanwhile.
    const [first, from] = await client.ask(encoder.encode("first"), "127.0.0.1", port, 30_000);
    equal(decoder.decode(first), "first");
    deepEqual([from.hostname, from.port], ["127.0.0.1", port], "from the address we sent to");
    await proxy.waitForLog(
      /Forwarding 127\.0\.0\.1:\d+ \(fd 3, "unknown", datagrams\) to .*; at most 256 sessions\./,
    );
    for (let i = 0; i < 20; i++) {
      const [data] = await client.ask(encoder.encode(`n${i}`), "127.0.0.1", port);
      equal(decoder.decode(data), `n${i}`);
    }
    equal(backend.received, 21, "one datagram to the backend per datagram from the client");
    const counts = await stopProxy(proxy);
    deepEqual(counts, {
      connections: 0,
      sessionsOpen: 0,
      sessions: 1,
      evicted: 0,
      forwarded: 21,
      returned: 21,
      undeliverable: 0,
      undeliverableTo: "",
      dropped: 0,
      refusedBecause: "",
    });
  } finally {
    await client.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("datagram boundaries: 0, 1, 1472 and 65,507 bytes pass intact, one for one", async () => {
  const backend = udpEcho();
  const port = freeUdpPort();
  const proxy = await startUdpProxy(port, [`127.0.0.1:${backend.port}`]);
  const client = new UdpEnd();
  try {
    const sizes = [0, 1, 1472, 65_507, 1, 0, 65_507, 1472];
    for (const [i, size] of sizes.entries()) {
      const data = pseudoRandomBytes(size, i + 1);
      const [back] = await client.ask(data, "127.0.0.1", port, 30_000);
      equal(back.length, size);
      deepEqual(back, data, `datagram ${i} of ${size} bytes`);
    }
    equal(backend.received, sizes.length);
    const counts = await stopProxy(proxy);
    equal(counts.forwarded, sizes.length);
    equal(counts.returned, sizes.length);
    equal(counts.dropped, 0);
  } finally {
    await client.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("IPv6: a [::1] listener to a [::1]:PORT target; -c 1 admits one session", async () => {
  const backend = udpEcho("::1");
  const port = freeUdpPort("::1");
  const proxy = await startUdpProxy(port, ["-c", "1", `[::1]:${backend.port}`], [`[::1]:${port}`]);
  const [first, second] = [new UdpEnd("::1"), new UdpEnd("::1")];
  try {
    const data = pseudoRandomBytes(1452, 6);
    const [back, from] = await first.ask(data, "::1", port, 30_000);
    deepEqual(back, data);
    deepEqual([from.hostname, from.port], ["::1", port]);
    await proxy.waitForLog(/Forwarding \[::1\]:\d+ \(fd 3, "unknown", datagrams\) to \[::1\]:\d+/);
    // The one session allowed is taken: the second client is dropped.
    await second.send(encoder.encode("over"), "::1", port);
    await first.ask(encoder.encode("again"), "::1", port);
    await proxy.waitForLog(/Hit connection limit, dropping a datagram from a new client/);
    const counts = await stopProxy(proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [1, 2, 2, 1]);
    equal(counts.refusedBecause, "1 over --connections-max");
  } finally {
    await first.close();
    await second.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("64 clients at once: one session each, every reply to its client, in order", async () => {
  // The backend sees one stable peer (the session's socket) per client.
  const peers = new Set<number>();
  const backend = new UdpEnd("127.0.0.1", 0, (data, from, end) => {
    peers.add(from.port);
    end.send(data, from.hostname, from.port).catch(() => {});
  });
  const port = freeUdpPort();
  const proxy = await startUdpProxy(port, [`127.0.0.1:${backend.port}`]);
  const clients = Array.from({ length: 64 }, () => new UdpEnd());
  try {
    await clients[0].ask(encoder.encode("start"), "127.0.0.1", port, 30_000);
    const rounds = 10;
    const window = 2;
    await Promise.all(clients.map(async (client, c) => {
      for (let round = 0; round < rounds; round++) {
        const sent = Array.from({ length: window }, (_, k) => `client ${c} #${round * window + k}`);
        for (const text of sent) await client.send(encoder.encode(text), "127.0.0.1", port);
        const got = [];
        for (let k = 0; k < window; k++) got.push(decoder.decode((await client.next())[0]));
        deepEqual(got, sent);
      }
    }));
    const counts = await stopProxy(proxy);
    equal(counts.sessions, 64);
    equal(counts.forwarded, 1 + 64 * rounds * window);
    equal(counts.returned, counts.forwarded);
    equal(counts.dropped, 0);
    equal(peers.size, 64);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("the DNS shape: dnsmasq over UDP and TCP through one proxy, dig and kdig, a 4 KB answer", async () => {
  const dns = await Dnsmasq.start(freeTcpUdpPort());
  const port = freeTcpUdpPort();
  const proxy = new Process(LAUNCHER, [
    `--tcp=${port}`,
    `--udp=${port}`,
    "--env=LISTEN_FDNAMES=dns-tcp:dns-udp",
    "--",
    ...DENO_RUN,
    MAIN,
    `127.0.0.1:${dns.port}`,
  ]);
  try {
    await proxy.waitForLog(
      new RegExp(
        `Forwarding 127\\.0\\.0\\.1:${port} \\(fd 3, "dns-tcp"\\) to 127\\.0\\.0\\.1:${dns.port}, ` +
          `127\\.0\\.0\\.1:${port} \\(fd 4, "dns-udp", datagrams\\) to .*; ` +
          "at most 256 connections and 256 sessions\\.",
      ),
    );
    const server = ["@127.0.0.1", "-p", String(port)];
    for (const transport of ["+notcp", "+tcp"]) {
      equal(
        (await dnsQuery("dig", [...server, transport, "+short", "a.test"])).trim(),
        "192.0.2.1",
      );
      const k = await dnsQuery("kdig", [...server, transport, "a.test"]);
      match(k, /a\.test\.\s+\d+\s+IN\s+A\s+192\.0\.2\.1/);
      match(
        k,
        new RegExp(`From 127\\.0\\.0\\.1@${port}\\(${transport === "+tcp" ? "TCP" : "UDP"}\\)`),
      );
    }
    // The large EDNS answer in one UDP datagram: not truncated (+ignore: no retry over TCP).
    const big = await dnsQuery("dig", [...server, "+bufsize=4096", "+ignore", "big.test", "TXT"]);
    const flags = /;; flags: ([a-z ]+);/.exec(big)![1].split(" ");
    ok(!flags.includes("tc"), `not truncated: ${flags}`);
    match(big, /ANSWER: 15,/);
    const size = Number(/MSG SIZE\s+rcvd: (\d+)/.exec(big)![1]);
    ok(size > 3900 && size <= 4096, `an answer of ${size} bytes`);
    for (const text of BIG_TXT) ok(big.includes(`"${text}"`), "every TXT string");
    const kbig = await dnsQuery("kdig", [...server, "+bufsize=4096", "+notcp", "big.test", "TXT"]);
    match(kbig, /Flags: qr aa rd ra;/);
    match(kbig, new RegExp(`From 127\\.0\\.0\\.1@${port}\\(UDP\\)`));
    const counts = await stopProxy(proxy);
    equal(counts.connections, 2, "dig +tcp and kdig +tcp");
    equal(counts.forwarded, 4);
    equal(counts.returned, 4);
    equal(counts.dropped, 0);
  } finally {
    await proxy.stop();
    await dns.stop();
  }
});

Deno.test("-c counts stream connections and datagram sessions apart", async () => {
  const backendPort = freeTcpUdpPort();
  const tcpBackend = echoBackend({ hostname: "127.0.0.1", port: backendPort });
  const udpBackend = udpEcho("127.0.0.1", backendPort);
  const port = freeTcpUdpPort();
  const proxy = new Process(LAUNCHER, [
    `--tcp=${port}`,
    `--udp=${port}`,
    "--",
    ...DENO_RUN,
    MAIN,
    "-c",
    "1",
    `127.0.0.1:${backendPort}`,
  ]);
  const [first, second] = [new UdpEnd(), new UdpEnd()];
  let held: Deno.Conn | undefined;
  try {
    await proxy.waitForLog(/Forwarding /);
    held = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(held, 1), "one connection");
    const [data] = await first.ask(encoder.encode("session"), "127.0.0.1", port);
    equal(decoder.decode(data), "session", "and one session beside it");
    await second.send(encoder.encode("over"), "127.0.0.1", port);
    await first.ask(encoder.encode("again"), "127.0.0.1", port);
    const refused = await Deno.connect({ hostname: "127.0.0.1", port });
    await expectClosed(refused);
    refused.close();
    ok(await ping(held, 2), "the held connection goes on");
    held.close();
    held = undefined;
    const counts = await stopProxy(proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.dropped], [1, 2, 1]);
    equal(counts.refusedBecause, "1 over --connections-max");
    match(proxy.stderr, /Hit connection limit, refusing connection/);
    match(
      proxy.stderr,
      /Hit connection limit, dropping a datagram from a new client \(1 session open\)/,
    );
  } finally {
    held?.close();
    await first.close();
    await second.close();
    await proxy.stop();
    await tcpBackend.close();
    await udpBackend.close();
  }
});

Deno.test("the DNS query that starts the proxy is answered (dig and kdig, one try each)", async () => {
  const dns = await Dnsmasq.start(freeTcpUdpPort());
  const once: Record<string, string[]> = {
    dig: ["+tries=1", "+timeout=30"],
    kdig: ["+retry=0", "+timeout=30"],
  };
  try {
    for (const [client, options] of Object.entries(once)) {
      const port = freeUdpPort();
      const proxy = await startUdpProxy(port, [`127.0.0.1:${dns.port}`]);
      try {
        const server = ["@127.0.0.1", "-p", String(port)];
        const answer = await dnsQuery(client, [...server, ...options, "+short", "a.test"]);
        equal(answer.trim(), "192.0.2.1", client);
        const counts = await stopProxy(proxy);
        deepEqual([counts.forwarded, counts.returned], [1, 1]);
      } finally {
        await proxy.stop();
      }
    }
  } finally {
    await dns.stop();
  }
});

Deno.test("refused at start: --proxy-protocol or a vsock target with a datagram socket", async () => {
  const cases: Array<[string[], RegExp]> = [
    [
      ["--proxy-protocol=v2", "127.0.0.1:9"],
      /--proxy-protocol cannot be used with the datagram socket fd 3 \("unknown"\)/,
    ],
    [["vsock:2:1234"], /cannot be forwarded to vsock:2:1234: Linux has no vsock datagrams/],
  ];
  for (const [args, message] of cases) {
    const port = freeUdpPort();
    const proxy = await startUdpProxy(port, args);
    const client = new UdpEnd();
    try {
      await client.send(encoder.encode("start"), "127.0.0.1", port);
      const { code, stderr } = await proxy.exit();
      equal(code, 1, stderr);
      match(stderr, message);
      ok(!/Forwarding/.test(stderr), "nothing served");
    } finally {
      await client.close();
      await proxy.stop();
    }
  }
});

Deno.test("without --allow-ffi the proxy refuses to start, naming the flag (a datagram socket passed)", async () => {
  const port = freeUdpPort();
  const permissions = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).permissions.proxy;
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["127.0.0.1:9"],
    activateFlags: ["--datagram"],
    // The deployment set without --allow-ffi (the Deno under test, as DENO_RUN's).
    denoRun: [
      ...DENO_RUN.slice(0, DENO_RUN.indexOf("run")), // The Deno under test (and its environment).
      "run",
      "-q",
      "--no-prompt",
      "--no-config",
      "--unstable-net",
      "--allow-net",
      `--allow-env=${permissions.env.join(",")}`,
    ],
  });
  const client = new UdpEnd();
  try {
    await client.send(encoder.encode("start"), "127.0.0.1", port);
    const { code, stderr } = await proxy.exit();
    equal(code, 1, stderr);
    match(
      stderr,
      new RegExp(
        "socket-proxyd serves its sockets through the C library, which Deno's permissions do " +
          "not let it open: add --allow-ffi=/lib/x86_64-linux-gnu/libc\\.so\\.6 to the deno flags",
      ),
    );
  } finally {
    await client.close();
    await proxy.stop();
  }
});

Deno.test("a flood of distinct client addresses against -c 4: dropped, counted, logged, bounded", async () => {
  const backend = udpEcho();
  const port = freeUdpPort();
  const proxy = await startUdpProxy(port, ["-c", "4", `127.0.0.1:${backend.port}`]);
  const admitted = Array.from({ length: 4 }, () => new UdpEnd());
  try {
    for (const [i, client] of admitted.entries()) {
      const [data] = await client.ask(encoder.encode(`admitted ${i}`), "127.0.0.1", port, 30_000);
      equal(decoder.decode(data), `admitted ${i}`);
    }
    const pid = proxy.child.pid;
    const fdsBefore = fdCount(pid);
    const rssBefore = rssKiB(pid);
    const started = Date.now();
    let flooded = 0;
    for (let host = 2; host <= 254; host++) {
      // 40 source ports from each of 127.0.0.2 .. 127.0.0.254: 10,120 new clients.
      for (let k = 0; k < 40; k++) {
        const socket = Deno.listenDatagram({
          transport: "udp",
          hostname: `127.0.0.${host}`,
          port: 0,
        });
        await socket.send(new Uint8Array([k]), { transport: "udp", hostname: "127.0.0.1", port });
        socket.close();
        flooded++;
      }
      // The listener's queue is read in order: this reply means the flood so far was read.
      const [data] = await admitted[host % 4].ask(encoder.encode(`${host}`), "127.0.0.1", port);
      equal(decoder.decode(data), `${host}`, "admitted clients are served all along");
    }
    const seconds = (Date.now() - started) / 1000;
    equal(fdCount(pid), fdsBefore, "no descriptor per refused client");
    const growth = rssKiB(pid) - rssBefore;
    ok(growth < 32 * 1024, `RSS grew ${growth} KiB over ${flooded} refused clients`);
    const lines = proxy.stderr.match(
      /Hit connection limit, dropping a datagram from a new client \(4 sessions open[;)]/g,
    ) ?? [];
    ok(lines.length >= 1, "the limit is logged");
    ok(lines.length <= Math.ceil(seconds) + 1, `throttled: ${lines.length} lines in ${seconds}s`);
    const counts = await stopProxy(proxy);
    equal(counts.sessions, 4);
    equal(counts.dropped, flooded, "every datagram of a refused client is counted");
    equal(counts.refusedBecause, `${flooded} over --connections-max`);
    // Every refusal is in the log: the lines, and the counts of those held back (at the latest
    // written at stop).
    const held = [...proxy.stderr.matchAll(/: (\d+) more datagram\(s\) from new clients dropped/g)]
      .reduce((sum, m) => sum + Number(m[1]), 0);
    const logged = (proxy.stderr.match(/dropping a datagram from a new client/g) ?? []).length;
    equal(logged + held, flooded, "each refusal logged or counted in a later line");
    equal(counts.forwarded, 4 + 253);
    equal(counts.returned, 4 + 253);
    console.log(
      `flood: ${flooded} clients in ${seconds.toFixed(1)}s, fds ${fdsBefore} before and after, ` +
        `RSS ${rssBefore} -> ${rssBefore + growth} KiB, ${lines.length} log lines`,
    );
  } finally {
    await Promise.all(admitted.map((client) => client.close()));
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("out of descriptors (ulimit -n 64): sessions that get no socket are dropped, counted; all recovers", async () => {
  const backendPort = freeTcpUdpPort();
  const tcpBackend = echoBackend({ hostname: "127.0.0.1", port: backendPort });
  const udpBackend = udpEcho("127.0.0.1", backendPort);
  const port = freeTcpUdpPort();
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const proxy = new Process("sh", [
    "-c",
    'ulimit -n 64 && exec "$@"',
    "sh",
    LAUNCHER,
    `--tcp=${port}`,
    `--udp=${port}`,
    "--",
    ...DENO_RUN,
    MAIN,
    "--idle-timeout=1s",
    `127.0.0.1:${backendPort}`,
  ], { NOTIFY_SOCKET: receiver.address });
  const clients = Array.from({ length: 80 }, () => new UdpEnd());
  try {
    await proxy.waitForLog(/Forwarding /);
    let answered = 0;
    await Promise.all(clients.map(async (client) => {
      await client.send(new Uint8Array([1]), "127.0.0.1", port);
      await client.next(3000).then(() => answered++, () => {});
    }));
    ok(answered > 0 && answered < clients.length, `${answered} of ${clients.length} answered`);
    ok(fdCount(proxy.child.pid) <= 64);
    await proxy.waitForLog(/cannot open a socket \(errno 24\)/);
    // Once the sessions have ended (--idle-timeout), new clients of either kind are served.
    await receiver.waitFor((m) => /; 0 session\(s\) open, [1-9]\d* served/.test(m.STATUS ?? ""));
    const [data] = await clients[0].ask(encoder.encode("later"), "127.0.0.1", port);
    equal(decoder.decode(data), "later");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    ok(await ping(conn, 3), "a stream connection too");
    conn.close();
    const counts = await stopProxy(proxy);
    equal(counts.forwarded + counts.dropped, clients.length + 1, "every datagram accounted for");
    equal(counts.returned, answered + 1);
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await proxy.stop();
    await receiver.close();
    await tcpBackend.close();
    await udpBackend.close();
  }
});

Deno.test("idle exit: --exit-idle-time=1s after the last session ends (--idle-timeout=1s), not before", async () => {
  const backend = udpEcho();
  const port = freeUdpPort();
  const proxy = await startUdpProxy(port, [
    "--exit-idle-time=1s",
    "--idle-timeout=1s",
    `127.0.0.1:${backend.port}`,
  ]);
  const client = new UdpEnd();
  let ended = false;
  proxy.child.status.then(() => ended = true);
  try {
    await client.ask(encoder.encode("start"), "127.0.0.1", port, 30_000);
    // Traffic every 300 ms for 3 s keeps the session, and so the proxy, alive.
    for (let i = 0; i < 10; i++) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const [data] = await client.ask(encoder.encode(`${i}`), "127.0.0.1", port);
      equal(decoder.decode(data), `${i}`);
      ok(!ended, "still running while the session is used");
    }
    const last = performance.now();
    const { code, stderr } = await proxy.exit();
    const after = performance.now() - last;
    equal(code, 0, stderr);
    match(stderr, /Exiting after 1s without connections\./);
    // The session ends 1 s after its last datagram; the proxy 1 s after that.
    ok(after >= 1900, `exited ${Math.round(after)} ms after the last datagram`);
  } finally {
    await client.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("backend down then up: each datagram lost is counted undeliverable and logged at warning priority naming the target; others undisturbed; served once up", async () => {
  const live = udpEcho();
  const downPort = freeUdpPort();
  const [portA, portB] = [freeUdpPort(), freeUdpPort()];
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const proxy = await startProxy({
    listen: [`127.0.0.1:${portA}`, `127.0.0.1:${portB}`],
    fdnames: ["down", "up"],
    activateFlags: ["--datagram"],
    env: { NOTIFY_SOCKET: receiver.address },
    wrapper: AS_JOURNAL_STREAM, // Lines carry their syslog priority, as in the journal.
    args: [`--target=down=127.0.0.1:${downPort}`, `--target=up=127.0.0.1:${live.port}`],
  });
  const [a, b] = [new UdpEnd(), new UdpEnd()];
  let late: UdpEnd | undefined;
  try {
    await b.ask(encoder.encode("start"), "127.0.0.1", portB, 30_000);
    for (let i = 0; i < 20; i++) {
      // Each of a's datagrams meets a closed port: ICMP port unreachable on its session.
      await a.send(encoder.encode(`a${i}`), "127.0.0.1", portA);
      const [data] = await b.ask(encoder.encode(`b${i}`), "127.0.0.1", portB);
      equal(decoder.decode(data), `b${i}`, "the other client's session goes on");
    }
    const line = await proxy.waitForLog(/^<4>Failed to deliver a datagram to .*$/m);
    equal(
      line,
      `<4>Failed to deliver a datagram to 127.0.0.1:${downPort} for 127.0.0.1:${a.port}: ` +
        "Connection refused (nothing is bound there: ICMP port unreachable, or no Unix socket)",
    );
    // Live: STATUS= says so while the proxy runs, within a second.
    await receiver.waitFor((m) => /, 20 undeliverable \(20 to the target\)$/.test(m.STATUS ?? ""));
    late = udpEcho("127.0.0.1", downPort);
    const [data] = await a.ask(encoder.encode("now"), "127.0.0.1", portA);
    equal(decoder.decode(data), "now", "served as soon as the backend is up");
    equal(late.received, 1);
    const counts = await stopProxy(proxy);
    deepEqual(
      [counts.sessions, counts.forwarded, counts.returned, counts.undeliverable, counts.dropped],
      [2, 22, 22, 20, 0],
    );
    equal(counts.undeliverableTo, "20 to the target");
    // The 19 held back by the throttle are in the log too.
    const held = [
      ...proxy.stderr.matchAll(
        /<4>Failed to deliver datagrams: (\d+) more not delivered to the target/g,
      ),
    ]
      .reduce((sum, m) => sum + Number(m[1]), 0);
    const lines = (proxy.stderr.match(/<4>Failed to deliver a datagram to /g) ?? []).length;
    equal(lines + held, 20, proxy.stderr);
  } finally {
    await a.close();
    await b.close();
    await late?.close();
    await proxy.stop();
    await receiver.close();
    await live.close();
  }
});

Deno.test("SIGTERM: a session waiting for its reply still gets it; the stop line counts it", async () => {
  const backend = new UdpEnd(); // Answers only when the test says so.
  const port = freeUdpPort();
  const proxy = await startUdpProxy(port, [`127.0.0.1:${backend.port}`]);
  const [waiting, answered] = [new UdpEnd(), new UdpEnd()];
  try {
    await answered.send(encoder.encode("one"), "127.0.0.1", port);
    const [one, fromOne] = await backend.next(30_000);
    await backend.send(one, fromOne.hostname, fromOne.port);
    await answered.next();
    await waiting.send(encoder.encode("question"), "127.0.0.1", port);
    const [question, from] = await backend.next();
    proxy.child.kill("SIGTERM");
    await proxy.waitForLog(/Received SIGTERM, stopping/);
    const answer = encoder.encode(`answer to ${decoder.decode(question)}`);
    await backend.send(answer, from.hostname, from.port);
    const [reply] = await waiting.next();
    equal(decoder.decode(reply), "answer to question");
    const { code, stderr } = await proxy.exit();
    equal(code, 0, stderr);
    match(
      stderr,
      new RegExp(
        "Stopped: 0 connection\\(s\\) served, none cut off; 0 session\\(s\\) open, 2 served, " +
          "datagrams 2 forwarded, 2 returned, 0 dropped, none cut off\\.",
      ),
    );
  } finally {
    await waiting.close();
    await answered.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("SIGTERM: an unanswered session ends after a quiet second, or is cut off by --drain-timeout", async () => {
  for (const drainTimeout of [null, "200ms"]) {
    const backend = new UdpEnd(); // Never answers.
    const port = freeUdpPort();
    const args = drainTimeout === null ? [] : [`--drain-timeout=${drainTimeout}`];
    const proxy = await startUdpProxy(port, [...args, `127.0.0.1:${backend.port}`]);
    const client = new UdpEnd();
    try {
      await client.send(encoder.encode("unanswered"), "127.0.0.1", port);
      await backend.next(30_000);
      proxy.child.kill("SIGTERM");
      const { code, stderr } = await proxy.exit();
      equal(code, 0, stderr);
      const ending = drainTimeout === null ? "none cut off" : "1 cut off by the drain timeout";
      match(
        stderr,
        new RegExp(
          "; 0 session\\(s\\) open, 1 served, datagrams 1 forwarded, 0 returned, 0 dropped, " +
            `${ending}\\.`,
        ),
      );
    } finally {
      await client.close();
      await proxy.stop();
      await backend.close();
    }
  }
});

Deno.test("a Unix datagram listener to a UDP target: a named client gets replies, a nameless one is heard", async () => {
  const backend = udpEcho();
  const path = tempSocketPath("dgram.sock");
  const proxy = await startProxy({
    listen: [path],
    activateFlags: ["--datagram"],
    args: [`127.0.0.1:${backend.port}`],
  });
  try {
    const named = await pythonAsk(`unix:${path}`, ["--bind=auto", "--size=1000", "--count=3"]);
    deepEqual(named, Array(3).fill({ size: 1000, intact: true, from: path }));
    // No address to answer to: one-way, as for a log socket. It still reaches the backend.
    deepEqual(await pythonAsk(`unix:${path}`, ["--no-reply", "--size=10"]), [{ sent: 10 }]);
    await backend.waitForReceived(4);
    await proxy.waitForLog(/Forwarding .*dgram\.sock \(fd 3, "unknown", datagrams\)/);
    const counts = await stopProxy(proxy);
    equal(counts.sessions, 2);
    equal(counts.forwarded, 4);
    equal(counts.returned, 3);
    equal(counts.dropped, 1, "the backend's reply to the nameless client");
  } finally {
    await proxy.stop();
    await backend.close();
    Deno.removeSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  }
});

Deno.test("a UDP listener to Unix datagram targets, a path and an @abstract name", async () => {
  const path = tempSocketPath("backend.sock");
  const abstract = `socket-proxyd-test-${crypto.randomUUID()}`;
  const byPath = await pythonEcho(`unix:${path}`);
  const byName = await pythonEcho(`abstract:${abstract}`);
  const [portA, portB] = [freeUdpPort(), freeUdpPort()];
  const proxy = await startProxy({
    listen: [`127.0.0.1:${portA}`, `127.0.0.1:${portB}`],
    fdnames: ["path", "abstract"],
    activateFlags: ["--datagram"],
    // Deno's permissions are asked for a Unix target even though libc reaches it (app.ts).
    denoFlags: [`--allow-read=${path}`, `--allow-write=${path}`],
    args: [`--target=path=${path}`, `--target=abstract=@${abstract}`],
  });
  const client = new UdpEnd();
  try {
    for (let i = 0; i < 3; i++) {
      const data = pseudoRandomBytes(4000, i + 1);
      deepEqual((await client.ask(data, "127.0.0.1", portA, 30_000))[0], data);
      deepEqual((await client.ask(data, "127.0.0.1", portB, 30_000))[0], data);
    }
    // The backends see the session's socket, named by the kernel so that they can answer.
    match(byPath.stderr, /got 4000 from @[0-9a-f]{5}\n/);
    match(byName.stderr, /got 4000 from @[0-9a-f]{5}\n/);
    const counts = await stopProxy(proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [2, 6, 6, 0]);
  } finally {
    await client.close();
    await proxy.stop();
    await byPath.stop();
    await byName.stop();
    Deno.removeSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  }
});

Deno.test("Unix to Unix: a 200,000-byte datagram passes intact; one of 300,000 is dropped, counted", async () => {
  const backendPath = tempSocketPath("backend.sock");
  const path = tempSocketPath("dgram.sock");
  const backend = await pythonEcho(`unix:${backendPath}`);
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const proxy = await startProxy({
    listen: [path],
    activateFlags: ["--datagram"],
    env: { NOTIFY_SOCKET: receiver.address },
    denoFlags: [`--allow-read=${backendPath}`, `--allow-write=${backendPath}`],
    args: [backendPath],
  });
  try {
    deepEqual(await pythonAsk(`unix:${path}`, ["--bind=auto", "--size=200000"]), [
      { size: 200_000, intact: true, from: path },
    ]);
    deepEqual(await pythonAsk(`unix:${path}`, ["--bind=auto", "--size=300000", "--no-reply"]), [
      { sent: 300_000 },
    ]);
    // Read in order: the next datagram's reply means the big one was taken (and not sent on).
    deepEqual(await pythonAsk(`unix:${path}`, ["--bind=auto", "--size=1"]), [
      { size: 1, intact: true, from: path },
    ]);
    ok(!/got 300000/.test(backend.stderr), "nothing truncated reached the backend");
    const counts = await stopProxy(proxy);
    deepEqual([counts.forwarded, counts.returned, counts.dropped], [2, 2, 1]);
    const stopping = await receiver.waitFor((m) => m.STOPPING === "1");
    equal(
      stopping.STATUS,
      "Stopping: 0 active, 0 served; 2 session(s) open, 2 served, datagrams 2 forwarded, " +
        "2 returned, 1 dropped",
    );
  } finally {
    await proxy.stop();
    await receiver.close();
    await backend.stop();
    for (const p of [backendPath, path]) {
      Deno.removeSync(p.slice(0, p.lastIndexOf("/")), { recursive: true });
    }
  }
});

Deno.test("replies come from the address the client sent to, on wildcard listeners (own netns)", async () => {
  // A network namespace of the test's own, with only its loopback: wildcard listeners there
  // reach nothing else. The activator's pid names it for the processes that join it.
  // Dual-stack [::] and 0.0.0.0 listeners: for dnsmasq (port 53), and for an echo (port 7).
  const [dual, v4, echoDual, echoV4] = [5353, 5354, 5355, 5356];
  const proxy = new Process("unshare", [
    "--net",
    "--",
    "sh",
    "-c",
    'ip link set lo up && exec "$@"',
    "sh",
    "systemd-socket-activate",
    "--datagram",
    ...[dual, `0.0.0.0:${v4}`, echoDual, `0.0.0.0:${echoV4}`].map((l) => `--listen=${l}`),
    "--fdname=dns:dns:echo:echo",
    "--",
    ...DENO_RUN,
    MAIN,
    "--target=echo=127.0.0.1:7",
    "127.0.0.1:53",
  ]);
  await proxy.waitForLog(/Listening on 0\.0\.0\.0:5356 as 6\./);
  match(proxy.stderr, /Listening on \[::\]:5353 as 3\./);
  const ns = ["nsenter", `--net=/proc/${proxy.child.pid}/ns/net`, "--"];
  const echo = await pythonEcho("udp:127.0.0.1:7", ns);
  const dns = await Dnsmasq.start(53, ns);
  try {
    const cases: Array<[string, string]> = [
      [`udp:127.0.0.2:${echoV4}`, `127.0.0.2:${echoV4}`],
      [`udp:127.0.0.1:${echoV4}`, `127.0.0.1:${echoV4}`],
      [`udp:127.0.0.3:${echoDual}`, `127.0.0.3:${echoDual}`],
      [`udp6:::1:${echoDual}`, `::1:${echoDual}`],
    ];
    for (const [address, from] of cases) {
      const [reply] = await pythonAsk(address, ["--size=100", "--count=2", "--timeout=30"], ns);
      deepEqual(reply, { size: 100, intact: true, from }, address);
    }
    // dig drops an answer from any other address than it asked ("reply from unexpected source").
    for (const server of ["127.0.0.2", "127.0.0.4", "::1"]) {
      for (const port of server === "::1" ? [dual] : [v4, dual]) {
        const [command, ...args] = [
          ...ns,
          "dig",
          `@${server}`,
          "-p",
          String(port),
          "+tries=1",
          "+short",
          "a.test",
        ];
        equal((await dnsQuery(command, args)).trim(), "192.0.2.1", `${server} port ${port}`);
      }
    }
    const counts = await stopProxy(proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [9, 13, 13, 0]);
  } finally {
    await dns.stop();
    await echo.stop();
    await proxy.stop();
  }
});

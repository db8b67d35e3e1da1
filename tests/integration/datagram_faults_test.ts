/**
 * Datagram faults an operator meets, through the real program: live STATUS= counts, replies a
 * Unix client cannot receive, a backend that keeps sending, a flood of one-datagram clients,
 * client-chosen names in the log.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { freeTcpUdpPort, freeUdpPort, stopProxy, udpEcho, UdpEnd } from "./datagrams.ts";
import {
  AS_JOURNAL_STREAM,
  DENO_RUN,
  MAIN,
  NotifyReceiver,
  Process,
  ROOT,
  startProxy,
  tempSocketPath,
} from "./harness.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const LAUNCHER = `${ROOT}tests/integration/listen_fds.py`;

/** The datagrams forwarded, as a STATUS= line says, or -1. */
function forwardedIn(message: Record<string, string>): number {
  return Number(/datagrams (\d+) forwarded/.exec(message.STATUS ?? "")?.[1] ?? -1);
}

/** Starts the proxy on a UDP socket at 127.0.0.1:port with `args`, reporting to `receiver`. */
function udpProxy(port: number, args: string[], receiver?: NotifyReceiver): Promise<Process> {
  return startProxy({
    listen: [`127.0.0.1:${port}`],
    activateFlags: ["--datagram"],
    env: receiver === undefined ? {} : { NOTIFY_SOCKET: receiver.address },
    args,
  });
}

Deno.test("live STATUS=: under steady traffic in one session the counts are never more than a second old; idle, nothing is sent", async () => {
  const backend = udpEcho();
  const port = freeUdpPort();
  const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
  const proxy = await udpProxy(port, [`127.0.0.1:${backend.port}`], receiver);
  const client = new UdpEnd();
  try {
    await client.ask(encoder.encode("start"), "127.0.0.1", port, 30_000);
    let latest = 0;
    // One datagram every 100 ms for 4 s, all in one session; each must show within a second.
    const shown: Promise<void>[] = [];
    for (let i = 2; i <= 41; i++) {
      const sent = performance.now();
      await client.ask(encoder.encode(`${i}`), "127.0.0.1", port);
      shown.push(
        receiver.waitFor((m) => forwardedIn(m) >= i, 0, 1000).then(() => {
          latest = Math.max(latest, performance.now() - sent);
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await Promise.all(shown);
    // Idle (the session stays open for --idle-timeout): no STATUS= at all.
    await receiver.waitFor((m) => forwardedIn(m) === 41);
    const count = receiver.messages.length;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    equal(receiver.messages.length, count, "nothing sent while idle");
    match(
      receiver.messages.at(-1)!.STATUS,
      /; 1 session\(s\) open, 1 served, datagrams 41 forwarded, 41 returned,/,
    );
    console.log(`live STATUS=: each count shown within ${latest.toFixed(0)} ms at the latest`);
    await stopProxy(proxy);
  } finally {
    await client.close();
    await proxy.stop();
    await receiver.close();
    await backend.close();
  }
});

Deno.test("a Unix client the proxy may not write to: the reply is counted undeliverable and the line says which permission is missing; served once granted", async () => {
  const backend = udpEcho();
  const path = tempSocketPath("dgram.sock");
  const dir = path.slice(0, path.lastIndexOf("/"));
  const clientPath = `${dir}/client.sock`;
  // The proxy runs as root without the capabilities that override file permissions, as a
  // DynamicUser= service meets a client's socket of another user.
  const proxy = await startProxy({
    listen: [path],
    activateFlags: ["--datagram"],
    wrapper: [
      "setpriv",
      "--inh-caps=-dac_override,-dac_read_search",
      "--bounding-set=-dac_override,-dac_read_search",
      "--",
      ...AS_JOURNAL_STREAM,
    ],
    args: [`127.0.0.1:${backend.port}`],
  });
  const client = Deno.listenDatagram({ transport: "unixpacket", path: clientPath });
  Deno.chownSync(clientPath, 65534, 65534);
  Deno.chmodSync(clientPath, 0o755);
  try {
    await client.send(encoder.encode("refused"), { transport: "unixpacket", path });
    const line = await proxy.waitForLog(/^<4>Failed to deliver a reply .*$/m, 30_000);
    equal(
      line,
      `<4>Failed to deliver a reply from 127.0.0.1:${backend.port} to ${clientPath}: ` +
        `Permission denied: the proxy's user (uid 0) may not write to the client's socket ` +
        `${clientPath}; give it write permission on that socket file (and search permission on ` +
        "its directories), e.g. through a group both users share, or create the socket with " +
        "mode 0666",
    );
    Deno.chmodSync(clientPath, 0o757);
    await client.send(encoder.encode("allowed"), { transport: "unixpacket", path });
    const [data] = await client.receive();
    equal(decoder.decode(data), "allowed", "answered once the proxy may write");
    const counts = await stopProxy(proxy);
    deepEqual(
      [counts.sessions, counts.forwarded, counts.returned, counts.undeliverable, counts.dropped],
      [1, 2, 1, 1, 0],
    );
    equal(counts.undeliverableTo, "1 to clients");
  } finally {
    client.close();
    await proxy.stop();
    await backend.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a Unix client's name with control characters reaches the log escaped", async () => {
  const path = tempSocketPath("dgram.sock");
  const dir = path.slice(0, path.lastIndexOf("/"));
  const proxy = await startProxy({
    listen: [path],
    activateFlags: ["--datagram"],
    args: [`127.0.0.1:${freeUdpPort()}`], // Nothing there: a line names the client.
  });
  const name = `evil\x1b[31mRED\r${crypto.randomUUID()}`;
  const client = Deno.listenDatagram({ transport: "unixpacket", path: `\0${name}` });
  try {
    await client.send(encoder.encode("x"), { transport: "unixpacket", path });
    const line = await proxy.waitForLog(/Failed to deliver a datagram to .*/, 30_000);
    ok(line.includes(` for @evil\\x1b[31mRED\\x0d${name.slice(-36)}: `), line);
    await stopProxy(proxy);
    const raw = [...proxy.stderr].filter((c) => c !== "\n" && (c < " " || c === "\x7f"));
    deepEqual(raw, [], "no raw control character in the log");
  } finally {
    client.close();
    await proxy.stop();
    Deno.removeSync(dir, { recursive: true });
  }
});

/** A UDP backend that answers each datagram, then sends one more every 5 ms until closed. */
function streamingBackend(): { end: UdpEnd; stop: () => void } {
  const timers: Array<ReturnType<typeof setInterval>> = [];
  const end = new UdpEnd("127.0.0.1", 0, (data, from, self) => {
    timers.push(setInterval(() => {
      self.send(data, from.hostname, from.port).catch(() => {});
    }, 5));
  });
  return { end, stop: () => timers.forEach(clearInterval) };
}

Deno.test("a backend that streams to one datagram: the session ends --idle-timeout after the client's datagram; with --replies-per-datagram=1 after one reply", async () => {
  for (const replies of [null, 1]) {
    const backend = streamingBackend();
    const port = freeUdpPort();
    const receiver = new NotifyReceiver(`\0socket-proxyd-test-${crypto.randomUUID()}`);
    const args = replies === null ? [] : [`--replies-per-datagram=${replies}`];
    const proxy = await udpProxy(port, [
      "--idle-timeout=1s",
      ...args,
      `127.0.0.1:${backend.end.port}`,
    ], receiver);
    const client = new UdpEnd();
    try {
      const started = performance.now();
      await client.send(encoder.encode("one"), "127.0.0.1", port);
      await receiver.waitFor(
        (m) => /; 0 session\(s\) open, 1 served,/.test(m.STATUS ?? ""),
        0,
        20_000,
      );
      const after = performance.now() - started;
      const counts = await stopProxy(proxy);
      equal(counts.forwarded, 1);
      if (replies === null) {
        ok(after >= 1000, `ended ${after.toFixed(0)} ms after the datagram`);
        ok(counts.returned >= 10, `${counts.returned} streamed back meanwhile`);
      } else {
        equal(counts.returned, 1);
      }
      console.log(
        `streaming backend, ${
          replies === null ? "no bound" : `--replies-per-datagram=${replies}`
        }: ` +
          `session ended after ${after.toFixed(0)} ms, ${counts.returned} returned, ` +
          `${counts.dropped} dropped`,
      );
    } finally {
      backend.stop();
      await client.close();
      await proxy.stop();
      await receiver.close();
      await backend.end.close();
    }
  }
});

Deno.test("a flood of one-datagram clients that keeps -c full does not lock a new client out", async () => {
  const backend = udpEcho();
  const port = freeUdpPort();
  const proxy = await udpProxy(port, ["-c", "8", `127.0.0.1:${backend.port}`]);
  let flooding = true;
  let flooded = 0;
  // Four new source addresses a second, each sending once (half of -c 8 a second).
  const flood = (async () => {
    while (flooding) {
      const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.2", port: 0 });
      await socket.send(encoder.encode("once"), { transport: "udp", hostname: "127.0.0.1", port });
      socket.close();
      flooded++;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  })();
  const client = new UdpEnd();
  try {
    await proxy.waitForLog(/Forwarding /, 30_000);
    await proxy.waitForLog(/Hit connection limit, /); // -c is full.
    // -c is full of one-datagram sessions: a new client is still answered, at its first try.
    for (let i = 0; i < 3; i++) {
      const [data] = await client.ask(encoder.encode(`real ${i}`), "127.0.0.1", port, 1000);
      equal(decoder.decode(data), `real ${i}`);
    }
    flooding = false;
    await flood;
    const counts = await stopProxy(proxy);
    ok(counts.evicted >= 1, `${counts.evicted} ended early`);
    match(proxy.stderr, /Hit connection limit, ending the session of 127\.0\.0\.2:\d+, idle for /);
    console.log(
      `one-datagram flood against -c 8: ${flooded} sources, the new client answered at once; ` +
        `${counts.evicted} sessions ended early, ${counts.dropped} datagrams dropped`,
    );
  } finally {
    flooding = false;
    await flood;
    await client.close();
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("start-up: a limit on open files that cannot hold -c is named, with LimitNOFILE=; the defaults fit under 1024", async () => {
  for (const [connectionsMax, warned] of [[5000, true], [256, false]] as const) {
    const port = freeTcpUdpPort();
    const proxy = new Process("sh", [
      "-c",
      'ulimit -n 1024 && exec "$@"',
      "sh",
      LAUNCHER,
      `--tcp=${port}`,
      `--udp=${port}`,
      "--",
      ...DENO_RUN,
      MAIN,
      "-c",
      String(connectionsMax),
      "127.0.0.1:9",
    ]);
    try {
      await proxy.waitForLog(/Forwarding /, 30_000);
      const line = /^The limit on open files.*$/m.exec(proxy.stderr)?.[0];
      if (warned) {
        equal(
          line,
          "The limit on open files (RLIMIT_NOFILE) is 1024, but --connections-max=5000 may need " +
            "15064 file descriptors (2 per stream connection and 1 per datagram session, plus " +
            '64): past 1024, new connections and sessions fail with "Too many open files". Set ' +
            "LimitNOFILE=15064 or more in the service unit, or lower --connections-max.",
        );
      } else equal(line, undefined, proxy.stderr);
      await stopProxy(proxy);
    } finally {
      await proxy.stop();
    }
  }
});

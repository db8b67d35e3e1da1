/**
 * `--transparent` for datagram sockets, through the real program in network namespaces of the
 * test's own (transparency.ts): a client in its own namespace, the proxy in the backend's, the
 * listening sockets in a third; the backend answers with the client address it saw. UDP over
 * IPv4, IPv6 and a dual-stack listener; the start-up refusals (no capability, Unix sockets and
 * targets) and the hint when replies do not come back. Also run as a DynamicUser= service runs
 * it: not root, CAP_NET_ADMIN its only capability, through the packaged wrapper.
 * The stream side is transparent_stream_test.ts.
 */
import { deepEqual, equal, match, notEqual, ok } from "node:assert/strict";
import { freeUdpPort, pythonAsk, stopProxy, udpEcho, UdpEnd } from "./datagrams.ts";
import { DENO_RUN, DEPLOYMENT_FLAGS, MAIN, Process, tempSocketPath } from "./harness.ts";
import {
  AS_SERVICE,
  CLIENTS_V4,
  CLIENTS_V6,
  HOST_V4,
  HOST_V6,
  hostOf,
  PackagedCopy,
  POLICY_ROUTES,
  portOf,
  Scenario,
  seen,
} from "./transparency.ts";

const TRANSPARENT = ["--transparent", "--idle-timeout=2s"];

Deno.test("--transparent, UDP over IPv4: the backend sees each client's own address, not the proxy's", async () => {
  const scenario = await Scenario.start({
    protocol: "udp",
    listen: ["0.0.0.0:5300"],
    args: [...TRANSPARENT, "127.0.0.1:5301"],
  });
  try {
    for (const client of CLIENTS_V4) {
      const answer = await scenario.ask(`${HOST_V4}:5300`, client, 4053);
      equal(hostOf(seen(answer)), client, "the backend saw the client's address");
      notEqual(portOf(seen(answer)), 4053, "and a port the kernel picked");
      equal(answer.from, `${HOST_V4}:5300`, "the reply came from the address the client asked");
    }
    await scenario.proxy.waitForLog(/Forwarding 0\.0\.0\.0:5300 \(fd 3, "unknown", datagrams\)/);
    deepEqual(scenario.peersSeen.map(hostOf), [...CLIENTS_V4], "no other peer, ever");
    const counts = await stopProxy(scenario.proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [2, 2, 2, 0]);
    ok(!/Replies do not come back|No reply from/.test(scenario.proxy.stderr), "no hint");
  } finally {
    await scenario.close();
  }
});

Deno.test("--transparent, UDP over IPv6: the backend sees each client's own IPv6 address", async () => {
  const scenario = await Scenario.start({
    protocol: "udp",
    listen: [`[${HOST_V6}]:5300`],
    args: [...TRANSPARENT, "[::1]:5301"],
  });
  try {
    for (const client of CLIENTS_V6) {
      const answer = await scenario.ask(`[${HOST_V6}]:5300`, client, 4053);
      equal(hostOf(seen(answer)), client);
      notEqual(portOf(seen(answer)), 4053);
      equal(answer.from, `[${HOST_V6}]:5300`);
    }
    deepEqual(scenario.peersSeen.map(hostOf), [...CLIENTS_V6]);
    const counts = await stopProxy(scenario.proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [2, 2, 2, 0]);
  } finally {
    await scenario.close();
  }
});

Deno.test("--transparent, a dual-stack listener: IPv4 clients as IPv4; IPv6 ones to an IPv4 backend refused, not forwarded", async () => {
  // [::]:5300 takes both families, to 127.0.0.1:5301; [fd53::1]:5302 shows the way for IPv6
  // clients: a socket of their own, with an IPv6 target of its own.
  const scenario = await Scenario.start({
    protocol: "udp",
    listen: ["5300", `[${HOST_V6}]:5302`],
    fdnames: ["dual", "v6"],
    args: [...TRANSPARENT, "--target=v6=[::1]:5301", "127.0.0.1:5301"],
  });
  try {
    for (const client of CLIENTS_V4) {
      const answer = await scenario.ask(`${HOST_V4}:5300`, client);
      equal(hostOf(seen(answer)), client, "an IPv4-mapped client, seen as IPv4");
      equal(answer.from, `${HOST_V4}:5300`);
    }
    deepEqual(await scenario.ask(`[${HOST_V6}]:5300`, CLIENTS_V6[0], 0, 2), { timeout: true });
    await scenario.proxy.waitForLog(
      new RegExp(
        "Failed to forward datagrams to 127\\.0\\.0\\.1:5301 for \\[fd53::2\\]:\\d+: " +
          "--transparent cannot carry an IPv6 client to an IPv4 backend; give the IPv6 " +
          "clients' socket an IPv6 target of its own",
      ),
    );
    const answer = await scenario.ask(`[${HOST_V6}]:5302`, CLIENTS_V6[0]);
    equal(hostOf(seen(answer)), CLIENTS_V6[0]);
    deepEqual(scenario.peersSeen.map(hostOf), [...CLIENTS_V4, CLIENTS_V6[0]]);
    const counts = await stopProxy(scenario.proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [4, 3, 3, 1]);
  } finally {
    await scenario.close();
  }
});

Deno.test("--transparent with the backend on the host's own network: the policy-routing recipe", async () => {
  const scenario = await Scenario.start({
    protocol: "udp",
    listen: ["5300"],
    fdnames: ["dual"],
    args: [...TRANSPARENT, "--target=dual=127.0.0.1:5301"],
    routes: POLICY_ROUTES,
    onHost: true,
  });
  const v6 = await Scenario.start({
    protocol: "udp",
    listen: [`[${HOST_V6}]:5300`],
    args: [...TRANSPARENT, "[::1]:5301"],
    routes: POLICY_ROUTES,
    onHost: true,
  });
  try {
    equal(hostOf(seen(await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[0]))), CLIENTS_V4[0]);
    equal(hostOf(seen(await v6.ask(`[${HOST_V6}]:5300`, CLIENTS_V6[1]))), CLIENTS_V6[1]);
    deepEqual(scenario.peersSeen.map(hostOf), [CLIENTS_V4[0]]);
    deepEqual(v6.peersSeen.map(hostOf), [CLIENTS_V6[1]]);
  } finally {
    await v6.close();
    await scenario.close();
  }
});

Deno.test("--transparent without the route back: the backend is reached, nothing returns, the journal says once which route fixes it", async () => {
  const scenario = await Scenario.start({
    protocol: "udp",
    listen: ["0.0.0.0:5300"],
    args: ["--transparent", "--idle-timeout=1s", "127.0.0.1:5301"],
    routes: "",
  });
  try {
    deepEqual(await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[0], 0, 3), { timeout: true });
    equal(hostOf(scenario.peersSeen[0]), CLIENTS_V4[0], "the datagram got there, from the client");
    // The session ends after --idle-timeout without a reply: then the hint.
    const hint = await scenario.proxy.waitForLog(/.*Replies do not come back.*/);
    match(hint, /127\.0\.0\.1:5301 sends to clients such as 10\.53\.0\.2:\d+ has no local route/);
    match(hint, /`ip route add local default dev lo`/);
    deepEqual(await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[1], 0, 2), { timeout: true });
    const counts = await stopProxy(scenario.proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned], [2, 2, 0]);
    equal(scenario.proxy.stderr.match(/Replies do not come back/g)?.length, 1, "said once");
  } finally {
    await scenario.close();
  }
});

Deno.test("--transparent as a DynamicUser= service runs it: not root, CAP_NET_ADMIN only, through the packaged wrapper", async () => {
  const packaged = PackagedCopy.create();
  const scenario = await Scenario.start({
    protocol: "udp",
    listen: ["5300"],
    args: [...TRANSPARENT, "127.0.0.1:5301"],
    prefix: [...AS_SERVICE],
    command: packaged.command,
  }).catch((e) => {
    packaged.close();
    throw e;
  });
  try {
    const answer = await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[0]);
    equal(hostOf(seen(answer)), CLIENTS_V4[0]);
    const status = Deno.readTextFileSync(`/proc/${scenario.proxy.child.pid}/status`);
    match(status, /^Uid:\s+65534\s/m);
    match(status, /^CapEff:\s+0000000000001000$/m, "CAP_NET_ADMIN (bit 12), nothing else");
    match(Deno.readLinkSync(`/proc/${scenario.proxy.child.pid}/exe`), /deno$/);
    const counts = await stopProxy(scenario.proxy);
    deepEqual([counts.sessions, counts.forwarded, counts.returned, counts.dropped], [1, 1, 1, 0]);
  } finally {
    await scenario.close();
    packaged.close();
  }
});

Deno.test("--transparent without the capability: exit 1 at start-up, naming AmbientCapabilities=CAP_NET_ADMIN; nothing forwarded", async () => {
  const packaged = PackagedCopy.create();
  // Root without CAP_NET_ADMIN and CAP_NET_RAW (either allows IP_TRANSPARENT); and the unit
  // shape without AmbientCapabilities=: not root, no capability, through the wrapper.
  const ways: Array<[string, string[]]> = [
    ["root, both capabilities dropped", [
      "setpriv",
      "--bounding-set=-net_admin,-net_raw",
      "--inh-caps=-net_admin,-net_raw",
      "--",
      ...DENO_RUN,
      MAIN,
    ]],
    ["a dynamic user without capabilities", [
      ...AS_SERVICE.map((arg) => arg.replace(",+net_admin", "")),
      ...packaged.command,
    ]],
  ];
  try {
    for (const [way, command] of ways) await refusedWithoutCapability(way, command);
  } finally {
    packaged.close();
  }
});

/** Starts `command --transparent` on a datagram socket: it must refuse and forward nothing. */
async function refusedWithoutCapability(way: string, command: string[]): Promise<void> {
  const backend = udpEcho();
  const client = new UdpEnd();
  const port = freeUdpPort();
  const proxy = new Process("systemd-socket-activate", [
    "--datagram",
    `--listen=127.0.0.1:${port}`,
    "--",
    ...command,
    "--transparent",
    `127.0.0.1:${backend.port}`,
  ]);
  try {
    await proxy.waitForLog(/Listening on .* as 3\./);
    await client.send(new TextEncoder().encode("x"), "127.0.0.1", port);
    await proxy.waitForLog(/--transparent needs the capability CAP_NET_ADMIN/);
    const { code, stderr } = await proxy.exit();
    equal(code, 1, `${way}: ${stderr}`);
    match(stderr, /setsockopt IP_TRANSPARENT: Operation not permitted/, way);
    match(stderr, /Give the unit AmbientCapabilities=CAP_NET_ADMIN/, way);
    equal(backend.received, 0, `${way}: nothing forwarded`);
  } finally {
    await proxy.stop();
    await client.close();
    await backend.close();
  }
}

Deno.test("--transparent refuses at start-up what has no IP address to carry (a Unix listener, a Unix target), and a Deno without FFI", async () => {
  const path = tempSocketPath("dgram.sock");
  const backend = udpEcho();
  const target = `127.0.0.1:${backend.port}`;
  const withoutFfi = [
    Deno.execPath(),
    "run",
    "-q",
    "--no-config",
    ...DEPLOYMENT_FLAGS.filter((flag) => !flag.startsWith("--allow-ffi")),
  ];
  const cases: Array<[string, string | null, string[], RegExp, string[]]> = [
    [
      "a Unix datagram listener",
      path,
      [target],
      /--transparent cannot serve the socket fd 3 \("unknown"\): it is a Unix socket, and its clients have no IP address to carry/,
      DENO_RUN,
    ],
    [
      "an abstract Unix target",
      null,
      ["@backend"],
      /--transparent cannot carry the client's address to @backend: only an IP backend/,
      DENO_RUN,
    ],
    [
      "no FFI",
      null,
      [target],
      /serves its sockets through the C library, which Deno's permissions do not let it open: add --allow-ffi=\/\S+libc\.so\.6 to the deno flags/,
      withoutFfi,
    ],
  ];
  try {
    for (const [what, unixPath, args, message, deno] of cases) {
      const port = freeUdpPort();
      const client = new UdpEnd();
      const proxy = new Process("systemd-socket-activate", [
        "--datagram",
        `--listen=${unixPath ?? `127.0.0.1:${port}`}`,
        "--",
        ...deno,
        MAIN,
        "--transparent",
        ...args,
      ]);
      try {
        await proxy.waitForLog(/Listening on .* as 3\./);
        if (unixPath !== null) await pythonAsk(`unix:${unixPath}`, ["--no-reply"]);
        else await client.send(new TextEncoder().encode("x"), "127.0.0.1", port);
        await proxy.waitForLog(message);
        const { code, stderr } = await proxy.exit();
        equal(code, 1, `${what}: ${stderr}`);
      } finally {
        await proxy.stop();
        await client.close();
      }
    }
    equal(backend.received, 0);
  } finally {
    await backend.close();
    Deno.removeSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  }
});

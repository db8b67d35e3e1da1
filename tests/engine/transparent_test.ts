/**
 * `--transparent` (src/engine/transparent.ts): the source address of every client form for each
 * backend family, the transparent bind through libc (as root, which the tests run as), the
 * start-up probe, the route check in network namespaces of the test's own, the once-only hint,
 * and the start-up refusals.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  bindTransparent,
  capabilityProblem,
  errnoName,
  passedSocketProblem,
  planProblem,
  returnRoute,
  Transparent,
  transparentSource,
  type Uncarried,
} from "../../src/engine/transparent.ts";
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  decode,
  encodeIP,
  encodeUnix,
  formatSocketAddress,
  SOCKADDR_MAX,
} from "../../src/engine/sockaddr.ts";
import type { Libc } from "../../src/engine/libc.ts";
import { libc, socketOf } from "./libc_udp.ts";
import { parseTarget } from "../../src/cli/target.ts";
import { parseListenAddress } from "../../src/cli/address.ts";

const SOCK_STREAM = 1;

/** The address `transparentSource` gives, decoded for a readable comparison; or its problem. */
function source(client: Uint8Array, family: number, keepPort = false): string {
  const result = transparentSource(client, family, keepPort);
  if ("problem" in result) return `problem: ${result.problem}`;
  equal(result.length, family === AF_INET ? 16 : 28, "a whole sockaddr of the family");
  equal(result[0] | (result[1] << 8), family, "of the backend socket's family");
  return formatSocketAddress(decode(result));
}

Deno.test("transparentSource: an IPv4 client, to an IPv4 backend socket; port 0 unless kept", () => {
  const client = encodeIP("192.0.2.10", 40000);
  equal(source(client, AF_INET), "192.0.2.10:0");
  equal(source(client, AF_INET, true), "192.0.2.10:40000");
  const result = transparentSource(client, AF_INET, true) as Uint8Array;
  deepEqual(result, client, "byte for byte the client's sockaddr_in, port kept");
  result[4] = 1;
  equal(client[4], 192, "a copy: the client's address is not shared");
});

Deno.test("transparentSource: an IPv6 client, to an IPv6 backend socket: scope kept, flow not", () => {
  const client = encodeIP("2001:db8::10", 40000);
  equal(source(client, AF_INET6), "[2001:db8::10]:0");
  equal(source(client, AF_INET6, true), "[2001:db8::10]:40000");
  const linkLocal = encodeIP("fe80::1", 53);
  const view = new DataView(linkLocal.buffer);
  view.setUint32(4, 0x12345, false); // sin6_flowinfo
  view.setUint32(24, 7, true); // sin6_scope_id
  const result = transparentSource(linkLocal, AF_INET6, false) as Uint8Array;
  const out = new DataView(result.buffer);
  deepEqual([out.getUint32(4), out.getUint32(24, true), out.getUint16(2)], [0, 7, 0]);
  deepEqual(result.subarray(8, 24), linkLocal.subarray(8, 24));
});

Deno.test("transparentSource: a dual-stack listener's IPv4 client (IPv4-mapped) is bound as IPv4", () => {
  const mapped = encodeIP("198.51.100.7", 5353, true);
  equal(mapped.length, 28, "as accept4 and recvmmsg give it: a sockaddr_in6");
  equal(source(mapped, AF_INET), "198.51.100.7:0");
  equal(source(mapped, AF_INET, true), "198.51.100.7:5353");
  deepEqual(
    transparentSource(mapped, AF_INET, true),
    encodeIP("198.51.100.7", 5353),
    "exactly the sockaddr_in of the same client",
  );
});

Deno.test("transparentSource: what cannot be carried is a problem, never another address", () => {
  const cases: Array<[string, Uint8Array, number, RegExp]> = [
    ["IPv6 client, IPv4 backend", encodeIP("2001:db8::1", 1), AF_INET, /IPv6 client to an IPv4/],
    ["IPv4 client, IPv6 backend", encodeIP("192.0.2.1", 1), AF_INET6, /IPv4 client to an IPv6/],
    ["mapped client, IPv6 backend", encodeIP("192.0.2.1", 1, true), AF_INET6, /IPv4 client/],
    ["Unix client (named)", encodeUnix("/run/c.sock", false), AF_INET, /no IP address/],
    ["Unix client (abstract)", encodeUnix("c", true), AF_INET6, /no IP address/],
    ["Unix client (unnamed)", new Uint8Array([AF_UNIX, 0]), AF_INET, /no IP address/],
    ["truncated sockaddr_in", encodeIP("192.0.2.1", 1).subarray(0, 8), AF_INET, /family 2 \(8/],
    ["truncated sockaddr_in6", encodeIP("::1", 1).subarray(0, 24), AF_INET6, /family 10 \(24/],
    ["no family", new Uint8Array(16), AF_INET, /family 0/],
    ["empty", new Uint8Array(0), AF_INET, /family 0 \(0 bytes\)/],
    ["a Unix backend socket", encodeIP("192.0.2.1", 1), AF_UNIX, /address family 1/],
    ["a vsock backend socket", encodeIP("2001:db8::1", 1), 40, /address family 40/],
  ];
  for (const [what, client, family, problem] of cases) {
    const result = transparentSource(client, family, false);
    ok("problem" in result, `${what}: a problem, got ${result}`);
    match((result as Uncarried).problem, problem, what);
  }
});

Deno.test("property: transparentSource carries every IP client to its family, and only that", () => {
  const ipv4 = fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 })
    .map((b) => b.join("."));
  const ipv6 = fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 })
    .map((g) => g.map((x) => x.toString(16)).join(":"));
  fc.assert(
    fc.property(
      fc.oneof(
        ipv4.map((host) => ({ host, v4: true, mapped: false })),
        ipv4.map((host) => ({ host, v4: true, mapped: true })),
        ipv6.map((host) => ({ host, v4: false, mapped: false })),
      ),
      fc.integer({ min: 0, max: 65535 }),
      fc.constantFrom(AF_INET, AF_INET6),
      fc.boolean(),
      ({ host, v4, mapped }, port, family, keepPort) => {
        const client = encodeIP(host, port, mapped);
        const result = transparentSource(client, family, keepPort);
        const expected = decode(client)!;
        if (v4 !== (family === AF_INET)) return "problem" in result;
        const got = decode(result as Uint8Array)!;
        return got.family === expected.family && "host" in got && "host" in expected &&
          got.host === expected.host && got.port === (keepPort ? port : 0);
      },
    ),
    { numRuns: 2000 },
  );
});

/** The address `fd` is bound to, as text. */
function boundTo(fd: number): string {
  const name = new Uint8Array(SOCKADDR_MAX);
  const length = new Uint8Array([SOCKADDR_MAX, 0, 0, 0]);
  equal(libc.call.getsockname(fd, name, length), 0);
  return formatSocketAddress(decode(name, length[0]));
}

Deno.test("bindTransparent: binds UDP and TCP sockets to addresses that are not this host's", () => {
  for (const type of [2, SOCK_STREAM]) {
    const v4 = socketOf(AF_INET, type);
    const v6 = socketOf(AF_INET6, type);
    try {
      equal(bindTransparent(libc, v4, AF_INET, encodeIP("192.0.2.77", 0)), 0);
      match(boundTo(v4), /^192\.0\.2\.77:\d+$/);
      equal(bindTransparent(libc, v6, AF_INET6, encodeIP("2001:db8::77", 0)), 0);
      match(boundTo(v6), /^\[2001:db8::77\]:\d+$/);
    } finally {
      libc.call.close(v4);
      libc.call.close(v6);
    }
  }
  // A plain bind to such an address is refused: it is IP_TRANSPARENT that allows it.
  const plain = socketOf(AF_INET);
  const address = encodeIP("192.0.2.77", 0);
  equal(libc.call.bind(plain, address, address.length), -1);
  equal(errnoName(libc.errno()), "EADDRNOTAVAIL");
  libc.call.close(plain);
});

Deno.test("bindTransparent: the errno of the call that failed", () => {
  const fd = socketOf(AF_INET);
  try {
    equal(bindTransparent(libc, fd, AF_INET, encodeIP("192.0.2.78", 0)), 0);
    equal(errnoName(bindTransparent(libc, fd, AF_INET, encodeIP("192.0.2.79", 0))), "EINVAL");
  } finally {
    libc.call.close(fd);
  }
  equal(errnoName(bindTransparent(libc, -1, AF_INET, encodeIP("192.0.2.79", 0))), "errno 9");
});

/** A libc whose socket calls answer as told, for what this process cannot be made to meet. */
function fakeLibc(answers: { socket?: number[]; setsockopt?: number }): Libc & { calls: string[] } {
  const calls: string[] = [];
  let errno = 0;
  const sockets = [...answers.socket ?? []];
  const call = {
    socket(family: number) {
      calls.push(`socket ${family}`);
      const failed = sockets.shift();
      if (failed === undefined) return 5;
      errno = failed;
      return -1;
    },
    setsockopt(_fd: number, level: number, option: number) {
      calls.push(`setsockopt ${level} ${option}`);
      errno = answers.setsockopt ?? 0;
      return errno === 0 ? 0 : -1;
    },
    bind() {
      calls.push("bind");
      return 0;
    },
    close() {
      calls.push("close");
      return 0;
    },
  };
  return {
    path: "fake",
    call: call as unknown as Libc["call"],
    errno: () => errno,
    addressOf: () => 0n,
    calls,
  };
}

Deno.test("capabilityProblem: none as root; without the capability, a message naming the fix", () => {
  equal(capabilityProblem(libc), null);
  const denied = fakeLibc({ setsockopt: 1 });
  const message = capabilityProblem(denied);
  ok(message !== null);
  match(message, /needs the capability CAP_NET_ADMIN/);
  match(message, /AmbientCapabilities=CAP_NET_ADMIN/);
  match(message, /setsockopt IP_TRANSPARENT: Operation not permitted/);
  match(message, /PrivateUsers=yes/);
  deepEqual(denied.calls, ["socket 2", "setsockopt 0 19", "close"]);
});

Deno.test("capabilityProblem: an IPv6 socket when IPv4 ones are not allowed; neither is a problem", () => {
  const v6only = fakeLibc({ socket: [97], setsockopt: 1 });
  match(capabilityProblem(v6only)!, /setsockopt IPV6_TRANSPARENT: Operation not permitted/);
  deepEqual(v6only.calls, ["socket 2", "socket 10", "setsockopt 41 75", "close"]);
  match(capabilityProblem(fakeLibc({ socket: [97, 97] }))!, /may open no IPv4 or IPv6 socket/);
  match(capabilityProblem(fakeLibc({ socket: [24] }))!, /cannot open a socket .*errno 24/);
  match(capabilityProblem(fakeLibc({ setsockopt: 92 }))!, /IP_TRANSPARENT, then bind: errno 92/);
});

Deno.test("Transparent.bind: the client's address, port 0; a problem for what cannot be carried", () => {
  const transparent = new Transparent(libc, () => {});
  const v4 = socketOf(AF_INET);
  const v6 = socketOf(AF_INET6);
  const again = socketOf(AF_INET);
  try {
    equal(transparent.bind(v4, AF_INET, encodeIP("203.0.113.5", 41000, true)), null);
    match(boundTo(v4), /^203\.0\.113\.5:(\d+)$/);
    ok(!boundTo(v4).endsWith(":41000"), "the kernel picked the port");
    equal(transparent.bind(v6, AF_INET6, encodeIP("2001:db8::5", 41000)), null);
    match(boundTo(v6), /^\[2001:db8::5\]:\d+$/);
    match(transparent.bind(again, AF_INET, null)!, /Unix socket has no IP address/);
    match(transparent.bind(again, AF_INET, encodeIP("::2", 1))!, /IPv6 client to an IPv4/);
    equal(boundTo(again), "0.0.0.0:0", "left unbound");
    equal(transparent.bind(again, AF_INET, encodeIP("203.0.113.6", 1)), null);
    equal(
      transparent.bind(again, AF_INET, encodeIP("203.0.113.7", 1)),
      "cannot bind to the client's address 203.0.113.7:0 (--transparent: EINVAL)",
    );
  } finally {
    for (const fd of [v4, v6, again]) libc.call.close(fd);
  }
});

Deno.test("returnRoute: a backend that is not on loopback cannot be asked", () => {
  equal(returnRoute(libc, encodeIP("192.0.2.1", 0), encodeIP("198.51.100.1", 53)), "unknown");
  equal(returnRoute(libc, encodeIP("2001:db8::1", 0), encodeIP("2001:db8::53", 53)), "unknown");
  equal(returnRoute(libc, encodeIP("192.0.2.1", 0), encodeIP("::1", 53)), "unknown");
});

Deno.test("Transparent.noReply: for a backend that cannot be asked, one hedged hint, once", () => {
  const told: string[] = [];
  const transparent = new Transparent(libc, (line) => told.push(line));
  transparent.noReply(null, encodeIP("198.51.100.1", 53));
  transparent.noReply(encodeIP("::1", 1), encodeIP("198.51.100.1", 53));
  equal(told.length, 0, "nothing for clients that could not be carried");
  transparent.noReply(encodeIP("192.0.2.1", 4000), encodeIP("198.51.100.1", 53));
  transparent.noReply(encodeIP("192.0.2.2", 4000), encodeIP("198.51.100.1", 53));
  equal(told.length, 1, "once");
  match(told[0], /^No reply from 198\.51\.100\.1:53 to 192\.0\.2\.1:4000 through a transparent/);
  match(told[0], /if the backend answers its clients/);
  match(told[0], /`ip route add local default dev lo`/);
});

/** Runs transparent_route.ts in a network namespace of its own, after `setup` (ip commands). */
async function inNamespace(setup: string) {
  const script = new URL("./transparent_route.ts", import.meta.url).pathname;
  const output = await new Deno.Command("unshare", {
    args: [
      "--net",
      "--",
      "sh",
      "-ec",
      `ip link set lo up; ${setup}\nexec "$@"`,
      "sh",
      Deno.execPath(),
      "run",
      "-A",
      script,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  ok(output.success, `${text}${new TextDecoder().decode(output.stderr)}`);
  return JSON.parse(text) as { routes: Record<string, string>; told: string[] };
}

/** A link to the outside with a default route (as a host has), for IPv4 and IPv6. */
const UPLINK = `
  ip link add up0 type veth peer name up1
  ip link set up0 up; ip link set up1 up
  ip addr add 10.9.9.1/24 dev up0; ip -6 addr add fd99::1/64 dev up0 nodad
  ip route add default via 10.9.9.9 dev up0 onlink
  ip -6 route add default via fd99::9 dev up0 onlink`;

Deno.test("returnRoute and the hint in a namespace with loopback only: missing, told once", async () => {
  const { routes, told } = await inNamespace("");
  deepEqual(routes, { ipv4: "missing", ipv6: "missing", otherLoopback: "missing" });
  equal(told.length, 1, "once, though both sessions went unanswered");
  match(told[0], /^Replies do not come back \(--transparent\): in this network namespace, what/);
  match(told[0], /127\.0\.0\.1:5301 sends to clients such as 10\.9\.0\.2:40000 has no local route/);
  match(told[0], /`ip route add local default dev lo`/);
  match(told[0], /`ip -6 route add local default dev lo`/);
});

Deno.test("returnRoute with a default route out, as on a host, but no local one: missing", async () => {
  const { routes, told } = await inNamespace(UPLINK);
  deepEqual(routes, { ipv4: "missing", ipv6: "missing", otherLoopback: "missing" });
  equal(told.length, 1);
});

Deno.test("returnRoute with `ip route add local default dev lo`: local, and no hint", async () => {
  const { routes, told } = await inNamespace(
    `${UPLINK}\nip route add local default dev lo; ip -6 route add local default dev lo`,
  );
  deepEqual(routes, { ipv4: "local", ipv6: "local", otherLoopback: "local" });
  deepEqual(told, []);
});

Deno.test("returnRoute with the policy-routing recipe (ip rule from loopback, a local table)", async () => {
  const { routes, told } = await inNamespace(`${UPLINK}
    ip route add local default dev lo table 100; ip rule add from 127.0.0.1 iif lo lookup 100
    ip -6 route add local default dev lo table 100; ip -6 rule add from ::1 iif lo lookup 100`);
  // 127.0.0.2 is not in the rule: what it sends to clients goes out, never back.
  deepEqual(routes, { ipv4: "local", ipv6: "local", otherLoopback: "missing" });
  deepEqual(told, []);
});

Deno.test("planProblem: targets without an IP address, and Unix --listen, are refused", () => {
  const targets = (...texts: string[]) => texts.map(parseTarget);
  equal(planProblem(targets("127.0.0.1:53", "[::1]:53", "localhost:53"), []), null);
  equal(planProblem([{ kind: "same-port", host: "127.0.0.1" }], []), null);
  for (const target of ["/run/app.sock", "@app", "vsock:2:53"]) {
    match(
      planProblem(targets("127.0.0.1:53", target), [])!,
      new RegExp(`cannot carry the client's address to ${target}: only an IP backend`),
    );
  }
  match(
    planProblem(targets("127.0.0.1:53"), [parseListenAddress("/run/l.sock")])!,
    /cannot serve --listen=\/run\/l\.sock: its clients have no IP address to carry/,
  );
  equal(planProblem(targets("127.0.0.1:53"), [parseListenAddress("8080")]), null);
});

Deno.test("passedSocketProblem: IP sockets pass, stream or datagram; Unix ones never", () => {
  for (const type of ["datagram", "listener", "connection"] as const) {
    equal(passedSocketProblem({ type, family: AF_INET }, 3, "dns"), null);
    equal(passedSocketProblem({ type, family: AF_INET6 }, 3, "dns"), null);
    equal(
      passedSocketProblem({ type, family: AF_UNIX }, 4, "local"),
      '--transparent cannot serve the socket fd 4 ("local"): it is a Unix socket, and its ' +
        "clients have no IP address to carry. Serve it from a unit without --transparent.",
    );
  }
  equal(passedSocketProblem({ type: "other", why: "not a socket" }, 3, "x"), null);
  match(passedSocketProblem({ type: "listener", family: 40 }, 5, "v")!, /of address family 40/);
});

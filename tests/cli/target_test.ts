import { deepEqual, equal, fail, ok, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  atPort,
  DEFAULT_PORT,
  formatTarget,
  isIPAddress,
  isIPv4,
  isIPv6,
  parseTarget,
  parseTargetSpec,
  type Target,
} from "../../src/cli/target.ts";
import { throwsRange } from "../assert.ts";

const tcp = (host: string, port: number): Target => ({ kind: "tcp", host, port });
const BRACKET_HINT = ' (write IPv6 addresses in brackets, e.g. "[::1]:8080")';
const notAHost = (text: string, host: string, hint = "") =>
  throwsRange(
    () => parseTarget(text),
    `Invalid target "${text}": "${host}" is neither an IP address nor a host name${hint}`,
  );
const badPort = (text: string, port: string) =>
  throwsRange(
    () => parseTarget(text),
    `Invalid target "${text}": port "${port}" is not a number from 1 to 65535`,
  );
const notBracketed = (text: string) =>
  throwsRange(() => parseTarget(text), `Invalid target "${text}": expected "[IPv6-ADDRESS]:PORT"`);

// ---------------------------------------------------------------------------------------------
// TCP targets

Deno.test("parseTarget: IPv4 with and without a port", () => {
  equal(DEFAULT_PORT, 80);
  deepEqual(parseTarget("127.0.0.1:8080"), tcp("127.0.0.1", 8080));
  deepEqual(parseTarget("0.0.0.0:1"), tcp("0.0.0.0", 1));
  deepEqual(parseTarget("255.255.255.255:65535"), tcp("255.255.255.255", 65535));
  deepEqual(parseTarget("10.0.0.1"), tcp("10.0.0.1", 80));
});

Deno.test("parseTarget: bracketed IPv6 with and without a port", () => {
  deepEqual(parseTarget("[::1]:8080"), tcp("::1", 8080));
  deepEqual(parseTarget("[::1]"), tcp("::1", 80));
  deepEqual(parseTarget("[::]:443"), tcp("::", 443));
  deepEqual(parseTarget("[2001:db8::1]:53"), tcp("2001:db8::1", 53));
  deepEqual(parseTarget("[2001:DB8:0:0:0:0:0:1]:53"), tcp("2001:DB8:0:0:0:0:0:1", 53));
  deepEqual(parseTarget("[::ffff:192.0.2.1]:443"), tcp("::ffff:192.0.2.1", 443));
  deepEqual(parseTarget("[fe80::1]"), tcp("fe80::1", 80));
});

Deno.test("parseTarget: malformed brackets", () => {
  notBracketed("[::1");
  notBracketed("[::1:80");
  notBracketed("[]:80");
  notBracketed("[]");
  notBracketed("[1.2.3.4]:80");
  notBracketed("[localhost]:80");
  notBracketed("[fe80::1%eth0]:80");
  notBracketed("[1:2:3:4:5:6:7:8:9]:80");
  notBracketed("[[::1]]:80");
  throwsRange(() => parseTarget("[::1]80"), 'Invalid target "[::1]80": expected ":PORT" after "]"');
  throwsRange(
    () => parseTarget("[::1]x:80"),
    'Invalid target "[::1]x:80": expected ":PORT" after "]"',
  );
  badPort("[::1]:", "");
  badPort("[::1]:0", "0");
  badPort("[::1]:65536", "65536");
  badPort("[::1]:http", "http");
  badPort("[::1]:80:80", "80:80");
});

Deno.test("parseTarget: unbracketed IPv6 is split at the last colon, as systemd does", () => {
  deepEqual(parseTarget("::1:8080"), tcp("::1", 8080));
  deepEqual(parseTarget("2001:db8::1:443"), tcp("2001:db8::1", 443));
  deepEqual(parseTarget("::ffff:1.2.3.4:80"), tcp("::ffff:1.2.3.4", 80));
  deepEqual(parseTarget(":::80"), tcp("::", 80));
  // Ambiguous, but this is what splitting at the last colon means.
  deepEqual(parseTarget("1::2:3"), tcp("1::2", 3));
});

Deno.test("parseTarget: a bare IPv6 address is an error that suggests brackets", () => {
  notAHost("::1", ":", BRACKET_HINT);
  notAHost("fe80::1", "fe80:", BRACKET_HINT);
  notAHost("2001:db8::", "2001:db8:", BRACKET_HINT);
  notAHost("a:b:80", "a:b", BRACKET_HINT);
  throwsRange(
    () => parseTarget("::1"),
    'Invalid target "::1": ":" is neither an IP address nor a host name' +
      ' (write IPv6 addresses in brackets, e.g. "[::1]:8080")',
  );
});

Deno.test("parseTarget: host names", () => {
  deepEqual(parseTarget("localhost"), tcp("localhost", 80));
  deepEqual(parseTarget("localhost:8080"), tcp("localhost", 8080));
  deepEqual(parseTarget("example.com:443"), tcp("example.com", 443));
  deepEqual(parseTarget("example.com.:443"), tcp("example.com.", 443));
  deepEqual(parseTarget("Example.COM"), tcp("Example.COM", 80));
  deepEqual(parseTarget("a-b.c-d:1"), tcp("a-b.c-d", 1));
  deepEqual(parseTarget("my_host:1"), tcp("my_host", 1));
  deepEqual(parseTarget("1host:1"), tcp("1host", 1));
  deepEqual(parseTarget("x:2"), tcp("x", 2));
  // Digits only are a valid host name syntactically; the resolver decides.
  deepEqual(parseTarget("256.1.1.1:80"), tcp("256.1.1.1", 80));
  const longest = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;
  equal(longest.length, 253);
  deepEqual(parseTarget(`${longest}:80`), tcp(longest, 80));
});

Deno.test("parseTarget: invalid host names", () => {
  notAHost("-a:80", "-a");
  notAHost("a-:80", "a-");
  notAHost("a..b:80", "a..b");
  notAHost(".a:80", ".a");
  notAHost("a b:80", "a b");
  notAHost("a/b:80", "a/b");
  notAHost("a..b", "a..b");
  notAHost(" localhost:80", " localhost");
  notAHost("localhost :80", "localhost ");
  notAHost("h\u00e9:80", "h\u00e9");
  notAHost("-", "-");
  notAHost("a.-b:80", "a.-b");
  const tooLong = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(62)}`;
  equal(tooLong.length, 254);
  notAHost(`${tooLong}:80`, tooLong);
});

Deno.test("parseTarget: empty host", () => {
  throwsRange(() => parseTarget(""), 'Invalid target "": the host is empty');
  throwsRange(() => parseTarget(":80"), 'Invalid target ":80": the host is empty');
  throwsRange(() => parseTarget(":"), 'Invalid target ":": the host is empty');
});

Deno.test("parseTarget: ports", () => {
  deepEqual(parseTarget("h:1"), tcp("h", 1));
  deepEqual(parseTarget("h:65535"), tcp("h", 65535));
  deepEqual(parseTarget("h:080"), tcp("h", 80));
  deepEqual(parseTarget("h:00001"), tcp("h", 1));
  badPort("h:0", "0");
  badPort("h:00000", "00000");
  badPort("h:65536", "65536");
  badPort("h:99999", "99999");
  badPort("h:000080", "000080");
  badPort("h:123456", "123456");
  badPort("h:", "");
  badPort("h:http", "http");
  badPort("h:8o", "8o");
  badPort("h:-1", "-1");
  badPort("h:+80", "+80");
  badPort("h:1.5", "1.5");
  badPort("h: 80", " 80");
  badPort("h:80 ", "80 ");
  badPort("h:0x50", "0x50");
  badPort("h:\u0668\u0660", "\u0668\u0660"); // Arabic-Indic digits are not ASCII digits
  badPort("1.2.3.4:0", "0");
});

// ---------------------------------------------------------------------------------------------
// Unix targets

Deno.test("parseTarget: Unix socket paths", () => {
  deepEqual(parseTarget("/run/app.sock"), { kind: "unix", path: "/run/app.sock" });
  deepEqual(parseTarget("/"), { kind: "unix", path: "/" });
  deepEqual(parseTarget("/a:80"), { kind: "unix", path: "/a:80" });
  deepEqual(parseTarget("/[::1]:80"), { kind: "unix", path: "/[::1]:80" });
  deepEqual(parseTarget("/with space"), { kind: "unix", path: "/with space" });
  // A relative path is a host name, not a path, as in systemd-socket-proxyd.
  notAHost("run/app.sock", "run/app.sock");
  notAHost("./app.sock", "./app.sock");
});

Deno.test("parseTarget: Unix socket paths are limited to 107 bytes", () => {
  const fits = "/" + "p".repeat(106);
  deepEqual(parseTarget(fits), { kind: "unix", path: fits });
  const tooLong = fits + "p";
  throwsRange(
    () => parseTarget(tooLong),
    `Invalid target "${tooLong}": Unix socket paths are limited to 107 bytes`,
  );
  // Bytes, not UTF-16 code units: "é" is two bytes in UTF-8.
  const multibyte = "/" + "\u00e9".repeat(53);
  equal(new TextEncoder().encode(multibyte).length, 107);
  deepEqual(parseTarget(multibyte), { kind: "unix", path: multibyte });
  const multibyteTooLong = multibyte + "x";
  equal(multibyteTooLong.length, 55);
  throwsRange(
    () => parseTarget(multibyteTooLong),
    `Invalid target "${multibyteTooLong}": Unix socket paths are limited to 107 bytes`,
  );
});

Deno.test("parseTarget: a NUL byte in a Unix socket path is rejected", () => {
  throws(() => parseTarget("/tmp/a\0b"), RangeError);
  throws(() => parseTarget("/\0"), RangeError);
});

// BUG (src/cli/target.ts): parseTarget's documented contract is a RangeError "naming the input", but
// the NUL-byte message is just "Invalid target: the path contains a NUL byte".
Deno.test("parseTarget: the NUL-byte error names the input (escaped)", () => {
  const text = "/tmp/a\0b";
  throws(() => parseTarget(text), (e: unknown) => {
    ok(e instanceof RangeError);
    ok(
      e.message.includes(text) || e.message.includes(JSON.stringify(text)),
      `message does not name the input: ${JSON.stringify(e.message)}`,
    );
    return true;
  });
});

Deno.test("parseTarget: abstract socket names", () => {
  deepEqual(parseTarget("@proxy"), { kind: "abstract", name: "proxy" });
  deepEqual(parseTarget("@/x"), { kind: "abstract", name: "/x" });
  deepEqual(parseTarget("@a:80"), { kind: "abstract", name: "a:80" });
  deepEqual(parseTarget("@@"), { kind: "abstract", name: "@" });
  deepEqual(parseTarget("@a\0b"), { kind: "abstract", name: "a\0b" });
  deepEqual(parseTarget("@ "), { kind: "abstract", name: " " });
});

Deno.test("parseTarget: '@' alone is an error", () => {
  throwsRange(() => parseTarget("@"), 'Invalid target "@": the abstract socket name is empty');
});

Deno.test("parseTarget: abstract names are limited to 106 bytes", () => {
  const fits = "@" + "n".repeat(106);
  deepEqual(parseTarget(fits), { kind: "abstract", name: "n".repeat(106) });
  const tooLong = fits + "n";
  throwsRange(
    () => parseTarget(tooLong),
    `Invalid target "${tooLong}": abstract names are limited to 106 bytes`,
  );
  const multibyte = "@" + "\u00e9".repeat(53) + "x";
  equal(new TextEncoder().encode(multibyte).length, 108);
  throwsRange(
    () => parseTarget(multibyte),
    `Invalid target "${multibyte}": abstract names are limited to 106 bytes`,
  );
});

// ---------------------------------------------------------------------------------------------
// Address predicates

Deno.test("isIPv4", () => {
  for (
    const yes of ["0.0.0.0", "1.2.3.4", "127.0.0.1", "255.255.255.255", "10.0.0.10", "199.9.9.9"]
  ) {
    ok(isIPv4(yes), yes);
  }
  for (
    const no of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.0",
      "1.2.3.256",
      "01.2.3.4",
      "1.2.3.04",
      "1.2.3.-4",
      " 1.2.3.4",
      "1.2.3.4 ",
      "1.2.3.4.",
      "a.b.c.d",
      "1..2.3",
      "::1",
      "\u0661.2.3.4",
    ]
  ) {
    ok(!isIPv4(no), no);
  }
});

Deno.test("isIPv6", () => {
  for (
    const yes of [
      "::",
      "::1",
      "1::",
      "1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7::",
      "::2:3:4:5:6:7:8",
      "1::8",
      "fe80::1",
      "FE80::ABCD:ef01",
      "2001:db8:0:0:1:0:0:1",
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
      "::ffff:1.2.3.4",
      "::1.2.3.4",
      "1:2:3:4:5:6:1.2.3.4",
      "1::1.2.3.4",
      "0000:0000:0000:0000:0000:0000:0000:0000",
    ]
  ) {
    ok(isIPv6(yes), yes);
  }
  for (
    const no of [
      "",
      ":",
      ":::",
      "1",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "1::2::3",
      ":1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:",
      "12345::",
      "g::1",
      "fe80::1%eth0",
      "1.2.3.4",
      "::1.2.3",
      "::256.1.1.1",
      "1:2:3:4:5:6:7:1.2.3.4",
      "1.2.3.4::",
      "::1.2.3.4:5",
      "[::1]",
      " ::1",
    ]
  ) {
    ok(!isIPv6(no), no);
  }
});

Deno.test("isIPAddress", () => {
  ok(isIPAddress("1.2.3.4"));
  ok(isIPAddress("::1"));
  ok(!isIPAddress("localhost"));
  ok(!isIPAddress(""));
});

// ---------------------------------------------------------------------------------------------
// formatTarget

Deno.test("formatTarget", () => {
  equal(formatTarget(tcp("1.2.3.4", 80)), "1.2.3.4:80");
  equal(formatTarget(tcp("example.com", 443)), "example.com:443");
  equal(formatTarget(tcp("::1", 8080)), "[::1]:8080");
  equal(formatTarget(tcp("::ffff:1.2.3.4", 80)), "[::ffff:1.2.3.4]:80");
  equal(formatTarget({ kind: "unix", path: "/run/x.sock" }), "/run/x.sock");
  equal(formatTarget({ kind: "abstract", name: "proxy" }), "@proxy");
});

Deno.test("formatTarget: parses back to the same target", () => {
  for (
    const text of [
      "1.2.3.4:80",
      "10.0.0.1",
      "[::1]",
      "[::1]:8080",
      "::1:8080",
      "localhost",
      "example.com.:443",
      "/run/x.sock",
      "/a:1",
      "@proxy",
      "@a:80",
    ]
  ) {
    const target = parseTarget(text);
    deepEqual(parseTarget(formatTarget(target)), target, text);
  }
});

// ---------------------------------------------------------------------------------------------
// Properties

const port = fc.integer({ min: 1, max: 65535 });
const hostname = fc.domain().filter((d) => d.length <= 253);

Deno.test("property: generated IPv4, IPv6 and host name targets parse exactly", () => {
  fc.assert(
    fc.property(fc.ipV4(), port, (ip, p) => {
      ok(isIPv4(ip), ip);
      deepEqual(parseTarget(`${ip}:${p}`), tcp(ip, p));
      deepEqual(parseTarget(ip), tcp(ip, 80));
    }),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.ipV6(), port, (ip, p) => {
      ok(isIPv6(ip), ip);
      ok(!isIPv4(ip), ip);
      deepEqual(parseTarget(`[${ip}]:${p}`), tcp(ip, p));
      deepEqual(parseTarget(`[${ip}]`), tcp(ip, 80));
      deepEqual(parseTarget(`${ip}:${p}`), tcp(ip, p));
    }),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(hostname, port, (host, p) => {
      deepEqual(parseTarget(`${host}:${p}`), tcp(host, p));
      deepEqual(parseTarget(host), tcp(host, 80));
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: formatTarget round trips every target parseTarget accepts", () => {
  const target = fc.oneof(
    fc.tuple(fc.oneof(fc.ipV4(), fc.ipV6(), hostname), port).map(([h, p]) => tcp(h, p)),
    fc.string({ unit: "grapheme", minLength: 0, maxLength: 40 })
      .filter((s) => !s.includes("\0"))
      .map((s): Target => ({ kind: "unix", path: `/${s}` })),
    fc.string({ unit: "binary", minLength: 1, maxLength: 40 })
      .map((s): Target => ({ kind: "abstract", name: s })),
  );
  fc.assert(
    fc.property(target, (t) => {
      let parsed: Target;
      try {
        parsed = parseTarget(formatTarget(t));
      } catch (e) {
        if (e instanceof RangeError && /limited to 10[67] bytes/.test(e.message)) return;
        throw e;
      }
      deepEqual(parsed, t);
      equal(formatTarget(parsed), formatTarget(t));
    }),
    { numRuns: 1000 },
  );
});

/** Checks the contract of parseTarget on any input. */
function checkAnyTarget(text: string): void {
  let target: Target;
  try {
    target = parseTarget(text);
  } catch (e) {
    if (!(e instanceof RangeError)) fail(`${JSON.stringify(text)} threw ${e}`);
    equal(Object.getPrototypeOf(e), RangeError.prototype);
    ok(e.message.startsWith(`Invalid target "${text}": `), JSON.stringify(e.message));
    return;
  }
  const bytes = new TextEncoder().encode(text).length;
  switch (target.kind) {
    case "tcp":
      ok(Number.isInteger(target.port) && target.port >= 1 && target.port <= 65535);
      ok(target.host !== "" && !target.host.includes("[") && !/\s/.test(target.host));
      ok(!target.host.includes(":") || isIPv6(target.host), target.host);
      break;
    case "unix":
      equal(target.path, text);
      ok(text.startsWith("/") && bytes <= 107 && !text.includes("\0"));
      break;
    case "abstract":
      equal(`@${target.name}`, text);
      ok(target.name !== "" && bytes <= 107);
      break;
  }
  deepEqual(parseTarget(formatTarget(target)), target);
}

Deno.test("property: any string parses to a valid target or throws a RangeError naming it", () => {
  const tokens = [
    ":",
    ":",
    "[",
    "]",
    "@",
    "/",
    ".",
    "-",
    "_",
    " ",
    "0",
    "1",
    "8",
    "80",
    "65535",
    "65536",
    "::",
    "::1",
    "fe80",
    "ffff",
    "1.2.3.4",
    "a",
    "localhost",
    "\u00e9",
    "%",
  ];
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...tokens), { maxLength: 12 }).map((a) => a.join("")),
      checkAnyTarget,
    ),
    { numRuns: 5000 },
  );
  // Unicode and control characters, except a NUL inside a path (see the NUL-byte bug test).
  fc.assert(
    fc.property(
      fc.oneof(fc.string({ unit: "binary", maxLength: 30 }), fc.string({ maxLength: 30 })),
      fc.constantFrom("", "/", "@", "[", "[::1]:", "host:"),
      (s, prefix) => {
        const text = prefix + s;
        if (text.startsWith("/") && text.includes("\0")) return;
        checkAnyTarget(text);
      },
    ),
    { numRuns: 3000 },
  );
});

// ---------------------------------------------------------------------------------------------
// HOST:*

Deno.test("parseTargetSpec: HOST:* and [IPV6]:* take the listener's port", () => {
  deepEqual(parseTargetSpec("10.0.0.2:*"), { kind: "same-port", host: "10.0.0.2" });
  deepEqual(parseTargetSpec("backend.example:*"), { kind: "same-port", host: "backend.example" });
  deepEqual(parseTargetSpec("[2001:db8::1]:*"), { kind: "same-port", host: "2001:db8::1" });
  deepEqual(parseTargetSpec("::1:*"), { kind: "same-port", host: "::1" });
});

Deno.test("parseTargetSpec: everything else as parseTarget, errors naming the text as written", () => {
  for (const text of ["h:80", "h", "/run/x.sock", "/run/x:*", "@name:*", "vsock:2:1", "[::1]:8"]) {
    deepEqual(parseTargetSpec(text), parseTarget(text), text);
  }
  throwsRange(() => parseTargetSpec(":*"), 'Invalid target ":*": the host is empty');
  throwsRange(
    () => parseTargetSpec("bad host:*"),
    'Invalid target "bad host:*": "bad host" is neither an IP address nor a host name',
  );
  throwsRange(
    () => parseTargetSpec("vsock:3:*"),
    'Invalid target "vsock:3:*": ":*" (the listener\'s port) is for TCP only',
  );
  throwsRange(
    () => parseTargetSpec("h:**"),
    'Invalid target "h:**": port "**" is not a number from 1 to 65535',
  );
});

Deno.test("atPort: HOST:* becomes HOST:PORT; other targets stay as they are", () => {
  deepEqual(atPort({ kind: "same-port", host: "::1" }, 8443), tcp("::1", 8443));
  const fixed = tcp("h", 80);
  equal(atPort(fixed, 9000), fixed);
  equal(atPort(fixed, null), fixed);
  const unix: Target = { kind: "unix", path: "/run/s" };
  equal(atPort(unix, null), unix);
});

Deno.test("atPort: HOST:* and a listener without a port (a Unix socket) is refused with the reason", () => {
  const message = "the target 10.0.0.2:* takes the listener's port, and this listener has none " +
    "(a Unix socket); name the port: 10.0.0.2:PORT (TARGET=10.0.0.2:PORT in a template instance's .conf)";
  throwsRange(() => atPort({ kind: "same-port", host: "10.0.0.2" }, null), message);
  throwsRange(() => atPort({ kind: "same-port", host: "10.0.0.2" }, 0), message);
});

Deno.test("formatTarget: HOST:* parses back", () => {
  for (const text of ["10.0.0.2:*", "[2001:db8::1]:*", "h:*"]) {
    equal(formatTarget(parseTargetSpec(text)), text);
    deepEqual(parseTargetSpec(formatTarget(parseTargetSpec(text))), parseTargetSpec(text));
  }
});

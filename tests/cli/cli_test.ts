import { deepEqual, equal, fail, ok, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import type { ListenAddress } from "../../src/cli/address.ts";
import {
  type Command,
  DEFAULT_CONNECT_TIMEOUT_USEC,
  DEFAULT_DRAIN_TIMEOUT_USEC,
  DEFAULT_SESSION_IDLE_TIMEOUT_USEC,
  HELP,
  type Options,
  parseCommandLine,
  UsageError,
} from "../../src/cli/cli.ts";
import { DEFAULT_CONNECTIONS_MAX } from "../../src/service/limit.ts";
import { parseTarget } from "../../src/cli/target.ts";
import { parseTimespan } from "../../src/cli/timespan.ts";

/** Asserts that parsing `args` throws a UsageError with exactly `message`. */
function usage(args: string[], message: string): void {
  throws(() => parseCommandLine(args), (e: unknown) => {
    ok(e instanceof UsageError, `expected a UsageError, got ${e}`);
    equal(e.name, "UsageError");
    equal(e.message, message);
    return true;
  });
}

/** The command `run` with `target`, the defaults, and `overrides`. */
const run = (target: string, overrides: Partial<Omit<Options, "target">> = {}): Command => ({
  kind: "run",
  options: {
    target: parseTarget(target),
    connectionsMax: DEFAULT_CONNECTIONS_MAX,
    whenFull: "refuse",
    connectionsPerSource: null,
    exitIdleTimeUsec: Infinity,
    drainTimeoutUsec: DEFAULT_DRAIN_TIMEOUT_USEC,
    listen: [],
    verbose: false,
    targets: new Map(),
    proxyProtocol: null,
    transparent: false,
    connectTimeoutUsec: DEFAULT_CONNECT_TIMEOUT_USEC,
    idleTimeoutUsec: Infinity,
    sessionIdleTimeoutUsec: overrides.idleTimeoutUsec ?? DEFAULT_SESSION_IDLE_TIMEOUT_USEC,
    repliesPerDatagram: null,
    keepalive: true,
    ...overrides,
  },
});

Deno.test("UsageError is an Error named UsageError", () => {
  const e = new UsageError("x");
  ok(e instanceof Error);
  equal(e.name, "UsageError");
  equal(String(e), "UsageError: x");
});

// ---------------------------------------------------------------------------------------------
// Defaults and the target

Deno.test("parseCommandLine: a target alone gets the defaults", () => {
  equal(DEFAULT_CONNECTIONS_MAX, 256);
  equal(DEFAULT_DRAIN_TIMEOUT_USEC, 30_000_000);
  deepEqual(parseCommandLine(["localhost:8080"]), {
    kind: "run",
    options: {
      target: { kind: "tcp", host: "localhost", port: 8080 },
      connectionsMax: 256,
      whenFull: "refuse",
      connectionsPerSource: null,
      exitIdleTimeUsec: Infinity,
      drainTimeoutUsec: 30_000_000,
      listen: [],
      verbose: false,
      targets: new Map(),
      proxyProtocol: null,
      transparent: false,
      connectTimeoutUsec: 5_000_000,
      idleTimeoutUsec: Infinity,
      sessionIdleTimeoutUsec: 30_000_000,
      repliesPerDatagram: null,
      keepalive: true,
    },
  });
});

Deno.test("parseCommandLine: --idle-timeout ends datagram sessions too; without it, after 30s", () => {
  equal(DEFAULT_SESSION_IDLE_TIMEOUT_USEC, 30_000_000);
  const options = (args: string[]) => (parseCommandLine(args) as { options: Options }).options;
  equal(options(["h:1"]).sessionIdleTimeoutUsec, 30_000_000);
  equal(options(["h:1"]).idleTimeoutUsec, Infinity);
  equal(options(["--idle-timeout=5s", "h:1"]).sessionIdleTimeoutUsec, 5_000_000);
  equal(options(["--idle-timeout=infinity", "h:1"]).sessionIdleTimeoutUsec, Infinity);
});

Deno.test("parseCommandLine: every kind of target", () => {
  deepEqual(parseCommandLine(["127.0.0.1:80"]), run("127.0.0.1:80"));
  deepEqual(parseCommandLine(["[::1]:8080"]), run("[::1]:8080"));
  deepEqual(parseCommandLine(["/run/app.sock"]), run("/run/app.sock"));
  deepEqual(parseCommandLine(["@abstract"]), run("@abstract"));
  deepEqual(parseCommandLine(["example.com"]), run("example.com"));
});

Deno.test("parseCommandLine: no target", () => {
  usage([], "Not enough parameters: no target given.");
  usage(["-c", "5"], "Not enough parameters: no target given.");
  usage(["--exit-idle-time=5s"], "Not enough parameters: no target given.");
  usage(["--"], "Not enough parameters: no target given.");
});

Deno.test("parseCommandLine: two or more targets", () => {
  usage(["a:1", "b:2"], "Too many parameters: exactly one target expected, got a:1 b:2");
  usage(["a", "b", "c"], "Too many parameters: exactly one target expected, got a b c");
  usage(["a", "-c", "5", "b"], "Too many parameters: exactly one target expected, got a b");
});

Deno.test("parseCommandLine: an invalid target is a UsageError with the target's message", () => {
  usage(["::1"], parseTargetMessage("::1"));
  usage(["host:0"], 'Invalid target "host:0": port "0" is not a number from 1 to 65535');
  usage(["@"], 'Invalid target "@": the abstract socket name is empty');
  usage([""], 'Invalid target "": the host is empty');
  usage(["[::1]:80x"], 'Invalid target "[::1]:80x": port "80x" is not a number from 1 to 65535');
});

function parseTargetMessage(text: string): string {
  try {
    parseTarget(text);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error(`${text} parsed`);
}

Deno.test("parseCommandLine: options may come after the target, and '--' ends options", () => {
  deepEqual(parseCommandLine(["localhost", "-c", "3"]), run("localhost", { connectionsMax: 3 }));
  deepEqual(parseCommandLine(["--", "localhost"]), run("localhost"));
  usage(["--", "-c"], 'Invalid target "-c": "-c" is neither an IP address nor a host name');
  usage(
    ["--", "--help"],
    'Invalid target "--help": "--help" is neither an IP address nor a host name',
  );
  usage(["-"], 'Invalid target "-": "-" is neither an IP address nor a host name');
});

// ---------------------------------------------------------------------------------------------
// --connections-max

Deno.test("parseCommandLine: -c and --connections-max in every spelling", () => {
  deepEqual(parseCommandLine(["-c", "10", "h"]), run("h", { connectionsMax: 10 }));
  deepEqual(parseCommandLine(["-c10", "h"]), run("h", { connectionsMax: 10 }));
  deepEqual(parseCommandLine(["--connections-max", "10", "h"]), run("h", { connectionsMax: 10 }));
  deepEqual(parseCommandLine(["--connections-max=10", "h"]), run("h", { connectionsMax: 10 }));
  deepEqual(parseCommandLine(["-c", "1", "h"]), run("h", { connectionsMax: 1 }));
  deepEqual(parseCommandLine(["-c", "007", "h"]), run("h", { connectionsMax: 7 }));
  deepEqual(parseCommandLine(["-c", "2147483647", "h"]), run("h", { connectionsMax: 2147483647 }));
  // The last one wins, as with getopt.
  deepEqual(
    parseCommandLine(["-c", "5", "--connections-max=7", "h"]),
    run("h", { connectionsMax: 7 }),
  );
});

Deno.test("parseCommandLine: -c 0 is too low, as in systemd-socket-proxyd", () => {
  usage(["-c", "0", "h"], "Connection limit is too low.");
  usage(["-c0", "h"], "Connection limit is too low.");
  usage(["--connections-max=0", "h"], "Connection limit is too low.");
  usage(["--connections-max=000", "h"], "Connection limit is too low.");
  // Checked before the target, like the reference does while parsing options.
  usage(["-c", "0"], "Connection limit is too low.");
});

Deno.test("parseCommandLine: malformed connection limits", () => {
  const bad = (value: string) =>
    usage(
      [`--connections-max=${value}`, "h"],
      `Invalid --connections-max "${value}": expected a whole number`,
    );
  bad("");
  bad("abc");
  bad("-1");
  bad("+5");
  bad("1.5");
  bad("1e3");
  bad("0x10");
  bad(" 5");
  bad("5 ");
  bad("5k");
  bad("Infinity");
  bad("\u0665"); // Arabic-Indic five
  usage(["-c", "abc", "h"], 'Invalid --connections-max "abc": expected a whole number');
  usage(["-ch"], 'Invalid --connections-max "h": expected a whole number');
});

Deno.test("parseCommandLine: connection limits beyond 2^31-1 are too large", () => {
  usage(["-c", "2147483648", "h"], 'Invalid --connections-max "2147483648": too large');
  usage(
    ["-c", "99999999999999999999999", "h"],
    'Invalid --connections-max "99999999999999999999999": too large',
  );
});

Deno.test("parseCommandLine: -c without a value", () => {
  usage(["-c"], "Option '-c, --connections-max <value>' argument missing");
  usage(["h", "-c"], "Option '-c, --connections-max <value>' argument missing");
});

// BUG (src/cli/cli.ts): firstSentence() cuts at the first ". " only, but node:util parseArgs
// separates its sentences with ".\n" here, so the whole three-line message (with advice about
// '-c-XYZ' that would fail anyway) becomes the UsageError.
Deno.test("parseCommandLine: '-c -1' gives a one-sentence error", () => {
  usage(["-c", "-1", "h"], "Option '-c' argument is ambiguous.");
});

// ---------------------------------------------------------------------------------------------
// --exit-idle-time

Deno.test("parseCommandLine: --exit-idle-time takes a systemd time span", () => {
  deepEqual(
    parseCommandLine(["--exit-idle-time=30s", "h"]),
    run("h", { exitIdleTimeUsec: 30_000_000 }),
  );
  deepEqual(
    parseCommandLine(["--exit-idle-time", "5min 20s", "h"]),
    run("h", { exitIdleTimeUsec: 320_000_000 }),
  );
  deepEqual(
    parseCommandLine(["--exit-idle-time=1.5h", "h"]),
    run("h", { exitIdleTimeUsec: 5_400_000_000 }),
  );
  deepEqual(parseCommandLine(["--exit-idle-time=0", "h"]), run("h", { exitIdleTimeUsec: 0 }));
  deepEqual(
    parseCommandLine(["--exit-idle-time=500ms", "h"]),
    run("h", { exitIdleTimeUsec: 500_000 }),
  );
  deepEqual(
    parseCommandLine(["--exit-idle-time=10", "h"]),
    run("h", { exitIdleTimeUsec: 10_000_000 }),
  );
  deepEqual(
    parseCommandLine(["--exit-idle-time=infinity", "h"]),
    run("h", { exitIdleTimeUsec: Infinity }),
  );
  deepEqual(
    parseCommandLine(["-c", "3", "--exit-idle-time=1s", "/x"]),
    run("/x", { connectionsMax: 3, exitIdleTimeUsec: 1_000_000 }),
  );
});

Deno.test("parseCommandLine: bad spans name the option and the span", () => {
  usage(
    ["--exit-idle-time=5x", "h"],
    'Invalid --exit-idle-time: Invalid time span "5x": unknown unit "x" (use us, ms, s, min, h, d, w, M, y)',
  );
  usage(["--exit-idle-time=", "h"], 'Invalid --exit-idle-time: Invalid time span "": it is empty');
  usage(
    ["--exit-idle-time=-1s", "h"],
    'Invalid --exit-idle-time: Invalid time span "-1s": expected a number at "-1s"',
  );
  usage(
    ["--exit-idle-time=1000y", "h"],
    'Invalid --exit-idle-time: Invalid time span "1000y": too large (use "infinity")',
  );
  usage(["--exit-idle-time"], "Option '--exit-idle-time <value>' argument missing");
});

// ---------------------------------------------------------------------------------------------
// --drain-timeout

Deno.test("parseCommandLine: --drain-timeout takes a time span (default 30s)", () => {
  deepEqual(
    parseCommandLine(["--drain-timeout=5s", "h"]),
    run("h", { drainTimeoutUsec: 5_000_000 }),
  );
  deepEqual(
    parseCommandLine(["--drain-timeout", "1min", "h"]),
    run("h", { drainTimeoutUsec: 60e6 }),
  );
  deepEqual(parseCommandLine(["--drain-timeout=0", "h"]), run("h", { drainTimeoutUsec: 0 }));
  deepEqual(
    parseCommandLine(["--drain-timeout=250ms", "h"]),
    run("h", { drainTimeoutUsec: 250e3 }),
  );
  usage(
    ["--drain-timeout=soon", "h"],
    'Invalid --drain-timeout: Invalid time span "soon": expected a number at "soon"',
  );
  usage(["--drain-timeout=", "h"], 'Invalid --drain-timeout: Invalid time span "": it is empty');
  usage(["--drain-timeout"], "Option '--drain-timeout <value>' argument missing");
});

// ---------------------------------------------------------------------------------------------
// --listen

Deno.test("parseCommandLine: --listen is repeatable and keeps its order", () => {
  const listen: ListenAddress[] = [
    { kind: "tcp", host: null, port: 8080 },
    { kind: "tcp", host: "127.0.0.1", port: 9000 },
    { kind: "tcp", host: "::1", port: 1 },
    { kind: "unix", path: "/run/x.sock" },
    { kind: "abstract", name: "n" },
  ];
  deepEqual(
    parseCommandLine([
      "--listen=8080",
      "--listen",
      "127.0.0.1:9000",
      "--listen=[::1]:1",
      "--listen=/run/x.sock",
      "--listen=@n",
      "h",
    ]),
    run("h", { listen }),
  );
  deepEqual(
    parseCommandLine(["--listen=1", "--listen=1", "h"]),
    run("h", {
      listen: [{ kind: "tcp", host: null, port: 1 }, { kind: "tcp", host: null, port: 1 }],
    }),
  );
});

Deno.test("parseCommandLine: bad --listen addresses", () => {
  usage(
    ["--listen=0", "h"],
    'Invalid --listen: Invalid listen address "0": port is not from 1 to 65535',
  );
  usage(
    ["--listen=65536", "h"],
    'Invalid --listen: Invalid listen address "65536": port is not from 1 to 65535',
  );
  usage(
    ["--listen=localhost", "h"],
    'Invalid --listen: Invalid listen address "localhost": a port is required',
  );
  usage(
    ["--listen=[::1]", "h"],
    'Invalid --listen: Invalid listen address "[::1]": a port is required',
  );
  usage(
    ["--listen=host:0", "h"],
    'Invalid --listen: Invalid listen address "host:0": port "0" is not a number from 1 to 65535',
  );
  usage(["--listen=", "h"], 'Invalid --listen: Invalid listen address "": the host is empty');
  usage(
    ["--listen=@", "h"],
    'Invalid --listen: Invalid listen address "@": the abstract socket name is empty',
  );
  usage(["--listen"], "Option '--listen <value>' argument missing");
  // The first bad one is reported, even if a later one is fine.
  usage(
    ["--listen=0", "--listen=80", "h"],
    'Invalid --listen: Invalid listen address "0": port is not from 1 to 65535',
  );
});

// ---------------------------------------------------------------------------------------------
// -v, --verbose

Deno.test("parseCommandLine: -v and --verbose", () => {
  deepEqual(parseCommandLine(["-v", "h"]), run("h", { verbose: true }));
  deepEqual(parseCommandLine(["--verbose", "h"]), run("h", { verbose: true }));
  deepEqual(parseCommandLine(["-v", "-v", "h"]), run("h", { verbose: true }));
  deepEqual(
    parseCommandLine(["-vc", "4", "h"]),
    run("h", { verbose: true, connectionsMax: 4 }),
  );
  usage(["--verbose=yes", "h"], "Option '-v, --verbose' does not take an argument");
});

Deno.test("parseCommandLine: all options together", () => {
  deepEqual(
    parseCommandLine([
      "-v",
      "-c",
      "9",
      "--exit-idle-time=1min",
      "--drain-timeout=2s",
      "--listen=7000",
      "[::1]:8080",
    ]),
    run("[::1]:8080", {
      verbose: true,
      connectionsMax: 9,
      exitIdleTimeUsec: 60e6,
      drainTimeoutUsec: 2e6,
      listen: [{ kind: "tcp", host: null, port: 7000 }],
    }),
  );
});

// ---------------------------------------------------------------------------------------------
// Unknown options, --help, --version

Deno.test("parseCommandLine: unknown options", () => {
  usage(["--foo", "h"], "Unknown option '--foo'.");
  usage(["-x", "h"], "Unknown option '-x'.");
  usage(["--connections", "5", "h"], "Unknown option '--connections'.");
  usage(["--proxy-protocol-v1", "h"], "Unknown option '--proxy-protocol-v1'.");
  usage(["--no-help", "h"], "Unknown option '--no-help'.");
  usage(["--HELP"], "Unknown option '--HELP'.");
  // An unknown option wins over --help, which is only looked at once all options parse.
  usage(["--help", "--foo"], "Unknown option '--foo'.");
});

Deno.test("parseCommandLine: flags do not take values", () => {
  usage(["--help=yes"], "Option '-h, --help' does not take an argument");
  usage(["--version=1"], "Option '--version' does not take an argument");
});

Deno.test("parseCommandLine: --help and -h", () => {
  deepEqual(parseCommandLine(["--help"]), { kind: "help" });
  deepEqual(parseCommandLine(["-h"]), { kind: "help" });
  // --help wins over everything else that parses, including bad values and a missing target.
  deepEqual(parseCommandLine(["-h", "a", "b"]), { kind: "help" });
  deepEqual(parseCommandLine(["-c", "0", "--help"]), { kind: "help" });
  deepEqual(parseCommandLine(["--exit-idle-time=bad", "-h"]), { kind: "help" });
  deepEqual(parseCommandLine(["--version", "--help"]), { kind: "help" });
  deepEqual(parseCommandLine(["-hc", "3"]), { kind: "help" });
});

Deno.test("parseCommandLine: --version", () => {
  deepEqual(parseCommandLine(["--version"]), { kind: "version" });
  deepEqual(parseCommandLine(["--version", "a", "b"]), { kind: "version" });
  deepEqual(parseCommandLine(["-c", "0", "--version"]), { kind: "version" });
});

Deno.test("HELP documents every option and the default limit", () => {
  for (
    const text of [
      "-h --help",
      "--version",
      "-c --connections-max=N",
      "--exit-idle-time=SPAN",
      "--drain-timeout=SPAN",
      "--listen=ADDR",
      "-v --verbose",
      "--target=NAME=TARGET",
      "--proxy-protocol=v1|v2",
      "--connect-timeout=SPAN",
      "--idle-timeout=SPAN",
      "--replies-per-datagram=N",
      "--no-keepalive",
      "(default: 5s; 0: once)",
      "(default: 256)",
      "(default: infinity)",
      "(default: 30s)",
      "{HOST:PORT|HOST:*|[IPV6]:PORT|/PATH|@ABSTRACT|vsock:CID:PORT}",
      "--when-full=refuse|wait",
      "--connections-per-source=N",
    ]
  ) {
    ok(HELP.includes(text), text);
  }
  ok(HELP.startsWith("socket-proxyd [OPTIONS...] "));
});

// ---------------------------------------------------------------------------------------------
// Properties

/** Parses `args`, failing on anything thrown that is not a UsageError. */
function parseOrUsage(args: string[]): Command | UsageError {
  try {
    return parseCommandLine(args);
  } catch (e) {
    if (!(e instanceof UsageError)) fail(`${JSON.stringify(args)} threw ${e}`);
    return e;
  }
}

Deno.test("property: any argument list gives a command or a UsageError, nothing else", () => {
  const arg = fc.oneof(
    fc.constantFrom(
      "-c",
      "-c0",
      "-c5",
      "--connections-max",
      "--connections-max=",
      "--connections-max=3",
      "--when-full=wait",
      "--when-full=queue",
      "--connections-per-source=2",
      "--connections-per-source=0",
      "h:*",
      "/p:*",
      "--exit-idle-time",
      "--exit-idle-time=1s",
      "--exit-idle-time=x",
      "-h",
      "--help",
      "--version",
      "-v",
      "--verbose",
      "--drain-timeout=1s",
      "--drain-timeout",
      "--listen=80",
      "--listen=0",
      "--listen",
      "--",
      "-",
      "-x",
      "--x=1",
      "localhost",
      "[::1]:1",
      "/p",
      "@a",
      "0",
      "-1",
      "",
    ),
    fc.string({ unit: "binary", maxLength: 12 }),
  );
  fc.assert(
    fc.property(fc.array(arg, { maxLength: 6 }), (args) => {
      const result = parseOrUsage(args);
      if (result instanceof UsageError) {
        ok(result.message.length > 0);
        return;
      }
      if (result.kind !== "run") return;
      const { connectionsMax, exitIdleTimeUsec, drainTimeoutUsec, listen, verbose } =
        result.options;
      ok(Number.isInteger(connectionsMax) && connectionsMax >= 1 && connectionsMax < 2 ** 31);
      for (const span of [exitIdleTimeUsec, drainTimeoutUsec]) {
        ok(span === Infinity || (Number.isSafeInteger(span) && span >= 0), String(span));
      }
      ok(Array.isArray(listen));
      equal(typeof verbose, "boolean");
    }),
    { numRuns: 3000 },
  );
});

Deno.test("property: --connections-max=X is X, 'too low', or an error naming X", () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.nat().map(String), fc.string({ unit: "binary", maxLength: 12 })),
      (value) => {
        const result = parseOrUsage([`--connections-max=${value}`, "localhost"]);
        if (result instanceof UsageError) {
          if (/^\d+$/.test(value) && Number(value) < 1) {
            equal(result.message, "Connection limit is too low.");
          } else {
            ok(result.message.includes(`"${value}"`), result.message);
          }
          return;
        }
        ok(/^\d+$/.test(value), value);
        deepEqual(result, run("localhost", { connectionsMax: Number(value) }));
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("property: --exit-idle-time=X is parseTimespan(X) or an error naming X", () => {
  const span = fc.oneof(
    fc.array(fc.constantFrom("1", "5", "0", ".", " ", "s", "min", "ms", "h", "x", "-"), {
      maxLength: 8,
    }).map((a) => a.join("")),
    fc.string({ unit: "binary", maxLength: 12 }),
  );
  fc.assert(
    fc.property(span, (value) => {
      const result = parseOrUsage([`--exit-idle-time=${value}`, "localhost"]);
      let expected: number;
      try {
        expected = parseTimespan(value);
      } catch (e) {
        ok(result instanceof UsageError, `${JSON.stringify(value)} was accepted`);
        equal(result.message, `Invalid --exit-idle-time: ${(e as Error).message}`);
        ok(result.message.includes(`"${value}"`));
        return;
      }
      deepEqual(result, run("localhost", { exitIdleTimeUsec: expected }));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: a single target is parseTarget's or an error naming it", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 20 }), (text) => {
      if (text.startsWith("/") && text.includes("\0")) return; // see target_test's NUL-byte bug
      const result = parseOrUsage(["--", text]);
      if (result instanceof UsageError) {
        ok(result.message.startsWith(`Invalid target "${text}": `), result.message);
        return;
      }
      deepEqual(result, run(text));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("parseCommandLine: --proxy-protocol v1 and v2; anything else is an error", () => {
  deepEqual(parseCommandLine(["--proxy-protocol=v1", "h:1"]), run("h:1", { proxyProtocol: "v1" }));
  deepEqual(
    parseCommandLine(["--proxy-protocol", "v2", "h:1"]),
    run("h:1", { proxyProtocol: "v2" }),
  );
  usage(["--proxy-protocol=v3", "h:1"], 'Invalid --proxy-protocol "v3": expected v1 or v2');
  usage(["--proxy-protocol=", "h:1"], 'Invalid --proxy-protocol "": expected v1 or v2');
});

Deno.test("parseCommandLine: --transparent takes no value, and goes with --proxy-protocol", () => {
  deepEqual(parseCommandLine(["--transparent", "h:1"]), run("h:1", { transparent: true }));
  deepEqual(
    parseCommandLine(["--proxy-protocol=v2", "--transparent", "h:1"]),
    run("h:1", { transparent: true, proxyProtocol: "v2" }),
  );
  usage(
    ["--transparent=yes", "h:1"],
    "Option '--transparent' does not take an argument",
  );
});

Deno.test("parseCommandLine: --connect-timeout and --idle-timeout spans", () => {
  deepEqual(
    parseCommandLine(["--connect-timeout=0", "h:1"]),
    run("h:1", { connectTimeoutUsec: 0 }),
  );
  deepEqual(
    parseCommandLine(["--connect-timeout=1min", "--idle-timeout=2h", "h:1"]),
    run("h:1", { connectTimeoutUsec: 60e6, idleTimeoutUsec: 7200e6 }),
  );
  deepEqual(
    parseCommandLine(["--connect-timeout=infinity", "h:1"]),
    run("h:1", { connectTimeoutUsec: Infinity }),
  );
  usage(["--idle-timeout=0", "h:1"], "Invalid --idle-timeout: must be more than 0");
  usage(
    ["--connect-timeout=soon", "h:1"],
    'Invalid --connect-timeout: Invalid time span "soon": expected a number at "soon"',
  );
});

Deno.test("parseCommandLine: --no-keepalive", () => {
  deepEqual(parseCommandLine(["--no-keepalive", "h:1"]), run("h:1", { keepalive: false }));
});

Deno.test("parseCommandLine: --target=NAME=TARGET, with or without a default target", () => {
  const named = parseCommandLine(["--target=web=127.0.0.1:8080", "--target=admin=/run/a.sock"]);
  equal(named.kind, "run");
  if (named.kind !== "run") return;
  equal(named.options.target, null);
  deepEqual([...named.options.targets], [
    ["web", { kind: "tcp", host: "127.0.0.1", port: 8080 }],
    ["admin", { kind: "unix", path: "/run/a.sock" }],
  ]);
  const mixed = parseCommandLine(["--target=web=[::1]:80", "h:1"]);
  if (mixed.kind !== "run") return fail("expected run");
  deepEqual(mixed.options.target, parseTarget("h:1"));
  deepEqual(mixed.options.targets.get("web"), { kind: "tcp", host: "::1", port: 80 });
  // Only the first "=" separates the name: an abstract name may contain more.
  deepEqual(
    (parseCommandLine(["--target=a=@b=c"]) as { options: Options }).options.targets.get("a"),
    { kind: "abstract", name: "b=c" },
  );
  usage(
    ["--target=web"],
    'Invalid --target "web": expected NAME=TARGET, NAME as in FileDescriptorName=',
  );
  usage(
    ["--target==h:1"],
    'Invalid --target "=h:1": expected NAME=TARGET, NAME as in FileDescriptorName=',
  );
  usage(
    ["--target=a:b=h:1"],
    'Invalid --target "a:b=h:1": expected NAME=TARGET, NAME as in FileDescriptorName=',
  );
  usage(["--target=w=h:1", "--target=w=h:2"], 'Invalid --target: "w" is given twice');
  usage(
    ["--target=w=h:99999"],
    'Invalid target "h:99999": port "99999" is not a number from 1 to 65535',
  );
});

Deno.test("parseCommandLine: vsock targets", () => {
  deepEqual(parseCommandLine(["vsock:2:1234"]), run("vsock:2:1234"));
  deepEqual(parseTarget("vsock:2:1234"), { kind: "vsock", cid: 2, port: 1234 });
});

// ---------------------------------------------------------------------------------------------
// Admission options and HOST:*

Deno.test("parseCommandLine: --when-full is refuse by default, or wait", () => {
  deepEqual(parseCommandLine(["h"]), run("h"));
  deepEqual(parseCommandLine(["--when-full=refuse", "h"]), run("h"));
  deepEqual(parseCommandLine(["--when-full=wait", "h"]), run("h", { whenFull: "wait" }));
  deepEqual(parseCommandLine(["--when-full", "wait", "h"]), run("h", { whenFull: "wait" }));
  usage(["--when-full=queue", "h"], 'Invalid --when-full "queue": expected refuse or wait');
  usage(["--when-full=", "h"], 'Invalid --when-full "": expected refuse or wait');
  usage(["--when-full=WAIT", "h"], 'Invalid --when-full "WAIT": expected refuse or wait');
});

Deno.test("parseCommandLine: --connections-per-source is a whole number from 1", () => {
  deepEqual(
    parseCommandLine(["--connections-per-source=2", "h"]),
    run("h", { connectionsPerSource: 2 }),
  );
  deepEqual(
    parseCommandLine(["--connections-per-source", "1", "-c", "4", "--when-full=wait", "h"]),
    run("h", { connectionsPerSource: 1, connectionsMax: 4, whenFull: "wait" }),
  );
  usage(
    ["--connections-per-source=0", "h"],
    "Invalid --connections-per-source: must be at least 1",
  );
  usage(
    ["--connections-per-source=x", "h"],
    'Invalid --connections-per-source "x": expected a whole number',
  );
  usage(
    ["--connections-per-source=-1", "h"],
    'Invalid --connections-per-source "-1": expected a whole number',
  );
  usage(
    ["--connections-per-source=2147483648", "h"],
    'Invalid --connections-per-source "2147483648": too large',
  );
  // -c keeps the reference's message.
  usage(["-c", "0", "h"], "Connection limit is too low.");
});

Deno.test("parseCommandLine: HOST:* as the target and in --target", () => {
  const command = parseCommandLine(["10.0.0.2:*", "--target=web=[::1]:*", "--target=db=h:5432"]);
  equal(command.kind, "run");
  if (command.kind !== "run") return;
  deepEqual(command.options.target, { kind: "same-port", host: "10.0.0.2" });
  deepEqual(command.options.targets.get("web"), { kind: "same-port", host: "::1" });
  deepEqual(command.options.targets.get("db"), { kind: "tcp", host: "h", port: 5432 });
  usage(["vsock:1:*"], 'Invalid target "vsock:1:*": ":*" (the listener\'s port) is for TCP only');
  usage([":*"], 'Invalid target ":*": the host is empty');
  // A path may end in ":*": it is a Unix socket.
  const unix = parseCommandLine(["/run/x.sock:*"]);
  deepEqual(unix.kind === "run" && unix.options.target, { kind: "unix", path: "/run/x.sock:*" });
});

Deno.test("parseCommandLine: --replies-per-datagram is a whole number from 1; none by default", () => {
  const options = (args: string[]) => (parseCommandLine(args) as { options: Options }).options;
  equal(options(["h:1"]).repliesPerDatagram, null);
  equal(options(["--replies-per-datagram=1", "h:1"]).repliesPerDatagram, 1);
  equal(options(["--replies-per-datagram", "3", "h:1"]).repliesPerDatagram, 3);
  usage(["--replies-per-datagram=0", "h:1"], "Invalid --replies-per-datagram: must be at least 1");
  for (const bad of ["-1", "x", "1.5", ""]) {
    usage(
      [`--replies-per-datagram=${bad}`, "h:1"],
      `Invalid --replies-per-datagram "${bad}": expected a whole number`,
    );
  }
  usage(
    ["--replies-per-datagram=4294967296", "h:1"],
    'Invalid --replies-per-datagram "4294967296": too large',
  );
});

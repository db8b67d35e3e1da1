/**
 * Start-up through the real binary: every bad invocation and every activation edge, each with
 * its message and exit status, before any socket is touched.
 */
import { equal, match, ok } from "node:assert/strict";
import { DENO_RUN, freePort, MAIN, Process, ROOT, runProxy, tempSocketPath } from "./harness.ts";

const LAUNCHER = `${ROOT}tests/integration/listen_fds.py`;

/** Runs the proxy under listen_fds.py with `launcherArgs` and waits for it to exit. */
function launch(launcherArgs: string[], proxyArgs: string[]) {
  return new Process(LAUNCHER, [...launcherArgs, "--", ...DENO_RUN, MAIN, ...proxyArgs]).exit();
}

const usageErrors: Array<[string[], RegExp]> = [
  [[], /Not enough parameters/],
  [["127.0.0.1:1", "127.0.0.1:2"], /Too many parameters.*127\.0\.0\.1:1 127\.0\.0\.1:2/],
  [["--bogus", "127.0.0.1:1"], /Unknown option '--bogus'/],
  [["-x", "127.0.0.1:1"], /Unknown option '-x'/],
  [["-c", "0", "127.0.0.1:1"], /Connection limit is too low\./],
  [["--connections-max=abc", "127.0.0.1:1"], /Invalid --connections-max "abc"/],
  [["--connections-max=-5", "127.0.0.1:1"], /Invalid --connections-max "-5"/],
  [["--connections-max", "127.0.0.1:1"], /Invalid --connections-max "127\.0\.0\.1:1"/],
  [["--exit-idle-time=5 parsecs", "127.0.0.1:1"], /Invalid --exit-idle-time.*"5 parsecs"/],
  [["--exit-idle-time=", "127.0.0.1:1"], /Invalid --exit-idle-time/],
  [["127.0.0.1:99999"], /port "99999"/],
  [["::1"], /write IPv6 addresses in brackets/],
  [["[::1"], /expected "\[IPv6-ADDRESS\]:PORT"/],
  [["@"], /abstract socket name is empty/],
  [["--listen=0", "127.0.0.1:1"], /Invalid --listen: .*"0": port is not from 1 to 65535/],
  [["--listen=localhost", "127.0.0.1:1"], /Invalid --listen: .*"localhost": a port is required/],
  [["--drain-timeout=soon", "127.0.0.1:1"], /Invalid --drain-timeout: .*"soon"/],
];

for (const [args, message] of usageErrors) {
  Deno.test(`usage error: ${JSON.stringify(args)}`, async () => {
    const { code, stderr, stdout } = await runProxy(args);
    equal(code, 1);
    match(stderr, message);
    equal(stderr.trim().split("\n").length, 1, `one line expected:\n${stderr}`);
    equal(stdout, "");
  });
}

Deno.test("--help prints the usage on stdout and exits 0", async () => {
  for (const flag of ["--help", "-h"]) {
    const { code, stdout, stderr } = await runProxy([flag]);
    equal(code, 0);
    match(stdout, /socket-proxyd \[OPTIONS\.\.\.\]/);
    match(stdout, /--connections-max=N/);
    match(stdout, /--exit-idle-time=SPAN/);
    equal(stderr, "");
  }
});

Deno.test("--version prints the version and exits 0", async () => {
  const { version } = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const { code, stdout } = await runProxy(["--version"]);
  equal(code, 0);
  match(stdout, new RegExp(`^socket-proxyd ${version.replaceAll(".", "\\.")} \\(Deno 2\\.`));
});

Deno.test("no sockets passed in: says so, with a hint, exit 1", async () => {
  const { code, stderr } = await runProxy(["127.0.0.1:1"]);
  equal(code, 1);
  match(stderr, /Didn't get any sockets passed in; start me from a \.socket unit/);
});

Deno.test("LISTEN_PID of another process: the sockets are not ours, exit 1", async () => {
  const { code, stderr } = await launch([`--tcp=${freePort()}`, "--pid=parent"], ["127.0.0.1:1"]);
  equal(code, 1);
  match(stderr, /Didn't get any sockets passed in/);
});

Deno.test("malformed LISTEN_* variables are reported, exit 1", async () => {
  const cases: Array<[string[], RegExp]> = [
    [["--pid=12ab"], /LISTEN_PID="12ab" is not a decimal number/],
    [["--env=LISTEN_FDS=two"], /LISTEN_FDS="two" is not a decimal number/],
    [["--env=LISTEN_FDS=0"], /LISTEN_FDS=0 is out of range/],
    [["--env=LISTEN_FDS=99999999"], /LISTEN_FDS=99999999 is out of range/],
    // A LISTEN_FDNAMES without one name per fd is no reason to stop: see options_test.ts.
  ];
  for (const [launcherArgs, message] of cases) {
    const { code, stderr } = await launch([`--tcp=${freePort()}`, ...launcherArgs], [
      "127.0.0.1:1",
    ]);
    equal(code, 1, stderr);
    match(stderr, /Invalid socket activation environment/);
    match(stderr, message);
  }
});

Deno.test("a regular file as fd 3 is refused, naming the fd, exit 1", async () => {
  const { code, stderr } = await launch(
    [`--file=${ROOT}deno.json`, "--env=LISTEN_FDNAMES=config"],
    ["127.0.0.1:1"],
  );
  equal(code, 1);
  match(
    stderr,
    /Passed in socket fd 3 \(name "config"\) is neither a stream nor a datagram socket \(not a socket\)/,
  );
});

Deno.test("a Unix target without file permission is refused at start with the fix, exit 1", async () => {
  const path = tempSocketPath("nope.sock");
  const { code, stderr } = await launch([`--tcp=${freePort()}`], [path]);
  equal(code, 1);
  match(stderr, new RegExp(`add --allow-read=${path} --allow-write=${path}`));
});

Deno.test("the activation variables are unset once read", async () => {
  // A proxy started with them must not leak them; checked through the module directly.
  const { takeListenEnv } = await import("../../src/service/activation.ts");
  Deno.env.set("LISTEN_PID", String(Deno.pid));
  Deno.env.set("LISTEN_FDS", "2");
  Deno.env.set("LISTEN_FDNAMES", "a:b");
  Deno.env.set("LISTEN_PIDFDID", "1234");
  const passed = takeListenEnv();
  equal(passed.length, 2);
  for (const name of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID"]) {
    equal(Deno.env.get(name), undefined, name);
  }
  Deno.env.set("LISTEN_PID", "garbage");
  let threw = false;
  try {
    takeListenEnv();
  } catch {
    threw = true;
  }
  ok(threw);
  equal(Deno.env.get("LISTEN_PID"), undefined, "unset even when malformed");
});

/**
 * Least privilege. The permission set the proxy is deployed with (`proxy` in deno.json, used by
 * every task that runs it) grants only the network, the service manager's variables, the
 * sd_notify socket and FFI on libc (for datagram sockets, given up before serving); and inside
 * the real, running proxy those flags refuse everything else: reading /etc/shadow, any other
 * file, running programs, native code (libc included, once serving), the rest of the
 * environment.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { echoBackend, freePort, ROOT } from "./integration/harness.ts";
import { startLimitedProxy } from "./faults/helpers.ts";
import { sourceFiles } from "./sources.ts";

const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));

/** What the proxy may read from its environment: sd_listen_fds(3), sd_notify(3), journal. */
const ALLOWED_VARIABLES =
  /^(LISTEN_(PID|PIDFDID|FDS|FDNAMES)|NOTIFY_SOCKET|WATCHDOG_(USEC|PID)|JOURNAL_STREAM)$/;
/**
 * The only path the set lets it write to: the journal's socket. The service manager's
 * notification socket is wherever NOTIFY_SOCKET says; each way of running the program adds that
 * one path (tests/systemd/notify_grant_test.ts).
 */
const ALLOWED_WRITES = ["/run/systemd/journal/socket"];

Deno.test("the deployment permission set grants the network, the service manager's variables and its socket, nothing else", () => {
  const set = config.permissions.proxy;
  deepEqual(Object.keys(set).sort(), ["env", "ffi", "net", "write"]);
  equal(set.net, true, "network: clients are accepted and targets dialled anywhere");
  ok(Array.isArray(set.env) && set.env.length > 0);
  for (const variable of set.env) match(variable, ALLOWED_VARIABLES);
  deepEqual(set.write, ALLOWED_WRITES);
  ok(set.ffi.length > 0, "FFI: libc, for datagram sockets");
  for (const path of set.ffi) match(path, /^\/lib\/[a-z0-9_]+-linux-gnu\/libc\.so\.6$/);
  for (const kind of ["read", "run", "sys", "import", "all"]) {
    equal(set[kind], undefined, `no ${kind} permission`);
  }
});

Deno.test("every task that runs the proxy uses exactly that permission set, and the notification socket", () => {
  const runners = Object.entries(config.tasks as Record<string, string>)
    .filter(([, command]) => /\bdeno (run|compile)\b.*(^|\s)main\.ts(\s|$)/.test(command));
  ok(runners.length >= 3, `start, socket-activate, compile: ${runners.map(([n]) => n)}`);
  const journal = ALLOWED_WRITES.join(",");
  // What the task adds in front of the set's write list: the socket NOTIFY_SOCKET names (a
  // command substitution that tests/systemd/notify_grant_test.ts runs), or for a compiled binary,
  // which cannot follow the environment, the system manager's.
  const notify: Record<string, RegExp> = {
    start: new RegExp(`^--allow-write=\\$\\(NOTIFY\\)${journal}$`),
    compile: new RegExp(`^--allow-write=/run/systemd/notify,${journal}$`),
  };
  for (const [name, command] of runners) {
    ok(command.includes("-P=proxy"), `${name} uses -P=proxy`);
    const grants = command.replace(/\$\(sh -c '[^']*'\)/, "$(NOTIFY)")
      .match(/(?<=^|\s)(-A|--allow-\S+)/g) ?? [];
    if (notify[name] === undefined) deepEqual(grants, [], `${name} grants nothing more`);
    else ok(grants.length === 1 && notify[name].test(grants[0]), `${name}: ${command}`);
  }
});

Deno.test("the proxy's source never spawns, opens files (but --config's), loads native code but libc or makes requests", () => {
  const forbidden =
    /\bDeno\.(Command|run|open|openSync|create|readFile|readTextFile|writeFile|writeTextFile|dlopen|makeTemp\w*)\b|\bfetch\(|node:(child_process|fs|http|https|worker_threads)/;
  const files = [
    `${ROOT}main.ts`,
    ...sourceFiles(`${ROOT}src`),
  ];
  // The one use of node:fs: fstat(2) of an open descriptor (stdin, stderr), which needs no
  // permission and opens nothing.
  const fstat = 'const { fstatSync } = await import("node:fs");';
  // The one file read: the configuration file of --config=, which the wrapper grants for
  // reading (and nothing else on the file system).
  const config = "return Deno.readTextFile(path);";
  // The one use of FFI: libc, with the symbols it names, before FFI is given up.
  const libc = "return Deno.dlopen(path, symbols);";
  for (const file of files) {
    const source = Deno.readTextFileSync(file)
      .replace(/^\s*(\/\/|\*).*$/gm, "") // No comments.
      .replace(file.endsWith("/src/service/stdio.ts") ? fstat : "\0", "")
      .replace(file.endsWith("/src/cli/config.ts") ? config : "\0", "")
      .replace(file.endsWith("/src/engine/libc.ts") ? libc : "\0", "");
    const found = forbidden.exec(source);
    ok(found === null, `${file} uses ${found?.[0]}`);
  }
});

Deno.test("inside the running proxy, its deployment flags refuse /etc/shadow, other files, programs, native code and other variables", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  // The same `deno run` flags as deployment (harness DENO_RUN: -P=proxy), plus a probe module
  // run first in the same process; the proxy then serves as usual.
  const proxy = await startLimitedProxy({
    listen: [`127.0.0.1:${port}`],
    args: [`127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`],
    denoFlags: [`--preload=${ROOT}tests/faults/permission_probe.ts`],
  });
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new Uint8Array([1]));
    equal(await conn.read(new Uint8Array(1)), 1, "the proxy serves as usual");
    conn.close();
    await proxy.process.waitForLog(/^probe granted: .*$/m);
    await proxy.process.waitForLog(/^probe load libc once serving: .*$/m);
    const probes = new Map(
      [...proxy.stderr.matchAll(/^probe ([^:]+): (.*)$/gm)].map((m) => [m[1], m[2]]),
    );
    ok(probes.size >= 18, [...probes.keys()].join(", "));
    for (const [name, outcome] of probes) {
      if (name === "granted") continue;
      equal(outcome, "denied (NotCapable)", `${name} must be refused by a permission check`);
    }
    equal(
      probes.get("granted"),
      "net=granted env:LISTEN_FDS=granted env:NOTIFY_SOCKET=granted env:WATCHDOG_USEC=granted",
    );
    equal(probes.get("read /etc/shadow"), "denied (NotCapable)");
  } finally {
    await proxy.stop();
    await backend.close();
    try {
      Deno.removeSync(`/tmp/socket-proxyd-probe-${proxy.pid}`); // Only if the probe got through.
    } catch {
      // Not there: refused, as it should be.
    }
  }
});

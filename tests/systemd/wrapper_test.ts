/**
 * The wrapper systemd/socket-proxyd and the example units: the wrapper grants exactly the
 * deno.json permission set (plus the Unix socket paths it is given), and really runs the
 * one-file build (`deno task bundle`, which `deno task test` runs first) under any home and
 * without a cache. The units themselves are proven on a real systemd by tests/systemd/run.sh.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { HELP } from "../../src/cli/cli.ts";
import { LIBC_CANDIDATES } from "../../src/engine/libc.ts";
import { DEPLOYMENT_ENV, Process } from "../integration/harness.ts";
import { PROCESS_NAME } from "../../src/cli/version.ts";

const root = new URL("../../", import.meta.url);
const ROOT = root.pathname;
const WRAPPER = `${ROOT}systemd/socket-proxyd`;
const wrapper = Deno.readTextFileSync(WRAPPER);
const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", root)));
const SERVICES = [
  "unix-path/proxy-to-nginx.service",
  "namespace/proxy-to-nginx.service",
  "dns/proxy-to-dnsmasq.service",
  "transparent/transparent-proxy.service",
];

function flag(name: string): string[] {
  return wrapper.match(new RegExp(`--${name}=(\\S+)`))?.[1].split(",") ?? [];
}

Deno.test("the wrapper grants exactly the deno.json permission set", () => {
  const exec = wrapper.slice(wrapper.indexOf('exec "$deno" run'));
  const set = config.permissions.proxy;
  deepEqual(flag("allow-env").sort(), [...set.env].sort());
  const base = /^write_paths=(\S+)$/m.exec(wrapper)?.[1].split(",") ?? [];
  deepEqual(base.sort(), [...set.write].sort());
  equal(flag("allow-write").join(","), '"$write_paths"');
  equal(flag("allow-read").join(","), '"$read_paths"}');
  ok(set.net === true && /--allow-net \\/.test(exec), "network");
  for (const unstable of config.unstable) ok(exec.includes(`--unstable-${unstable}`), unstable);
  ok(!/--allow-(run|sys|all|import)|-A\b|-P\b/.test(exec), "nothing more");
  equal(flag("allow-ffi").join(","), "$libc", "FFI: one file, libc");
  ok(exec.includes('${ffi:+"$ffi"}'), "FFI granted only where libc was found");
  equal((exec.match(/--allow-write/g) ?? []).length, 1, "one --allow-write: a second replaces it");
});

Deno.test("the wrapper exports the deployment environment", () => {
  const exec = wrapper.indexOf('exec "$deno" run');
  for (const setting of DEPLOYMENT_ENV) {
    const at = wrapper.search(new RegExp(`^export ${setting}$`, "m"));
    ok(at >= 0 && at < exec, setting);
  }
});

Deno.test("the wrapper grants libc where the program looks for it, deno.json's paths first", () => {
  const list = /for libc in ([^;]+);/.exec(wrapper.replaceAll("\\\n", " "))![1].trim().split(/\s+/);
  ok(list.length >= 4);
  for (const path of list) ok(LIBC_CANDIDATES.includes(path), path);
  deepEqual(list.slice(0, 2), config.permissions.proxy.ffi);
});

async function runWrapper(args: string[], env: Record<string, string> = {}) {
  const output = await new Deno.Command("sh", {
    args: [WRAPPER, ...args],
    env: {
      SOCKET_PROXYD_DENO: Deno.execPath(),
      SOCKET_PROXYD_PROGRAM: `${ROOT}dist/socket-proxyd.js`,
      ...env,
    },
    clearEnv: true,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("the wrapper runs the proxy", async () => {
  const { code, stdout } = await runWrapper(["--version"]);
  equal(code, 0);
  match(stdout, new RegExp(`^socket-proxyd ${config.version.replaceAll(".", "\\.")} `));
});

Deno.test("the wrapper runs under a user without a home, and Deno writes no cache", async () => {
  // As systemd starts a service with User= a system user whose home is /nonexistent.
  const home = Deno.makeTempDirSync({ prefix: "socket-proxyd-home-" });
  try {
    for (const env of [{ HOME: "/nonexistent" }, { HOME: home }, {}] as Record<string, string>[]) {
      const { code, stdout, stderr } = await runWrapper(["--version"], env);
      equal(code, 0, stderr);
      match(stdout, /^socket-proxyd /);
      equal(stderr, "");
    }
    equal([...Deno.readDirSync(home)].length, 0, "nothing written to the home directory");
  } finally {
    Deno.removeSync(home, { recursive: true });
  }
});

Deno.test("the wrapper keeps Deno's code cache in the unit's CacheDirectory= when it has one", async () => {
  const cache = Deno.makeTempDirSync({ prefix: "socket-proxyd-cache-" });
  try {
    // As systemd sets it for CacheDirectory=a b: the first one serves.
    const { code, stderr } = await runWrapper(["--version"], {
      CACHE_DIRECTORY: `${cache}:/nonexistent/other`,
    });
    equal(code, 0, stderr);
    ok(
      [...Deno.readDirSync(`${cache}/deno`)].some((e) => e.name.startsWith("v8_code_cache")),
      "V8's code cache is there",
    );
  } finally {
    Deno.removeSync(cache, { recursive: true });
  }
});

Deno.test("the wrapper grants a Unix socket target to Deno, and only that", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-wrapper-" });
  try {
    const target = `${dir}/backend.sock`;
    const listen = `@socket-proxyd-wrapper-test-${crypto.randomUUID()}`;
    // Serves (and so passed the start-up permission check), then exits idle.
    const served = await runWrapper([`--listen=${listen}`, "--exit-idle-time=100ms", target]);
    equal(served.code, 0, served.stderr);
    ok(served.stderr.includes(`to ${target}`), served.stderr);
    // The same through deno run without the wrapper's grant fails at start-up with the hint.
    const denied = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "-P=proxy",
        `--config=${ROOT}deno.json`,
        `${ROOT}dist/socket-proxyd.js`,
        `--listen=${listen}`,
        target,
      ],
      stdin: "null",
      stdout: "null",
    }).output();
    equal(denied.code, 1);
    match(new TextDecoder().decode(denied.stderr), /--allow-read=/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the wrapper grants the paths of --listen=/PATH and --target=NAME=/PATH too", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-wrapper-" });
  try {
    const served = await runWrapper([
      `--listen=${dir}/front.sock`,
      "--exit-idle-time=100ms",
      "--target",
      `name=${dir}/named.sock`,
      `--target=other=${dir}/other.sock`,
      `${dir}/default.sock`,
    ]);
    equal(served.code, 0, served.stderr);
    ok(served.stderr.includes(`${dir}/front.sock to ${dir}/default.sock`), served.stderr);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the wrapper grants --config=FILE for reading, and a Unix socket TARGET= in it", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-wrapper-" });
  try {
    const listen = `@socket-proxyd-wrapper-test-${crypto.randomUUID()}`;
    for (const value of [`${dir}/backend.sock`, `"${dir}/backend.sock"`, `'${dir}/backend.sock'`]) {
      const conf = `${dir}/-run-spx\\x2da.sock.conf`;
      Deno.writeTextFileSync(conf, `# a comment\n TARGET = ${value}  \nOPTIONS=-c 7\n`);
      const served = await runWrapper([
        `--listen=${listen}`,
        "--exit-idle-time=100ms",
        `--config=${conf}`,
      ]);
      equal(served.code, 0, served.stderr);
      ok(served.stderr.includes(`to ${dir}/backend.sock; at most 7 connections`), served.stderr);
    }
    // Without the wrapper's grant, the program cannot read the file, and says so.
    const conf = `${dir}/x.conf`;
    Deno.writeTextFileSync(conf, "TARGET=127.0.0.1:1\n");
    const denied = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "-P=proxy",
        `--config=${ROOT}deno.json`,
        `${ROOT}dist/socket-proxyd.js`,
        `--config=${conf}`,
      ],
      stdin: "null",
      stdout: "null",
    }).output();
    equal(denied.code, 1);
    match(
      new TextDecoder().decode(denied.stderr),
      new RegExp(
        `Cannot read the configuration file ${conf}: Deno's permissions do not allow reading it; add --allow-read=${conf}\\.`,
      ),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the proxy names itself socket-proxyd (the kernel's name for it), not deno", async () => {
  const proxy = new Process("sh", [
    WRAPPER,
    `--listen=@socket-proxyd-name-test-${crypto.randomUUID()}`,
    "127.0.0.1:1",
  ], {
    SOCKET_PROXYD_DENO: Deno.execPath(),
    SOCKET_PROXYD_PROGRAM: `${ROOT}dist/socket-proxyd.js`,
  });
  try {
    await proxy.waitForLog(/^Forwarding /m);
    // The wrapper exec'd Deno, which kept the pid: what ps and `systemctl status` show.
    const pid = proxy.child.pid;
    equal(Deno.readTextFileSync(`/proc/${pid}/comm`).trim(), PROCESS_NAME);
    equal(Deno.readLinkSync(`/proc/${pid}/exe`), Deno.realPathSync(Deno.execPath()));
  } finally {
    await proxy.stop();
  }
});

Deno.test("the wrapper refuses a path that Deno's flags cannot express", async () => {
  const { code, stderr } = await runWrapper(["--listen=@x", "/run/a,b.sock"]);
  equal(code, 1);
  match(stderr, /comma/);
});

Deno.test("the example services run the wrapper's install path, Type=notify, with no cache", () => {
  for (const service of SERVICES) {
    const unit = Deno.readTextFileSync(new URL(`systemd/${service}`, root));
    const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? "";
    ok(execStart.startsWith("/usr/local/bin/socket-proxyd "), service);
    for (const option of execStart.matchAll(/--[a-z-]+/g)) ok(HELP.includes(option[0]), option[0]);
    match(unit, /^Type=notify$/m);
    ok(!/^(CacheDirectory|Environment)=/m.test(unit), "the wrapper needs neither");
    match(unit, /^# Not MemoryDenyWriteExecute=yes: V8/m);
  }
});

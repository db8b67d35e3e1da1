/**
 * Loaded with `--preload` into the real proxy, under its deployment permission set, by
 * tests/permissions_test.ts: tries what the proxy must never be able to do and reports each
 * attempt on stderr as "probe NAME: denied (ErrorName)" or "probe NAME: ALLOWED". Every attempt
 * is harmless if it were allowed. Then the proxy starts as usual.
 * @module
 */

function report(name: string, outcome: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`probe ${name}: ${outcome}\n`));
}

async function attempt(name: string, action: () => unknown): Promise<void> {
  try {
    await action();
    report(name, "ALLOWED");
  } catch (e) {
    report(name, `denied (${e instanceof Error ? e.name : String(e)})`);
  }
}

await attempt("read /etc/shadow", () => Deno.readTextFileSync("/etc/shadow"));
await attempt("read /etc/passwd", () => Deno.readTextFileSync("/etc/passwd"));
await attempt("read /proc/self/environ", () => Deno.readFileSync("/proc/self/environ"));
await attempt(
  "read its own deno.json",
  () => Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)),
);
await attempt("list /", () => [...Deno.readDirSync("/")]);
await attempt("fetch file:///etc/shadow", () => fetch("file:///etc/shadow").then((r) => r.text()));
await attempt("create a temporary file", () => Deno.makeTempFileSync());
await attempt(
  "write /tmp",
  () => Deno.writeTextFileSync(`/tmp/socket-proxyd-probe-${Deno.pid}`, "x"),
);
await attempt("run a program", () => new Deno.Command("true").outputSync());
await attempt("send a signal", () => Deno.kill(2147483646, "SIGCONT"));
await attempt("load a native library", () => Deno.dlopen("libc.so.6", {}));
await attempt(
  "load another native library",
  () => Deno.dlopen("/lib/x86_64-linux-gnu/libm.so.6", {}),
);
await attempt("read HOME", () => Deno.env.get("HOME"));
await attempt("read PATH", () => Deno.env.get("PATH"));
await attempt("read the whole environment", () => Deno.env.toObject());
await attempt("read the host name", () => Deno.hostname());
await attempt("list network interfaces", () => Deno.networkInterfaces());
await attempt("reach another Unix socket", async () => {
  (await Deno.connect({ transport: "unix", path: "/run/socket-proxyd-probe.sock" })).close();
});
report(
  "granted",
  ["net", "env:LISTEN_FDS", "env:NOTIFY_SOCKET", "env:WATCHDOG_USEC"].map((what) => {
    const [name, variable] = what.split(":");
    const descriptor =
      (variable === undefined ? { name } : { name, variable }) as Deno.PermissionDescriptor;
    return `${what}=${Deno.permissions.querySync(descriptor).state}`;
  }).join(" "),
);

// FFI on libc is granted for datagram sockets, and given up before serving: right after, libc
// cannot be opened either. (Deno runs the proxy only once this module and its timers are done,
// so the attempt follows the proxy's own call.)
const LIBC = "/lib/x86_64-linux-gnu/libc.so.6";
const revoke = Deno.permissions.revoke.bind(Deno.permissions);
Deno.permissions.revoke = async (descriptor: Deno.PermissionDescriptor) => {
  const status = await revoke(descriptor);
  if (descriptor.name === "ffi") {
    await attempt("load libc once serving", () => Deno.dlopen(LIBC, {}));
  }
  return status;
};

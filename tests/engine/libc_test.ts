import { deepEqual, equal, notEqual, ok } from "node:assert/strict";
import {
  grantedLibcs,
  LIBC_CANDIDATES,
  libcCandidates,
  libcFlag,
  openFirst,
  openLibc,
} from "../../src/engine/libc.ts";
import { recv } from "./libc_udp.ts";

const HERE = LIBC_CANDIDATES.find((path) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
})!;

Deno.test("grantedLibcs: the candidates that are granted and not known to be missing, in order", () => {
  const missing = "/nonexistent/lib/libc.so.6";
  const granted = (paths: string[]) => (path: string) => paths.includes(path);
  deepEqual(grantedLibcs(granted([HERE]), [missing, HERE]), [HERE]);
  // A missing file is passed over even when granted (it can be read here: -A).
  deepEqual(grantedLibcs(granted([missing, HERE]), [missing, HERE]), [HERE]);
  deepEqual(grantedLibcs(granted([missing]), [missing, HERE]), []);
  // Nothing granted: none (the caller names the flag).
  deepEqual(grantedLibcs(() => false), []);
  // The bare soname is taken as it is (dlopen searches for it).
  deepEqual(grantedLibcs(granted(["libc.so.6"]), [missing, "libc.so.6"]), ["libc.so.6"]);
  // Order is the candidates' order, not the grant's.
  deepEqual(grantedLibcs(() => true, [HERE, "libc.so.6"]), [HERE, "libc.so.6"]);
  deepEqual(grantedLibcs(() => true, ["libc.so.6", HERE]), ["libc.so.6", HERE]);
  deepEqual(grantedLibcs(() => true, []), []);
});

Deno.test("grantedLibcs asks about every candidate path of this machine, in order", () => {
  const asked: string[] = [];
  grantedLibcs((path) => (asked.push(path), false));
  equal(asked.join(" "), libcCandidates().join(" "));
});

Deno.test("libcCandidates: another architecture's multiarch directory is never a candidate", () => {
  // The deployment set grants both multiarch paths: on aarch64 the x86_64 one must not be tried
  // first (it was, and dlopen failed: datagram sockets were refused there).
  const arm = libcCandidates("aarch64");
  ok(!arm.some((path) => path.includes("x86_64")), arm.join(" "));
  equal(arm[0], "/lib/aarch64-linux-gnu/libc.so.6");
  const x86 = libcCandidates("x86_64");
  ok(!x86.some((path) => path.includes("aarch64")), x86.join(" "));
  equal(x86[0], "/lib/x86_64-linux-gnu/libc.so.6");
  // The paths without a triplet stay, in order, for both.
  const plain = LIBC_CANDIDATES.filter((path) => !path.includes("-linux-gnu/"));
  deepEqual(arm.filter((path) => !path.includes("-linux-gnu/")), plain);
  deepEqual(x86.filter((path) => !path.includes("-linux-gnu/")), plain);
  ok(plain.includes("/lib64/libc.so.6") && plain.includes("libc.so.6"));
});

Deno.test("openFirst: a granted path that does not open is passed over for the next", () => {
  const tried: string[] = [];
  const open = (path: string) => {
    tried.push(path);
    if (path !== "/b") throw new Error(`${path}: cannot open shared object file`);
    return "library";
  };
  deepEqual(openFirst(["/a", "/b", "/c"], open), { opened: "library", path: "/b" });
  deepEqual(tried, ["/a", "/b"]);
  // None opens: the first failure is what is reported.
  deepEqual(openFirst(["/a", "/c"], open), {
    kind: "failed",
    path: "/a",
    message: "/a: cannot open shared object file",
  });
  deepEqual(openFirst([], open), { kind: "no-permission" });
});

Deno.test("libcFlag names this machine's libc", () => {
  equal(libcFlag(), `--allow-ffi=${HERE}`);
});

Deno.test("openLibc under -A opens this machine's libc, errno after a failing call", () => {
  const libc = openLibc();
  ok("call" in libc, JSON.stringify(libc));
  equal(libc.path, HERE);
  equal(libc.call.close(-1), -1);
  equal(libc.errno(), 9, "EBADF");
  // errno follows the last failure: EAFNOSUPPORT (97) for an unknown address family.
  equal(libc.call.socket(12345, 2, 0), -1);
  equal(libc.errno(), 97);
  // A socket of our own: created, then closed once (the second close fails again with EBADF).
  const fd = libc.call.socket(2, 2 | 0x80000, 0);
  ok(fd >= 3, `socket() gave ${fd}`);
  equal(libc.call.close(fd), 0);
  equal(libc.call.close(fd), -1);
  equal(libc.errno(), 9);
});

Deno.test("addressOf: distinct buffers, distinct stable addresses; offsets count", () => {
  const libc = openLibc();
  ok("call" in libc);
  const a = new Uint8Array(64);
  const b = new Uint8Array(64);
  const at = libc.addressOf(a);
  notEqual(at, 0n);
  notEqual(at, libc.addressOf(b));
  equal(libc.addressOf(a), at, "the same buffer, the same address");
  equal(libc.addressOf(a.subarray(8)), at + 8n);
  // A buffer passed to libc is written where JavaScript reads it: a UDP socket sends to itself.
  const received = new Uint8Array(8);
  const fd = libc.call.socket(2, 2 | 0x80000, 0);
  const loopback = new Uint8Array([2, 0, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
  equal(libc.call.bind(fd, loopback, 16), 0);
  const name = new Uint8Array(16);
  const length = new Uint8Array([16, 0, 0, 0]);
  equal(libc.call.getsockname(fd, name, length), 0);
  equal(libc.call.connect(fd, name, 16), 0);
  equal(Number(libc.call.send(fd, new TextEncoder().encode("ping"), 4n, 0)), 4);
  equal(Number(recv(fd, received, 8n, 0)), 4);
  equal(new TextDecoder().decode(received.subarray(0, 4)), "ping");
  libc.call.close(fd);
});

/** Runs `script` in a Deno of its own with `flags`; returns its stdout (stderr must be empty). */
async function runScript(script: string, flags: string[]): Promise<string> {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-libc-" });
  try {
    Deno.writeTextFileSync(`${dir}/script.ts`, script);
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "--no-config", ...flags, `${dir}/script.ts`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    equal(new TextDecoder().decode(output.stderr), "");
    return new TextDecoder().decode(output.stdout);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

const LIBC_MODULE = JSON.stringify(new URL("../../src/engine/libc.ts", import.meta.url).href);

Deno.test("after dropFfi the loaded symbols work, and no library opens (own process)", async () => {
  const script = `
    import { dropFfi, openLibc } from ${LIBC_MODULE};
    const libc = openLibc();
    await dropFfi();
    const closed = libc.call.close(-1);
    const errno = libc.errno();
    let reopened = "opened";
    try { Deno.dlopen(libc.path, { close: { parameters: ["i32"], result: "i32" } }); }
    catch (e) { reopened = e.constructor.name; }
    console.log(JSON.stringify({ closed, errno, reopened,
      state: Deno.permissions.querySync({ name: "ffi" }).state }));
  `;
  const result = JSON.parse(await runScript(script, [`--allow-ffi=${HERE}`, "--allow-read"]));
  equal(result.closed, -1);
  equal(result.errno, 9);
  equal(result.reopened, "NotCapable");
  notEqual(result.state, "granted");
});

Deno.test("openLibc: without the FFI grant, no-permission; a grant on another file, too", async () => {
  const script = `
    import { openLibc } from ${LIBC_MODULE};
    console.log(JSON.stringify(openLibc()));
  `;
  equal((await runScript(script, ["--allow-read"])).trim(), '{"kind":"no-permission"}');
  equal(
    (await runScript(script, ["--allow-read", "--allow-ffi=/nonexistent/libc.so.6"])).trim(),
    '{"kind":"no-permission"}',
  );
  // Without read permission the file cannot be looked at: the grant decides, and dlopen works.
  const opened = JSON.parse(await runScript(script, [`--allow-ffi=${HERE}`]));
  equal(opened.path, HERE);
});

// @ts-check
/**
 * The Deno floor of the benchmark (the contender "deno-floor"): the least that a Deno program,
 * started the way the proxy is deployed, must do to answer a socket-activated client's first
 * byte. The benchmark runs it through the same wrapper (systemd/socket-proxyd, as
 * SOCKET_PROXYD_PROGRAM), so it gets the proxy's flags, permissions and environment; its last
 * argument is the proxy's target, an IPv4 `ADDRESS:PORT`.
 *
 * What it does is what any proxy must do before the first byte, and nothing of ours: start
 * Deno and load one JavaScript module (this one, not the bundle), open libc through FFI (the
 * file the wrapper grants, as the engine opens it), accept the client on fd 3, connect to the
 * backend and copy its first bytes (the greeting of bench/helpers/holder.ts) to the client,
 * all with blocking calls, the cheapest there are. Then it closes both and idles until it is
 * stopped, so that its memory at start-up can be read. The cold start of the proxy minus this
 * one is the cost of our own program; its memory minus this one, the memory of our own.
 *
 * Plain JavaScript, as the bundle is: with the wrapper's DENO_DIR nothing is cached, and
 * TypeScript would be transpiled at every start.
 * @module
 */

const LIBC = [
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib/libc.so.6",
];
const AF_INET = 2;
const SOCK_STREAM = 1;
const LISTEN_FD = 3;

/**
 * @param {string} message
 * @returns {never}
 */
function fail(message) {
  console.error(`floor: ${message}`);
  Deno.exit(1);
}

/** @param {string} target */
function sockaddrIn(target) {
  const m = target.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$/);
  if (!m) fail(`the target must be an IPv4 ADDRESS:PORT, not "${target}"`);
  const address = new Uint8Array(16);
  const view = new DataView(address.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, Number(m[5]), false);
  for (let i = 0; i < 4; i++) address[4 + i] = Number(m[1 + i]);
  return address;
}

const path = LIBC.find((p) =>
  Deno.permissions.querySync({ name: "ffi", path: p }).state === "granted"
);
if (path === undefined) fail(`no FFI grant for any of ${LIBC.join(", ")}`);
const libc = Deno.dlopen(path, {
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
}).symbols;

const backendAddress = sockaddrIn(Deno.args.at(-1) ?? "");
const client = libc.accept4(LISTEN_FD, null, null, 0);
if (client < 0) fail(`accept4 on fd ${LISTEN_FD} failed (is it a listening socket?)`);
const backend = libc.socket(AF_INET, SOCK_STREAM, 0);
if (backend < 0 || libc.connect(backend, backendAddress, backendAddress.length) < 0) {
  fail(`cannot connect to ${Deno.args.at(-1)}`);
}
const buffer = new Uint8Array(4096);
const n = libc.read(backend, buffer, BigInt(buffer.length));
if (n <= 0) fail("the backend closed without a first byte");
if (libc.write(client, buffer, BigInt(n)) !== n) fail("the client did not take the first bytes");
libc.close(backend);
libc.close(client);
setInterval(() => {}, 0x7fffffff);

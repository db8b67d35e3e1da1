/**
 * Test harness: starts the real proxy through the real `systemd-socket-activate`, with the
 * deployment permission set, and real backends on loopback.
 * @module
 */
import { fileURLToPath } from "node:url";
import { TRIM_VARIABLE } from "../../src/service/reclaim.ts";

/** The project root. */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

const permissions = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).permissions.proxy;

/**
 * The deployment permission set (`proxy` in deno.json) as explicit flags, for a Deno that runs
 * the program without our deno.json: the README's line for running from a URL. (No
 * `--unstable-vsock`: Deno before 2.2.10 does not know it; only vsock targets need it.)
 */
export const DEPLOYMENT_FLAGS: string[] = [
  "--no-prompt",
  "--unstable-net",
  "--allow-net",
  `--allow-env=${permissions.env.join(",")}`,
  `--allow-write=${permissions.write.join(",")}`,
  `--allow-ffi=${permissions.ffi.join(",")}`,
];

/**
 * The environment the program is deployed with (the wrapper exports it, the README's line for
 * running from a URL sets it): Deno then trims memory when the program signals itself once idle
 * (src/service/reclaim.ts). {@link DENO_RUN} starts with `env` and these.
 */
export const DEPLOYMENT_ENV: string[] = [`${TRIM_VARIABLE}=1`];

/**
 * A Deno binary to run the program under test with, other than the one running the tests (the
 * CI matrix sets it). The program is then the one-file build `dist/socket-proxyd.js`, run with
 * {@link DEPLOYMENT_FLAGS} and no deno.json, as a user with their own Deno runs it.
 */
export const TEST_DENO: string | undefined = Deno.env.get("SOCKET_PROXYD_TEST_DENO");

/** The entry point under test. */
export const MAIN: string = TEST_DENO === undefined
  ? `${ROOT}main.ts`
  : `${ROOT}dist/socket-proxyd.js`;
/**
 * `deno run` with the deployment permission set and environment, as `deno task start` uses
 * them (`env` execs Deno, so the pid stays the one systemd-socket-activate gave).
 */
export const DENO_RUN: string[] = TEST_DENO === undefined
  ? [
    "env",
    ...DEPLOYMENT_ENV,
    Deno.execPath(),
    "run",
    "-q",
    "-P=proxy",
    `--config=${ROOT}deno.json`,
  ]
  : ["env", ...DEPLOYMENT_ENV, TEST_DENO, "run", "-q", "--no-config", ...DEPLOYMENT_FLAGS];

/** Returns a TCP port that was free a moment ago. */
export function freePort(hostname = "127.0.0.1"): number {
  const listener = Deno.listen({ hostname, port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** A fresh path for a Unix socket in a fresh temporary directory. */
export function tempSocketPath(name = "s.sock"): string {
  return `${Deno.makeTempDirSync({ prefix: "socket-proxyd-test-" })}/${name}`;
}

/** A running process whose stderr is collected as it arrives. */
export class Process {
  readonly child: Deno.ChildProcess;
  #stderr = "";
  #waiters: Array<() => void> = [];
  readonly #drained: Promise<void>;
  readonly stdout: Promise<string>;

  constructor(command: string, args: string[], env: Record<string, string> = {}) {
    const child = new Deno.Command(command, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    this.stdout = new Response(child.stdout).text();
    this.#drained = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        this.#stderr += decoder.decode(chunk, { stream: true });
        for (const wake of this.#waiters.splice(0)) wake();
      }
    })();
  }

  /** Everything written to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Resolves once stderr matches `pattern`; rejects if the process ends first. */
  async waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    this.child.status.then(() => ended = true);
    for (;;) {
      const match = pattern.exec(this.#stderr);
      if (match) return match[0];
      if (ended) throw new Error(`process ended before logging ${pattern}:\n${this.#stderr}`);
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${pattern}:\n${this.#stderr}`);
      }
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** Waits for the exit, with all output read. */
  async exit(): Promise<{ code: number; signal: string | null; stderr: string; stdout: string }> {
    const status = await this.child.status;
    await this.#drained;
    return {
      code: status.code,
      signal: status.signal,
      stderr: this.#stderr,
      stdout: await this.stdout,
    };
  }

  /** Stops the process (if still running) and waits for it. */
  async stop(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.exit();
  }
}

/** Options for {@link startProxy}. */
export interface ProxyStart {
  /** Addresses for `systemd-socket-activate --listen=` (one passed socket each). */
  listen: string[];
  /** Arguments for the proxy. */
  args: string[];
  /** Extra environment for the proxy (passed with `-E`). */
  env?: Record<string, string>;
  /** Names for the passed sockets (`--fdname=`). */
  fdnames?: string[];
  /** Extra arguments for `deno run`, before the script. */
  denoFlags?: string[];
  /** Extra `systemd-socket-activate` options, e.g. ["--datagram"]. */
  activateFlags?: string[];
  /** A command that `exec`s its arguments, run between the activator and the proxy. */
  wrapper?: string[];
  /** Instead of {@link DENO_RUN}: the Deno command line before the script. */
  denoRun?: string[];
}

/**
 * Starts the proxy through `systemd-socket-activate`, which listens at once and execs the proxy
 * on the first connection attempt (so the first connection also measures start-up).
 */
export async function startProxy(start: ProxyStart): Promise<Process> {
  const args = [
    ...start.activateFlags ?? [],
    ...start.listen.map((address) => `--listen=${address}`),
    ...Object.entries(start.env ?? {}).map(([k, v]) => `--setenv=${k}=${v}`),
    ...(start.fdnames ? [`--fdname=${start.fdnames.join(":")}`] : []),
    "--",
    ...start.wrapper ?? [],
    ...start.denoRun ?? DENO_RUN,
    ...start.denoFlags ?? [],
    MAIN,
    ...start.args,
  ];
  const process = new Process("systemd-socket-activate", args);
  for (const _ of start.listen) await process.waitForLog(/Listening on .* as \d+\./);
  return process;
}

/**
 * A {@link ProxyStart.wrapper} that sets JOURNAL_STREAM to what stderr is, as systemd does for a
 * service whose stderr is the journal's stream.
 */
export const AS_JOURNAL_STREAM: string[] = [
  "sh",
  "-c",
  'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"',
  "sh",
];

/** Runs the proxy directly (no sockets passed) and waits for it to exit. */
export function runProxy(args: string[], denoFlags: string[] = []): ReturnType<Process["exit"]> {
  return new Process(DENO_RUN[0], [...DENO_RUN.slice(1), ...denoFlags, MAIN, ...args]).exit();
}

/** Reads until end of stream. */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  return concat(chunks);
}

/** The chunks, one after the other, in one array. */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await conn.write(data.subarray(done));
}

/** Connects, sends `payload`, half-closes, and returns everything that came back. */
export async function roundTrip(
  options: Deno.ConnectOptions | Deno.UnixConnectOptions,
  payload: Uint8Array,
): Promise<Uint8Array> {
  const conn = await Deno.connect(options as Deno.ConnectOptions);
  const [, back] = await Promise.all([
    writeAll(conn, payload).then(() => conn.closeWrite()),
    readAll(conn),
  ]);
  conn.close();
  return back;
}

/** Reads exactly `length` bytes (fails on early end of stream). */
export async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = await conn.read(out.subarray(done));
    if (n === null) throw new Error(`end of stream after ${done} of ${length} bytes`);
    done += n;
  }
  return out;
}

/** Sends one byte and expects it back from an echo backend: the connection is through. */
export async function ping(conn: Deno.Conn, byte: number): Promise<boolean> {
  try {
    await writeAll(conn, new Uint8Array([byte]));
    const buffer = new Uint8Array(1);
    return (await conn.read(buffer)) === 1 && buffer[0] === byte;
  } catch {
    return false;
  }
}

/** Reads once more and expects the stream to end (or be reset) rather than deliver data. */
export async function expectClosed(conn: Deno.Conn): Promise<void> {
  try {
    const n = await conn.read(new Uint8Array(16));
    if (n !== null) throw new Error(`expected the connection to be closed, got ${n} bytes`);
  } catch (e) {
    if (!(e instanceof Deno.errors.ConnectionReset)) throw e;
  }
}

/** Deterministic pseudo-random bytes (xorshift32), so failures are reproducible. */
export function pseudoRandomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** SHA-256 of `data`, as hex. */
export async function sha256(data: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A backend that serves every connection with `handler` until closed. */
export class Backend {
  readonly listener: Deno.Listener;
  readonly connections: Deno.Conn[] = [];
  readonly #handlers: Promise<void>[] = [];
  #accepted = 0;
  #onAccept: Array<() => void> = [];
  readonly #loop: Promise<void>;

  constructor(listener: Deno.Listener, handler: (conn: Deno.Conn) => Promise<void>) {
    this.listener = listener;
    this.#loop = (async () => {
      try {
        for await (const conn of listener) {
          this.#accepted++;
          this.connections.push(conn);
          for (const wake of this.#onAccept.splice(0)) wake();
          this.#handlers.push(
            handler(conn).catch(() => {}).finally(() => {
              try {
                conn.close();
              } catch {
                // Closed by the handler.
              }
            }),
          );
        }
      } catch {
        // Listener closed.
      }
    })();
  }

  /** Number of connections accepted so far. */
  get accepted(): number {
    return this.#accepted;
  }

  /** Resolves once at least `count` connections have been accepted. */
  async waitForAccepted(count: number): Promise<void> {
    while (this.#accepted < count) {
      await new Promise<void>((resolve) => this.#onAccept.push(resolve));
    }
  }

  /** Stops listening and waits for every handler. */
  async close(): Promise<void> {
    this.listener.close();
    await this.#loop;
    await Promise.all(this.#handlers);
  }
}

/** Echoes every byte back, half-closing after the client's end of stream. */
export async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    await writeAll(conn, buffer.subarray(0, n));
  }
  await conn.closeWrite();
}

/** Starts an echo backend on a TCP or Unix listener. */
export function echoBackend(
  options: Deno.ListenOptions | Deno.UnixListenOptions & { transport: "unix" },
): Backend {
  return new Backend(Deno.listen(options as Deno.ListenOptions), echo);
}

/** A test-owned sd_notify receiver: a Unix datagram socket collecting every message. */
export class NotifyReceiver {
  readonly socket: Deno.DatagramConn;
  /** Every datagram so far, parsed as systemd-notify does: newline-separated KEY=VALUE. */
  readonly messages: Array<Record<string, string>> = [];
  /** The same datagrams, as received. */
  readonly raw: string[] = [];
  #waiters: Array<() => void> = [];
  readonly #loop: Promise<void>;

  /** @param path a file path, or "\0name" for the abstract namespace. */
  constructor(readonly path: string) {
    const socket = Deno.listenDatagram({ transport: "unixpacket", path });
    this.socket = socket;
    this.#loop = (async () => {
      try {
        for await (const [data] of socket) {
          const text = new TextDecoder().decode(data);
          this.raw.push(text);
          this.messages.push(
            Object.fromEntries(
              text.split("\n").filter(Boolean).map((line) => {
                const eq = line.indexOf("=");
                return [line.slice(0, eq), line.slice(eq + 1)];
              }),
            ),
          );
          for (const wake of this.#waiters.splice(0)) wake();
        }
      } catch {
        // Closed.
      }
    })();
  }

  /** NOTIFY_SOCKET's value for this receiver. */
  get address(): string {
    return this.path.startsWith("\0") ? `@${this.path.slice(1)}` : this.path;
  }

  /** Resolves with the first message (from `from` on) that satisfies `predicate`. */
  async waitFor(
    predicate: (message: Record<string, string>) => boolean,
    from = 0,
    timeoutMs = 10_000,
  ): Promise<Record<string, string>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.slice(from).find(predicate);
      if (found) return found;
      if (Date.now() > deadline) {
        throw new Error(`no such notification; got ${JSON.stringify(this.raw)}`);
      }
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** Stops receiving. */
  async close(): Promise<void> {
    this.socket.close();
    await this.#loop;
  }
}

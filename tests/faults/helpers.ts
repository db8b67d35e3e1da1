/**
 * Helpers for the fault suite: the real proxy under a file-descriptor limit, its resource use
 * read from /proc, waiting for conditions, and checksummed traffic.
 * @module
 */
import { DENO_RUN, MAIN, Process } from "../integration/harness.ts";

/** What the proxy process uses right now, from /proc/PID. */
export interface Usage {
  /** Open file descriptors. */
  readonly fds: number;
  /** Resident set size in KiB... */
  readonly rssKiB: number;
  /**
   * ...and of it, the anonymous part (heaps, buffers): what the process holds. The rest is file
   * pages, clean and shared: mostly the `deno` binary's code, paged in as it first runs.
   */
  readonly anonKiB: number;
  /** CPU time (user + system) in clock ticks. */
  readonly cpuTicks: number;
}

/** Reads the resource use of process `pid`. */
export function usage(pid: number): Usage {
  const fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  const anonKiB = Number(/^RssAnon:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  // Fields after the command name (which may contain spaces) start with the state (field 3).
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuTicks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return { fds, rssKiB, anonKiB, cpuTicks };
}

/** Clock ticks per second of /proc/PID/stat: 100 on every Linux build that matters here. */
export const CLOCK_TICKS = 100;

/** The soft limit on open files of process `pid`. */
export function fdLimit(pid: number): number {
  const limits = Deno.readTextFileSync(`/proc/${pid}/limits`);
  return Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1]);
}

/**
 * Waits until `condition()` holds, checking every `intervalMs` (for states that raise no event,
 * such as a process's descriptor count), and fails with `what` after `timeoutMs`.
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<number> {
  const started = performance.now();
  for (;;) {
    if (await condition()) return performance.now() - started;
    if (performance.now() - started > timeoutMs) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === "string" ? what : what()}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Races `promise` against a deadline; resolves to `fallback` if the deadline comes first. */
export async function within<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<F>((resolve) => timer = setTimeout(() => resolve(fallback), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Options for {@link startLimitedProxy}. */
export interface LimitedStart {
  /** `systemd-socket-activate --listen=` addresses; empty to run with the proxy's `--listen`. */
  readonly listen: string[];
  /** The proxy's arguments. */
  readonly args: string[];
  /** `ulimit -n` for the proxy: its soft and hard limit on open files (as far as allowed). */
  readonly nofile?: number;
  /** Extra arguments for `deno run`. */
  readonly denoFlags?: string[];
  /** Extra environment for the proxy (`--setenv`, so only with `listen`). */
  readonly env?: Record<string, string>;
}

/** The real proxy, started with a limit on open files. */
export class LimitedProxy {
  constructor(readonly process: Process, readonly pid: number) {}

  /** What the proxy uses now; if it has exited, an error that shows what it logged. */
  usage(): Usage {
    try {
      return usage(this.pid);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new Error(`the proxy (pid ${this.pid}) has exited; it logged:\n${this.stderr}`);
    }
  }

  /** Its limit on open files. */
  fdLimit(): number {
    return fdLimit(this.pid);
  }

  /** Everything it logged so far. */
  get stderr(): string {
    return this.process.stderr;
  }

  /** Whether it is still running. */
  async running(): Promise<boolean> {
    return await within(this.process.child.status.then(() => false), 0, true);
  }

  /** Kills it and waits for it. */
  stop(): Promise<void> {
    return this.process.stop();
  }
}

/**
 * Starts the proxy with the deployment permission set under `ulimit -n`, through
 * `systemd-socket-activate` (whose exec keeps the pid: the shell's pid is the proxy's). With
 * sockets passed, the proxy starts on the first connection: call {@link warmUp} before reading
 * its usage.
 */
export async function startLimitedProxy(start: LimitedStart): Promise<LimitedProxy> {
  const deno = [...DENO_RUN, ...start.denoFlags ?? [], MAIN, ...start.args];
  const command = start.listen.length > 0
    ? [
      "systemd-socket-activate",
      ...start.listen.map((a) => `--listen=${a}`),
      ...Object.entries(start.env ?? {}).map(([k, v]) => `--setenv=${k}=${v}`),
      "--",
      ...deno,
    ]
    : deno;
  // Try to raise the hard limit too (root with CAP_SYS_RESOURCE); else the hard limit caps it.
  const limit = start.nofile === undefined
    ? ""
    : `ulimit -n ${start.nofile} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; `;
  const process = new Process("sh", ["-c", `${limit}exec "$@"`, "sh", ...command]);
  for (const _ of start.listen) await process.waitForLog(/Listening on .* as \d+\./);
  return new LimitedProxy(process, process.child.pid);
}

/** Waits until the proxy started by a connection is serving (its start-up line is logged). */
export async function warmUp(proxy: LimitedProxy): Promise<void> {
  await proxy.process.waitForLog(/^Forwarding .*$/m);
}

/** FNV-1a over `data`, continuing from `hash`: a cheap running checksum for bulk streams. */
export function fnv1a(data: Uint8Array, hash = 0x811c9dc5): number {
  let h = hash;
  for (let i = 0; i < data.length; i++) {
    h ^= data[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Reads everything until end of stream (or a reset, reported as `reset`), counting bytes. */
export async function drain(
  conn: Deno.Conn,
  onChunk: (chunk: Uint8Array) => void = () => {},
  buffer = new Uint8Array(64 * 1024),
): Promise<{ bytes: number; reset: boolean }> {
  let bytes = 0;
  try {
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return { bytes, reset: false };
      onChunk(buffer.subarray(0, n));
      bytes += n;
    }
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BadResource) {
      return { bytes, reset: true };
    }
    throw e;
  }
}

/** Closes `conn`, ignoring that it may be closed already. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** The port of a TCP listener or connection address. */
export function portOf(addr: Deno.Addr): number {
  return (addr as Deno.NetAddr).port;
}

/** Formats bytes for the suite's summary lines. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Prints one figure the README's Reliability section quotes. */
export function report(line: string): void {
  console.log(`[reliability] ${line}`);
}

/** A backend in its own process (tests/faults/backend.ts). */
export class BackendProcess {
  private constructor(readonly child: Deno.ChildProcess, readonly port: number) {}

  /** Starts one in `mode` ("echo" or "stream") on `port` (0: any) and waits for its port. */
  static async start(mode: "echo" | "stream", port = 0): Promise<BackendProcess> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./backend.ts", import.meta.url).pathname, mode, String(port)],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!/port \d+\n/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`backend exited before listening: ${text}`);
      text += value;
    }
    await reader.cancel(); // Nothing more comes; closes our end of the pipe.
    return new BackendProcess(child, Number(/port (\d+)/.exec(text)![1]));
  }

  /** "127.0.0.1:PORT", the proxy's target. */
  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Kills it with `signal` and waits for it to be gone. */
  async kill(signal: Deno.Signal = "SIGKILL"): Promise<void> {
    try {
      this.child.kill(signal);
    } catch {
      // Already gone.
    }
    await this.child.status;
  }
}

/**
 * The proxy's usage once its descriptor count has stopped moving (connections end
 * asynchronously after their clients have gone): the same count on two reads `stableMs` apart.
 */
export async function settledUsage(proxy: LimitedProxy, stableMs = 200): Promise<Usage> {
  let last = -1;
  await waitUntil(
    () => {
      const now = proxy.usage().fds;
      const settled = now === last;
      last = now;
      return settled;
    },
    "the proxy's descriptor count to settle",
    10_000,
    stableMs,
  );
  return proxy.usage();
}

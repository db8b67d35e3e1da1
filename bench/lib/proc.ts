/**
 * Child processes of the benchmark: every process started here is tracked, so that
 * {@link stopAll} can end them all, on success, failure or a signal.
 * @module
 */

const LOG_LIMIT = 64 * 1024;

/** A long-running child whose output is collected. */
export interface Proc {
  /** A short name for messages. */
  readonly name: string;
  readonly pid: number;
  /** Resolves when the process has exited. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Whether the process has exited. */
  readonly exited: boolean;
  /** The last 64 KiB of stdout and stderr, interleaved. */
  log(): string;
  /** Resolves with the first match of `pattern` in the output; rejects on timeout or exit. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Writes to stdin (spawned with `stdin: true` only). */
  write(text: string): Promise<void>;
  /** Closes stdin (spawned with `stdin: true` only). */
  closeStdin(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<Proc>();

/** Options of {@link spawn}. */
export interface SpawnOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Pipe stdin so that {@link Proc.write} and {@link Proc.closeStdin} work. */
  stdin?: boolean;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Starts `cmd` with `args`, collecting its output; the process is tracked until it exits. */
export function spawn(name: string, cmd: string, args: string[], options: SpawnOptions = {}): Proc {
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  let exited = false;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  const decoder = () => new TextDecoder();
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const d = decoder();
    try {
      for await (const chunk of stream) {
        text += d.decode(chunk, { stream: true });
        if (text.length > LOG_LIMIT) text = text.slice(-LOG_LIMIT);
        wake();
      }
    } catch {
      // The pipe broke: nothing more to collect.
    }
  };
  drain(child.stdout);
  drain(child.stderr);
  const writer = options.stdin ? child.stdin.getWriter() : null;
  const status = child.status.then((s) => {
    exited = true;
    live.delete(proc);
    wake();
    return s;
  });
  let stopping: Promise<void> | null = null;
  const proc: Proc = {
    name,
    pid: child.pid,
    status,
    get exited() {
      return exited;
    },
    log: () => text,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = text.match(pattern);
          if (m) {
            done();
            resolve(m);
          } else if (exited) {
            done();
            reject(new Error(`${name} exited before printing ${pattern}:\n${text.slice(-2000)}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${name} did not print ${pattern} in ${timeoutMs} ms:\n${text}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    async write(data) {
      if (writer === null) throw new Error(`${name}: stdin not piped`);
      await writer.write(new TextEncoder().encode(data));
    },
    async closeStdin() {
      if (writer === null) return;
      try {
        await writer.close();
      } catch {
        // Already gone.
      }
    },
    stop(graceMs = 2000) {
      stopping ??= (async () => {
        if (exited) return;
        try {
          child.kill("SIGTERM");
        } catch {
          // Exited meanwhile.
        }
        const gone = await Promise.race([
          status.then(() => true),
          delay(graceMs).then(() => false),
        ]);
        if (!gone) {
          try {
            child.kill("SIGKILL");
          } catch {
            // Exited meanwhile.
          }
          await status;
        }
        await proc.closeStdin();
      })();
      return stopping;
    },
  };
  live.add(proc);
  return proc;
}

/** What a finished one-shot command printed. */
export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

const running = new Set<AbortController>();

/** Runs `cmd` to completion, killing it after `timeoutMs`; it is tracked while it runs. */
export async function run(
  cmd: string,
  args: string[],
  timeoutMs: number,
  options: SpawnOptions = {},
): Promise<RunResult> {
  const abort = new AbortController();
  running.add(abort);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    abort.abort();
  }, timeoutMs);
  try {
    const out = await new Deno.Command(cmd, {
      args,
      cwd: options.cwd,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: abort.signal,
    }).output();
    const decoder = new TextDecoder();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
    running.delete(abort);
  }
}

/** Stops every process still running; safe to call more than once. */
export async function stopAll(): Promise<void> {
  for (const abort of running) abort.abort();
  await Promise.all([...live].map((p) => p.stop(1000)));
}

/** The number of tracked processes still running. */
export function liveCount(): number {
  return live.size + running.size;
}

/**
 * The processes under test and the backends behind them: nginx, iperf3 servers, the holder
 * helper, and the contenders: a direct connection, our proxy as deployed (the wrapper
 * systemd/socket-proxyd over the bundle), a baseline bundle under the same wrapper, the Deno
 * floor (the wrapper over bench/helpers/floor.js) and the reference, each proxy started by
 * systemd-socket-activate.
 * @module
 */
import { type Proc, run, spawn, type SpawnOptions } from "./proc.ts";
import { exeOf, freePort, isRoot, waitPort } from "./system.ts";

/** The fd limit asked for every process that holds many connections. */
export const NOFILE = 65536;

/**
 * Runs `cmd` under `sh` with the fd limit raised to {@link NOFILE} (soft and hard, as root) or
 * to the hard limit; `exec` keeps the pid, so the returned process is `cmd` itself.
 */
export function withNofile(
  name: string,
  cmd: string,
  args: string[],
  options: SpawnOptions = {},
): Proc {
  const raise = isRoot()
    ? `ulimit -Hn ${NOFILE} 2>/dev/null; ulimit -Sn ${NOFILE} 2>/dev/null`
    : "ulimit -Sn $(ulimit -Hn) 2>/dev/null";
  return spawn(name, "sh", ["-c", `${raise}; exec "$@"`, "sh", cmd, ...args], options);
}

/** A backend: something listening on 127.0.0.1:port. */
export interface Backend {
  readonly port: number;
  readonly proc: Proc;
}

/** Starts nginx as one foreground process answering every request with a short text. */
export async function startNginx(dir: string): Promise<Backend> {
  const port = freePort();
  const conf = `daemon off;
master_process off;
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
worker_rlimit_nofile ${NOFILE};
events { worker_connections 32768; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { default_type text/plain; return 200 "hello, world\\n"; }
  }
}
`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, conf);
  const proc = withNofile("nginx", "nginx", [
    "-p",
    dir,
    "-c",
    `${dir}/nginx.conf`,
    "-e",
    `${dir}/error.log`,
  ]);
  try {
    await waitPort(port, 10_000);
  } catch (e) {
    await proc.stop();
    throw new Error(`nginx did not start: ${(e as Error).message}\n${proc.log()}`);
  }
  return { port, proc };
}

/** Starts an iperf3 server. */
export async function startIperfServer(): Promise<Backend> {
  const port = freePort();
  const proc = spawn("iperf3 -s", "iperf3", [
    "-s",
    "-B",
    "127.0.0.1",
    "-p",
    String(port),
    "--forceflush",
  ]);
  await proc.waitFor(/Server listening on/, 10_000);
  return { port, proc };
}

/** The helper script (bench/helpers/holder.ts). */
export const HOLDER = new URL("../helpers/holder.ts", import.meta.url).pathname;

/** Starts the greet-and-echo server of the holder helper. */
export async function startHolderServer(): Promise<Backend> {
  const proc = withNofile("holder serve", Deno.execPath(), [
    "run",
    "--allow-net=127.0.0.1",
    HOLDER,
    "serve",
  ]);
  const m = await proc.waitFor(/ready (\d+)/, 20_000);
  return { port: Number(m[1]), proc };
}

/** Who is measured. */
export type ContenderId = "direct" | "ours" | "baseline" | "deno-floor" | "reference";

/** All contenders, in report order. */
export const CONTENDERS: readonly ContenderId[] = [
  "direct",
  "ours",
  "baseline",
  "deno-floor",
  "reference",
];

/** Where things are. */
export interface Paths {
  /** The project directory. */
  readonly root: string;
  /** The deployment wrapper, systemd/socket-proxyd. */
  readonly wrapper: string;
  /** The bundle "ours" runs (dist/socket-proxyd.js, built by `deno task bundle`). */
  readonly bundle: string;
  /** The bundle "baseline" runs, when one was given. */
  readonly baseline: string | null;
  /** The program "deno-floor" runs (bench/helpers/floor.js). */
  readonly floor: string;
  /** systemd-socket-proxyd. */
  readonly reference: string;
}

/** The Deno floor's program: answers one client's first byte, then idles (see the file). */
export const FLOOR = new URL("../helpers/floor.js", import.meta.url).pathname;

/** Builds the bundle as `deno task bundle` does, in `root`; returns its absolute path. */
export async function buildBundle(root: string): Promise<string> {
  const r = await run(Deno.execPath(), ["task", "-q", "bundle"], 300_000, { cwd: root });
  if (r.code !== 0) throw new Error(`deno task bundle failed (exit ${r.code}):\n${r.stderr}`);
  return `${root}/dist/socket-proxyd.js`;
}

/**
 * The command line that runs `program` as the proxy is deployed: the wrapper, told by
 * systemd-socket-activate's `-E` where Deno and the program are (it sets the rest of the
 * environment and the permission flags itself). Arguments for the program follow.
 */
export function wrapped(wrapper: string, program: string): string[] {
  return [
    "-E",
    `SOCKET_PROXYD_DENO=${Deno.execPath()}`,
    "-E",
    `SOCKET_PROXYD_PROGRAM=${program}`,
    wrapper,
  ];
}

/** Runs the wrapper over `program` with `--version`: throws, with its output, unless it starts. */
export async function checkProgram(wrapper: string, program: string): Promise<string> {
  const r = await run(wrapper, ["--version"], 60_000, {
    env: { SOCKET_PROXYD_DENO: Deno.execPath(), SOCKET_PROXYD_PROGRAM: program },
  });
  if (r.code !== 0) {
    throw new Error(`${program} does not start under ${wrapper} (exit ${r.code}):\n${r.stderr}`);
  }
  return r.stdout.trim();
}

/** One running contender: connect to `port`; `pid` is the proxy process (none for direct). */
export interface Instance {
  readonly contender: ContenderId;
  readonly port: number;
  readonly pid: number | null;
  /** Waits until the proxy's own executable runs in `pid` (after a first connection). */
  execed(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Options of {@link startContender}. */
export interface ContenderOptions {
  /** `--connections-max`; the default (256) when absent. */
  readonly connectionsMax?: number;
}

/** The program line after systemd-socket-activate's options, and the executable it ends in. */
function programOf(
  contender: Exclude<ContenderId, "direct">,
  paths: Paths,
  args: string[],
): { argv: string[]; exe: string } {
  if (contender === "reference") {
    return { argv: [paths.reference, ...args], exe: Deno.realPathSync(paths.reference) };
  }
  const program = contender === "ours"
    ? paths.bundle
    : contender === "deno-floor"
    ? paths.floor
    : paths.baseline;
  if (program === null) throw new Error("no baseline bundle was given (--baseline=PATH)");
  return {
    argv: [...wrapped(paths.wrapper, program), ...args],
    exe: Deno.realPathSync(Deno.execPath()),
  };
}

/**
 * Starts a contender in front of 127.0.0.1:`backendPort`: for the proxies a fresh
 * systemd-socket-activate on a new port, which execs the proxy on the first connection (ours,
 * the baseline and the floor through the wrapper, which execs Deno in turn).
 */
export async function startContender(
  contender: ContenderId,
  backendPort: number,
  paths: Paths,
  options: ContenderOptions = {},
): Promise<Instance> {
  if (contender === "direct") {
    return {
      contender,
      port: backendPort,
      pid: null,
      execed: () => Promise.resolve(),
      stop: () => Promise.resolve(),
    };
  }
  const port = freePort();
  const limit = options.connectionsMax === undefined ? [] : [`-c`, String(options.connectionsMax)];
  const { argv, exe } = programOf(contender, paths, [...limit, `127.0.0.1:${backendPort}`]);
  const proc = withNofile(
    contender,
    "systemd-socket-activate",
    ["-l", `127.0.0.1:${port}`, ...argv],
    { cwd: paths.root },
  );
  await proc.waitFor(/Listening on/, 10_000);
  return {
    contender,
    port,
    pid: proc.pid,
    async execed(timeoutMs = 10_000) {
      const deadline = performance.now() + timeoutMs;
      while (performance.now() < deadline) {
        const now = exeOf(proc.pid);
        if (now === null) throw new Error(`${contender} exited:\n${proc.log()}`);
        if (now === exe) return;
        await new Promise((r) => setTimeout(r, 10));
      }
      throw new Error(`${contender} was not started within ${timeoutMs} ms:\n${proc.log()}`);
    },
    stop: () => proc.stop(),
  };
}

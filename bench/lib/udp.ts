/**
 * The UDP workloads (issue 16): DNS queries per second and latency with dnsperf against dnsmasq,
 * and idle memory per open session, for a direct query (the ceiling), our proxy (the deployment
 * wrapper over the bundle, started by `systemd-socket-activate --datagram`), nginx's stream
 * module (one worker) and socat (one process per client). Every process started here is
 * stopped by its pid before a workload returns or throws.
 * @module
 */
import { run, spawn } from "./proc.ts";
import { type Backend, withNofile, wrapped } from "./services.ts";
import { cpuSeconds, exeOf, rssKiB, type Tool } from "./system.ts";
import type { UdpAllSamples } from "./udpreport.ts";

/** Who is measured over UDP. */
export type UdpContender = "direct" | "ours" | "nginx" | "socat";

/** All UDP contenders, in report order. */
export const UDP_CONTENDERS: readonly UdpContender[] = ["direct", "ours", "nginx", "socat"];

/** The dnsperf client counts measured. */
export const CLIENT_COUNTS = [4, 64] as const;

/** nginx's stream module as Debian's libnginx-mod-stream installs it. */
export const NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so";

/** What the UDP workloads need from the system. */
export const UDP_TOOLS: readonly Tool[] = [
  { bin: "dnsperf", pkg: "dnsperf" },
  { bin: "/usr/sbin/dnsmasq", pkg: "dnsmasq-base" },
  { bin: "nginx", pkg: "nginx-light" },
  { bin: NGINX_STREAM_MODULE, pkg: "libnginx-mod-stream", file: true },
  { bin: "socat", pkg: "socat" },
];

/** The name every query asks for (dnsmasq answers it from its configuration). */
export const QUERY_NAME = "www.bench.test";

/** Samples by metric id (see udpreport.ts). */
export type UdpSamples = Record<string, number[]>;

/** What the UDP workloads share. */
export interface UdpContext {
  /** The deployment wrapper, systemd/socket-proxyd. */
  readonly wrapper: string;
  /** The bundle the wrapper runs. */
  readonly bundle: string;
  /** A temporary directory of ours. */
  readonly tmp: string;
  /** dnsmasq on 127.0.0.1. */
  readonly dnsPort: number;
  /** Seconds per measured dnsperf run, and of warm-up before it. */
  readonly durationS: number;
  readonly warmupS: number;
  /** Sessions opened for the idle memory workload. */
  readonly sessions: number;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A UDP port on 127.0.0.1 that was free a moment ago. */
export function freeUdpPort(): number {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (socket.addr as Deno.NetAddr).port;
  socket.close();
  return port;
}

/** A port on 127.0.0.1 free for UDP and for TCP a moment ago (dnsmasq listens on both). */
function freeDnsPort(): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = freeUdpPort();
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // Taken for TCP: try another.
    }
  }
  throw new Error("no port free for both UDP and TCP on 127.0.0.1");
}

/** The first of `count` consecutive UDP ports that were all free a moment ago (dnsperf -x). */
function freePortRun(count: number): number {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 10_000);
    const held: Deno.DatagramConn[] = [];
    try {
      for (let i = 0; i < count; i++) {
        held.push(Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: base + i }));
      }
      return base;
    } catch {
      // Taken: try another run.
    } finally {
      for (const socket of held) socket.close();
    }
  }
  throw new Error(`no ${count} consecutive free UDP ports between 20000 and 30000`);
}

/** A DNS query for {@link QUERY_NAME} (type A, recursion desired) with message id `id`. */
export function dnsQuery(id: number): Uint8Array {
  const labels = QUERY_NAME.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  return new Uint8Array([
    id >> 8,
    id & 0xff,
    1,
    0,
    0,
    1,
    0,
    0,
    0,
    0,
    0,
    0,
    ...labels,
    0,
    0,
    1,
    0,
    1,
  ]);
}

/** Sends one query from `socket` to 127.0.0.1:`port`; true once its answer came, in `tries`. */
async function ask(socket: Deno.DatagramConn, port: number, tries: number, timeoutMs: number) {
  const addr: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port };
  const answer = socket.receive();
  for (let i = 0; i < tries; i++) {
    await socket.send(dnsQuery(i + 1) as Uint8Array<ArrayBuffer>, addr);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
    const got = await Promise.race([answer, late]);
    clearTimeout(timer);
    if (got !== null) return true;
  }
  answer.catch(() => {}); // Fails when the socket closes.
  return false;
}

/** Sends queries from a fresh socket until one is answered through `port` (or throws). */
async function probe(port: number, what: string, timeoutMs = 10_000): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    if (!(await ask(socket, port, Math.ceil(timeoutMs / 200), 200))) {
      throw new Error(`${what} answered no DNS query on 127.0.0.1:${port} in ${timeoutMs} ms`);
    }
  } finally {
    socket.close();
  }
}

/** Starts dnsmasq answering {@link QUERY_NAME} from its configuration, on 127.0.0.1 only. */
export async function startDnsmasq(dir: string): Promise<Backend> {
  const port = freeDnsPort();
  const proc = spawn("dnsmasq", "/usr/sbin/dnsmasq", [
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--bind-interfaces",
    "--listen-address=127.0.0.1",
    `--port=${port}`,
    `--address=/bench.test/192.0.2.1`,
    `--pid-file=${dir}/dnsmasq.pid`,
    "--user=root",
    "--group=root",
    "--dns-forward-max=10000",
  ]);
  try {
    await probe(port, "dnsmasq");
  } catch (e) {
    await proc.stop();
    throw new Error(`${(e as Error).message}\n${proc.log()}`);
  }
  return { port, proc };
}

/** The process ids of `pid` and all its descendants (socat forks one per client). */
function tree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      const text = Deno.readTextFileSync(`/proc/${out[i]}/task/${out[i]}/children`).trim();
      if (text) out.push(...text.split(" ").map(Number));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

function pssKiB(pid: number): number {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
    return Number(text.match(/^Pss:\s+(\d+) kB/m)?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function treeCpuSeconds(pid: number): number {
  let sum = 0;
  for (const p of tree(pid)) {
    try {
      sum += cpuSeconds(p);
    } catch {
      // Gone meanwhile.
    }
  }
  return sum;
}

/** One running UDP contender: query `port`; `pid` is the proxy process (none for direct). */
interface UdpInstance {
  readonly port: number;
  readonly pid: number | null;
  stop(): Promise<void>;
}

function nginxConfig(dir: string, port: number, dnsPort: number, sessions: number): string {
  return `load_module ${NGINX_STREAM_MODULE};
daemon off;
master_process off;
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
worker_rlimit_nofile 65536;
events { worker_connections ${2 * sessions + 256}; }
stream {
  server {
    listen 127.0.0.1:${port} udp;
    proxy_pass 127.0.0.1:${dnsPort};
    proxy_timeout 10m;
  }
}
`;
}

async function startUdp(
  contender: UdpContender,
  ctx: UdpContext,
  sessions: number,
): Promise<UdpInstance> {
  if (contender === "direct") {
    return { port: ctx.dnsPort, pid: null, stop: () => Promise.resolve() };
  }
  const port = freeUdpPort();
  const target = `127.0.0.1:${ctx.dnsPort}`;
  let proc;
  if (contender === "ours") {
    proc = withNofile("ours (udp)", "systemd-socket-activate", [
      "--datagram",
      `--listen=127.0.0.1:${port}`,
      ...wrapped(ctx.wrapper, ctx.bundle),
      `--connections-max=${sessions + 64}`,
      "--idle-timeout=10min",
      target,
    ]);
    await proc.waitFor(/Listening on/, 10_000);
  } else if (contender === "nginx") {
    const dir = await Deno.makeTempDir({ dir: ctx.tmp, prefix: "nginx-udp-" });
    await Deno.writeTextFile(`${dir}/nginx.conf`, nginxConfig(dir, port, ctx.dnsPort, sessions));
    proc = withNofile("nginx (udp)", "nginx", [
      "-p",
      dir,
      "-c",
      `${dir}/nginx.conf`,
      "-e",
      `${dir}/error.log`,
    ]);
  } else {
    proc = withNofile("socat", "socat", [
      `UDP4-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr`,
      `UDP4:${target}`,
    ]);
  }
  const pid = proc.pid;
  const stop = async () => {
    const all = tree(pid); // socat's children are not ended by ending their parent.
    await proc.stop();
    for (const child of all.slice(1)) {
      try {
        Deno.kill(child, "SIGKILL");
      } catch {
        // Gone already.
      }
    }
  };
  try {
    await probe(port, contender);
    for (let i = 0; contender === "ours" && exeOf(pid)?.endsWith("socket-activate"); i++) {
      if (i > 500) throw new Error("the proxy did not replace systemd-socket-activate in 5 s");
      await delay(10);
    }
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${proc.log()}`);
  }
  return { port, pid, stop };
}

/** What one dnsperf run reported. */
export interface DnsperfResult {
  readonly sent: number;
  readonly completed: number;
  readonly lost: number;
  readonly qps: number;
  /** Sorted latencies of the answered queries, in seconds (from `-v`). */
  readonly latencies: readonly number[];
}

/** Parses dnsperf's (2.x) statistics and, with `-v`, its line per answered query. */
export function parseDnsperf(text: string): DnsperfResult {
  const field = (label: string) => {
    const m = text.match(new RegExp(`^\\s*${label}:\\s+([\\d.]+)`, "m"));
    if (!m) throw new Error(`dnsperf printed no "${label}":\n${text.slice(-2000)}`);
    return Number(m[1]);
  };
  const latencies: number[] = [];
  for (const m of text.matchAll(/^> \S+ .* (\d+\.\d+)$/gm)) latencies.push(Number(m[1]));
  latencies.sort((a, b) => a - b);
  return {
    sent: field("Queries sent"),
    completed: field("Queries completed"),
    lost: field("Queries lost"),
    qps: field("Queries per second"),
    latencies,
  };
}

/** The `q`-quantile (0..1) of sorted `xs` (nearest rank; NaN when empty). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  return xs[Math.min(xs.length - 1, Math.max(0, Math.ceil(q * xs.length) - 1))];
}

async function dnsperf(
  ctx: UdpContext,
  port: number,
  clients: number,
  base: number,
  seconds: number,
  verbose: boolean,
): Promise<DnsperfResult> {
  const args = [
    ...["-s", "127.0.0.1", "-p", String(port), "-a", "127.0.0.1", "-x", String(base)],
    ...["-d", `${ctx.tmp}/queries.txt`, "-c", String(clients), "-l", String(seconds)],
    ...["-q", "100", "-t", "1", ...(verbose ? ["-v"] : [])],
  ];
  const r = await run("dnsperf", args, (seconds + 30) * 1e3);
  if (r.code !== 0) throw new Error(`dnsperf failed (exit ${r.code}):\n${r.stderr.slice(-2000)}`);
  return parseDnsperf(r.stdout);
}

/** Writes dnsperf's query file into `ctx.tmp`; call once before {@link dns}. */
export async function writeQueryFile(tmp: string): Promise<void> {
  await Deno.writeTextFile(`${tmp}/queries.txt`, `${QUERY_NAME} A\n`);
}

/** Warm-up runs at most, while the last one lost queries (socat forks only as clients come). */
const MAX_WARMUPS = 5;

/**
 * DNS queries per second, p50/p99 latency, lost queries and the proxy's CPU per query, with 4
 * and with 64 dnsperf clients, in one fresh instance. Each measured run follows warm-up runs
 * from the same client ports, until one loses no query (at most {@link MAX_WARMUPS}): sessions
 * are open, and socat has forked for every client, before it starts.
 */
export async function dns(contender: UdpContender, ctx: UdpContext): Promise<UdpSamples> {
  const inst = await startUdp(contender, ctx, Math.max(...CLIENT_COUNTS));
  try {
    const samples: UdpSamples = {};
    for (const clients of CLIENT_COUNTS) {
      const base = freePortRun(clients);
      let warm = 1;
      while ((await dnsperf(ctx, inst.port, clients, base, ctx.warmupS, false)).lost > 0) {
        if (++warm > MAX_WARMUPS) break;
      }
      samples[`udp_warmups_c${clients}`] = [warm];
      const cpu0 = inst.pid === null ? 0 : treeCpuSeconds(inst.pid);
      const r = await dnsperf(ctx, inst.port, clients, base, ctx.durationS, true);
      const cpu1 = inst.pid === null ? 0 : treeCpuSeconds(inst.pid);
      samples[`udp_qps_c${clients}`] = [r.qps];
      samples[`udp_p50_c${clients}_ms`] = [quantile(r.latencies, 0.5) * 1e3];
      samples[`udp_p99_c${clients}_ms`] = [quantile(r.latencies, 0.99) * 1e3];
      samples[`udp_lost_c${clients}_pct`] = [r.sent > 0 ? (r.lost / r.sent) * 100 : 0];
      samples[`udp_lost_c${clients}`] = [r.lost];
      samples[`udp_load1_c${clients}`] = [Deno.loadavg()[0]];
      if (inst.pid !== null && r.completed > 0) {
        samples[`udp_cpu_us_per_query_c${clients}`] = [((cpu1 - cpu0) / r.completed) * 1e6];
      }
    }
    return samples;
  } finally {
    await inst.stop();
  }
}

/** The proxy's memory in KiB: VmRSS of its process, or for socat PSS summed over its processes. */
function memoryKiB(contender: UdpContender, pid: number): number {
  if (contender !== "socat") return rssKiB(pid);
  return tree(pid).reduce((sum, p) => sum + pssKiB(p), 0);
}

/**
 * New sessions opened at once. socat loses the datagrams that arrive while it forks for a new
 * client (they go to the socket it hands to the child), so its clients come one at a time.
 */
const BATCH: Record<UdpContender, number> = { direct: 100, ours: 100, nginx: 100, socat: 1 };

/**
 * How long the sessions are left idle before memory is read: an idle proxy's memory, after ours
 * has given back what it freed (a reclaim after a second without datagrams, `src/service/reclaim.ts`,
 * seen by a sweep that runs once a second with `--idle-timeout=10min`).
 */
const IDLE_SETTLE_MS = 3000;

/** socat's sessions are processes: this many are enough to tell its cost per session. */
const SOCAT_SESSIONS_MAX = 500;

/** Opens `count` sessions through `port`, `batch` at a time; resolves with how many answered. */
async function openSessions(
  port: number,
  count: number,
  batch: number,
  sockets: Deno.DatagramConn[],
): Promise<number> {
  let answered = 0;
  for (let i = 0; i < count; i += batch) {
    const some = Array.from(
      { length: Math.min(batch, count - i) },
      () => Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 }),
    );
    sockets.push(...some);
    const got = await Promise.all(some.map((s) => ask(s, port, 5, 500)));
    answered += got.filter(Boolean).length;
  }
  return answered;
}

/**
 * Idle memory per open session: client sockets each send one query through the proxy and get
 * its answer (`ctx.sessions` of them; socat {@link SOCAT_SESSIONS_MAX}); the growth of the
 * proxy's memory while they are open, per session. Also the marginal cost, from half of them
 * to all, which leaves out one-time growth (V8's heap steps, the first session's buffers).
 * Each reading comes after {@link IDLE_SETTLE_MS} without a datagram.
 */
export async function idle(contender: UdpContender, ctx: UdpContext): Promise<UdpSamples> {
  if (contender === "direct") return {};
  const wanted = contender === "socat" ? Math.min(ctx.sessions, SOCAT_SESSIONS_MAX) : ctx.sessions;
  const half = Math.floor(wanted / 2);
  const inst = await startUdp(contender, ctx, wanted);
  const pid = inst.pid!;
  const sockets: Deno.DatagramConn[] = [];
  try {
    await delay(500);
    const before = memoryKiB(contender, pid);
    const first = await openSessions(inst.port, half, BATCH[contender], sockets);
    await delay(IDLE_SETTLE_MS);
    const middle = memoryKiB(contender, pid);
    const second = await openSessions(inst.port, wanted - half, BATCH[contender], sockets);
    const answered = first + second;
    if (answered < wanted * 0.95) {
      throw new Error(`only ${answered} of ${wanted} sessions were answered`);
    }
    await delay(IDLE_SETTLE_MS);
    const during = memoryKiB(contender, pid);
    return {
      udp_idle_kib_per_session: [(during - before) / answered],
      udp_idle_marginal_kib_per_session: [second > 0 ? (during - middle) / second : NaN],
      udp_idle_sessions: [answered],
      udp_idle_base_mib: [before / 1024],
      udp_idle_total_mib: [during / 1024],
    };
  } finally {
    for (const s of sockets) s.close();
    await inst.stop();
  }
}

/** Prepares the UDP workloads in `tmp`: dnsperf's query file and dnsmasq. */
export async function prepareUdp(
  wrapper: string,
  bundle: string,
  tmp: string,
  settings: Pick<UdpContext, "durationS" | "warmupS" | "sessions">,
): Promise<UdpContext & { readonly dnsmasq: Backend }> {
  await writeQueryFile(tmp);
  const dnsmasq = await startDnsmasq(tmp);
  return { wrapper, bundle, tmp, dnsPort: dnsmasq.port, ...settings, dnsmasq };
}

/** The versions of the UDP tools, recorded with the results. */
export async function udpToolVersions(): Promise<Record<string, string>> {
  const first = async (cmd: string, args: string[]) => {
    try {
      const r = await run(cmd, args, 10_000);
      return (r.stdout + r.stderr).trim().split("\n").find((l) => /\d/.test(l)) ?? "";
    } catch {
      return "missing";
    }
  };
  return {
    dnsperf: await first("dnsperf", ["-h"]).then((l) => l || "dnsperf"),
    dnsmasq: await first("/usr/sbin/dnsmasq", ["--version"]),
    nginx: await first("nginx", ["-v"]),
    socat: await first("socat", ["-V"]),
  };
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/**
 * One round of the UDP workloads: DNS with every contender, then idle sessions, in an order
 * that rotates with `round`; samples are added to `samples`, failures reported to `fail`.
 */
export async function udpRound(
  ctx: UdpContext,
  round: number,
  samples: UdpAllSamples,
  log: (message: string) => void,
  fail: (contender: UdpContender, error: string) => void,
): Promise<void> {
  const workloads = [["udp-dns", dns], ["udp-idle", idle]] as const;
  for (const [name, measure] of workloads) {
    for (const contender of rotate(UDP_CONTENDERS, round - 1)) {
      if (name === "udp-idle" && contender === "direct") continue;
      const t0 = performance.now();
      try {
        const got = await measure(contender, ctx);
        for (const [id, xs] of Object.entries(got)) {
          ((samples[id] ??= {})[contender] ??= []).push(...xs);
        }
        const shown = Object.entries(got).filter(([id]) => !/p50|lost_c\d+$|load|warmups/.test(id))
          .map(([id, xs]) => `${id.replace(/^udp_/, "")}=${xs[0].toPrecision(4)}`);
        log(
          `round ${round} ${name} ${contender}: ${shown.join(" ")} ` +
            `(load ${Deno.loadavg()[0].toFixed(2)}; ${
              ((performance.now() - t0) / 1e3).toFixed(1)
            } s)`,
        );
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        fail(contender, error);
        log(`round ${round} ${name} ${contender}: FAILED ${error}`);
      }
    }
  }
}

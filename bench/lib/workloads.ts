/**
 * The workloads. Each measures one contender in a fresh instance and returns samples by metric
 * id (see report.ts); every process it starts is stopped before it returns or throws.
 * @module
 */
import { run } from "./proc.ts";
import {
  type ContenderId,
  HOLDER,
  type Instance,
  type Paths,
  startContender,
  startIperfServer,
  withNofile,
} from "./services.ts";
import { cpuSeconds, fdCount, fdLimit, type Rollup, rollupKiB } from "./system.ts";

/** Samples by metric id. */
export type Samples = Record<string, number[]>;

/** How long and how hard. */
export interface Settings {
  /** Seconds per measured iperf3 or wrk run. */
  readonly durationS: number;
  /** Seconds of wrk warm-up before each measured run. */
  readonly warmupS: number;
  /** wrk connections. */
  readonly httpConnections: number;
  /** Idle connections held for the memory workload. */
  readonly idleConnections: number;
  /** Cold starts per contender and round. */
  readonly coldSamples: number;
}

/** What the workloads share. */
export interface Context {
  readonly paths: Paths;
  readonly settings: Settings;
  /** nginx on 127.0.0.1. */
  readonly nginxPort: number;
  /** The greet-and-echo holder server on 127.0.0.1. */
  readonly holderPort: number;
  /** A temporary directory (holds the wrk script). */
  readonly tmp: string;
}

const GIB = 2 ** 30;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function withInstance<T>(
  contender: ContenderId,
  backendPort: number,
  ctx: Context,
  body: (inst: Instance) => Promise<T>,
  connectionsMax?: number,
): Promise<T> {
  const inst = await startContender(contender, backendPort, ctx.paths, { connectionsMax });
  try {
    return await body(inst);
  } finally {
    await inst.stop();
  }
}

interface IperfResult {
  bitsPerSecond: number;
  bytes: number;
}

async function iperf(port: number, args: string[], timeoutS: number): Promise<IperfResult> {
  // The server may still be closing the previous test ("the server is busy"): retry a few times.
  for (let attempt = 1;; attempt++) {
    try {
      return await iperfOnce(port, args, timeoutS);
    } catch (e) {
      if (attempt >= 5 || !/busy/.test(String(e))) throw e;
      await delay(500 * attempt);
    }
  }
}

async function iperfOnce(port: number, args: string[], timeoutS: number): Promise<IperfResult> {
  const r = await run(
    "iperf3",
    ["-c", "127.0.0.1", "-p", String(port), "-J", ...args],
    timeoutS * 1e3,
  );
  let json;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    throw new Error(`iperf3 ${args.join(" ")}: no JSON (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  }
  if (json.error) throw new Error(`iperf3 ${args.join(" ")}: ${json.error}`);
  const sum = json.end?.sum_received;
  if (!sum) throw new Error(`iperf3 ${args.join(" ")}: no end.sum_received`);
  return { bitsPerSecond: sum.bits_per_second, bytes: sum.bytes };
}

/**
 * (1) Bulk throughput, one stream each way (iperf3, then iperf3 -R), and (6) the proxy's CPU
 * seconds per GiB forwarded over those two transfers.
 */
export async function bulk(contender: ContenderId, ctx: Context): Promise<Samples> {
  const server = await startIperfServer();
  try {
    return await withInstance(contender, server.port, ctx, async (inst) => {
      const t = ctx.settings.durationS;
      await iperf(inst.port, ["-n", "128M"], 30); // Starts the proxy, warms its JIT.
      await inst.execed();
      const cpu0 = inst.pid === null ? 0 : cpuSeconds(inst.pid);
      const fwd = await iperf(inst.port, ["-t", String(t)], t + 30);
      const cpu1 = inst.pid === null ? 0 : cpuSeconds(inst.pid);
      const rev = await iperf(inst.port, ["-t", String(t), "-R"], t + 30);
      const cpu2 = inst.pid === null ? 0 : cpuSeconds(inst.pid);
      const samples: Samples = {
        bulk_fwd_gbps: [fwd.bitsPerSecond / 1e9],
        bulk_rev_gbps: [rev.bitsPerSecond / 1e9],
      };
      if (inst.pid !== null) {
        samples.cpu_s_per_gib = [(cpu2 - cpu0) / ((fwd.bytes + rev.bytes) / GIB)];
        samples.cpu_fwd_s_per_gib = [(cpu1 - cpu0) / (fwd.bytes / GIB)];
        samples.cpu_rev_s_per_gib = [(cpu2 - cpu1) / (rev.bytes / GIB)];
      }
      return samples;
    });
  } finally {
    await server.proc.stop();
  }
}

const WRK_SCRIPT = `done = function(s, lat, req)
  local e = s.errors
  io.write(string.format('BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\\n',
    s.requests, s.duration, e.connect, e.read, e.write, e.status, e.timeout,
    lat:percentile(50), lat:percentile(90), lat:percentile(99), lat.max))
end
`;

/** Writes the wrk reporting script into `dir`; call once before {@link http}. */
export async function writeWrkScript(dir: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/report.lua`, WRK_SCRIPT);
}

interface WrkResult {
  requests: number;
  duration_us: number;
  connect: number;
  read: number;
  write: number;
  status: number;
  timeout: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

async function wrk(
  ctx: Context,
  port: number,
  close: boolean,
  seconds: number,
): Promise<WrkResult> {
  const args = [
    "-t1",
    `-c${ctx.settings.httpConnections}`,
    `-d${seconds}s`,
    "--latency",
    "--timeout",
    "5s",
    "-s",
    `${ctx.tmp}/report.lua`,
    ...(close ? ["-H", "Connection: close"] : []),
    `http://127.0.0.1:${port}/`,
  ];
  const r = await run("wrk", args, (seconds + 30) * 1e3);
  const m = r.stdout.match(/BENCH_JSON (\{.*\})/);
  if (!m) throw new Error(`wrk failed (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  return JSON.parse(m[1]);
}

/**
 * (2) New connections per second (`close`: every request on a new connection) or (3) keep-alive
 * requests per second, with p50/p99 latency, through the contender to nginx.
 */
export function http(contender: ContenderId, ctx: Context, close: boolean): Promise<Samples> {
  const prefix = close ? "connrate" : "keepalive";
  return withInstance(contender, ctx.nginxPort, ctx, async (inst) => {
    await wrk(ctx, inst.port, close, ctx.settings.warmupS);
    await inst.execed();
    const cpu0 = inst.pid === null ? 0 : cpuSeconds(inst.pid);
    const w = await wrk(ctx, inst.port, close, ctx.settings.durationS);
    const cpu1 = inst.pid === null ? 0 : cpuSeconds(inst.pid);
    const errors = w.connect + w.read + w.write + w.status + w.timeout;
    const samples: Samples = {
      [`${prefix}_rps`]: [w.requests / (w.duration_us / 1e6)],
      [`${prefix}_p50_ms`]: [w.p50 / 1e3],
      [`${prefix}_p99_ms`]: [w.p99 / 1e3],
      [`${prefix}_errors`]: [errors],
    };
    if (inst.pid !== null) samples[`${prefix}_cpu_us_per_req`] = [(cpu1 - cpu0) / w.requests * 1e6];
    return samples;
  });
}

async function greeted(port: number, timeoutMs: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    const n = await conn.read(new Uint8Array(16));
    if (n === null) throw new Error(`127.0.0.1:${port} closed without a greeting`);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed by the timer.
    }
  }
}

function holdClient(port: number, count: number) {
  return withNofile("holder hold", Deno.execPath(), [
    "run",
    "--allow-net=127.0.0.1",
    HOLDER,
    "hold",
    String(port),
    String(count),
  ], { stdin: true });
}

interface Held {
  held: number;
  failed: number;
  error: string;
  ms: number;
}

/** Opens `count` connections through `port`; `body` runs while they are held. */
async function holding<T>(port: number, count: number, body: (held: Held) => Promise<T>) {
  const client = holdClient(port, count);
  try {
    const m = await client.waitFor(/(\{"held".*\})/, 180_000);
    return await body(JSON.parse(m[1]) as Held);
  } finally {
    await client.closeStdin();
    await Promise.race([client.status, delay(10_000)]);
    await client.stop();
  }
}

const PROBE = 100;
const FD_MARGIN = 64;

/** When memory is read after the load (the last held connection closed by the client). */
export const AFTER_S = 5;

/** A second, later reading after the load, kept in the JSON (issue 18 watched 30 s). */
export const SETTLE_S = 30;

const MIB = 1024;

/** The proxy's memory at start-up (read after one proxied connection, half a second idle). */
function startupSamples(r: Rollup): Samples {
  return {
    idle_base_mib: [r.rss / MIB],
    idle_base_anon_mib: [r.anonymous / MIB],
    idle_base_private_mib: [r.private / MIB],
  };
}

/** Descriptors the proxy opens per held connection, measured with {@link PROBE} of them. */
async function fdsPerConnection(port: number, pid: number, fds0: number): Promise<number> {
  const perConn = await holding(port, PROBE, (h) => {
    if (h.held < PROBE) throw new Error(`probe held only ${h.held} (${h.error})`);
    return Promise.resolve((fdCount(pid) - fds0) / PROBE);
  });
  for (let i = 0; i < 100 && fdCount(pid) > fds0; i++) await delay(20);
  return perConn;
}

/**
 * Memory {@link AFTER_S} and {@link SETTLE_S} seconds after `loadEnd` (a performance.now()),
 * against start-up's `base`. The anonymous growth tells the memory the proxy holds from the
 * file pages of the `deno` binary that serving touched (its code run for the first time under
 * load, clean and shared, the first the kernel drops).
 */
async function afterLoadSamples(
  pid: number,
  fds0: number,
  base: { rss: number; anonymous: number },
  loadEnd: number,
): Promise<Samples> {
  const until = (s: number) => delay(Math.max(0, loadEnd + s * 1000 - performance.now()));
  for (let i = 0; i < 250 && fdCount(pid) > fds0; i++) await delay(20);
  await until(AFTER_S);
  const after5 = rollupKiB(pid);
  await until(SETTLE_S);
  const after = rollupKiB(pid).rss;
  return {
    idle_after5_mib: [after5.rss / MIB],
    idle_after5_anon_mib: [after5.anonymous / MIB],
    idle_after5_growth_mib: [(after5.rss - base.rss) / MIB],
    idle_after5_anon_growth_mib: [(after5.anonymous - base.anonymous) / MIB],
    idle_after_mib: [after / MIB],
    idle_after_growth_mib: [(after - base.rss) / MIB],
  };
}

/**
 * (4) Memory: the proxy's RSS, anonymous and private memory at start-up; its RSS while holding
 * `idleConnections` idle proxied connections (each has carried the backend's greeting), as KiB
 * per connection; and {@link AFTER_S} and {@link SETTLE_S} seconds after the client closed
 * them, with how far that is above start-up. The Deno floor gives its start-up memory only.
 *
 * A probe of 100 connections first measures the proxy's file descriptors per connection; when
 * its fd limit cannot take `idleConnections` (unprivileged containers cannot raise the hard
 * limit), the count is lowered to what fits and reported as `idle_connections_held`.
 */
export function memory(contender: ContenderId, ctx: Context): Promise<Samples> {
  const wanted = ctx.settings.idleConnections;
  return withInstance(contender, ctx.holderPort, ctx, async (inst): Promise<Samples> => {
    const pid = inst.pid;
    if (pid === null) return {};
    await greeted(inst.port, 10_000);
    await inst.execed();
    await delay(500);
    const base = rollupKiB(pid);
    const startup = startupSamples(base);
    if (contender === "deno-floor") return startup;
    const fds0 = fdCount(pid);
    const perConn = await fdsPerConnection(inst.port, pid, fds0);
    // Whole descriptors: 2 for a socket pair, 6 with a pipe pair per connection (the reference).
    const fits = Math.floor((fdLimit(pid) - fds0 - FD_MARGIN) / Math.max(1, Math.round(perConn)));
    const n = Math.min(wanted, fits);
    const held = await holding(inst.port, n, async (h) => {
      if (h.held < n) throw new Error(`${contender}: held only ${h.held} of ${n} (${h.error})`);
      await delay(1000);
      return { count: h.held, during: rollupKiB(pid).rss };
    });
    const after = await afterLoadSamples(pid, fds0, base, performance.now());
    return {
      ...startup,
      idle_kib_per_conn: [(held.during - base.rss) / held.count],
      idle_total_mib: [held.during / MIB],
      idle_connections_held: [held.count],
      idle_fds_per_conn: [perConn],
      ...after,
    };
  }, wanted + 64);
}

/**
 * (5) Cold start: from connect() on a fresh socket whose proxy is not running yet to the first
 * byte of the backend's greeting; `coldSamples` fresh instances. The Deno floor copies that
 * greeting too, with the fewest calls there are (bench/helpers/floor.js).
 */
export async function coldStart(contender: ContenderId, ctx: Context): Promise<Samples> {
  const ms: number[] = [];
  for (let i = 0; i < ctx.settings.coldSamples; i++) {
    const sample = await withInstance(contender, ctx.holderPort, ctx, async (inst) => {
      const buffer = new Uint8Array(16);
      const t0 = performance.now();
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: inst.port });
      const timer = setTimeout(() => conn.close(), 10_000);
      try {
        const n = await conn.read(buffer);
        const t1 = performance.now();
        if (n === null) throw new Error(`${contender}: closed before the first byte`);
        return t1 - t0;
      } finally {
        clearTimeout(timer);
        try {
          conn.close();
        } catch {
          // Closed by the timer.
        }
      }
    });
    ms.push(sample);
    await delay(100);
  }
  return { coldstart_ms: ms };
}

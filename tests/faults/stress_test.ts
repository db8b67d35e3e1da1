/**
 * Stress: thousands of connections with random behaviours through the real program, planned
 * from one seed (printed; SOCKET_PROXYD_STRESS_SEED replays it), with a varying number at once.
 *
 * Two proxies, each started through `systemd-socket-activate` with `--proxy-protocol=v2` (so
 * the test's backends know which client each connection is for, see stress_backend.ts):
 * - the main one: IPv4 and IPv6 (::1) clients to TCP backends, IPv4 clients to a Unix-socket
 *   backend (`--target=NAME=`). Its connections: duplex transfers, either side half-closing
 *   first, nothing either way, megabytes each way, a slow reader with a stall, a reset (RST)
 *   mid-transfer by either side. See stress_plan.ts.
 * - the late one, `--connect-timeout=1s` to a TCP and a Unix-socket backend that are down: in
 *   episodes, clients connect and leave (reset, or FIN and close); then the backends start, up
 *   to 1.2 s later, so that some of the proxy's connects complete after the client is gone and
 *   some give up.
 *
 * Checked: the SHA-256 of the bytes each way of every connection that is meant to complete
 * (client's sent against backend's received and back); after a reset, what did arrive is a
 * prefix of what was sent, and the other side is closed (20 s stands for never; how soon is
 * reported); each proxy's descriptors back to where they were; no crash; SIGTERM stops each
 * with exit 0 and a stop line that counts every connection.
 *
 * SOCKET_PROXYD_STRESS_CONNECTIONS sets the size (CI: 5,000; by hand, `deno task stress`: 100,000).
 */
import { deepEqual, equal, notDeepEqual, ok } from "node:assert/strict";
import type net from "node:net";
import {
  freePort,
  NotifyReceiver,
  pseudoRandomBytes,
  startProxy,
  tempSocketPath,
} from "../integration/harness.ts";
import { mib, usage, waitUntil } from "./helpers.ts";
import { Registry, StressBackend } from "./stress_backend.ts";
import {
  connection,
  HOSTS,
  lateLane,
  mainLane,
  statusShows,
  Tally,
  watchdog,
  type Watched,
  type World,
} from "./stress_lanes.ts";
import {
  BEHAVIOURS,
  BLOCK_SIZE,
  type ConnectionPlan,
  planConnections,
  planEpisodes,
  planPhases,
  type Route,
} from "./stress_plan.ts";

/** A whole number from the environment variable `name`, below `limit`; `fallback` if unset. */
function setting(name: string, fallback: number, limit: number): number {
  const text = Deno.env.get(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0 || value >= limit) {
    throw new Error(`${name}=${text}: expected a whole number from 0 to ${limit - 1}`);
  }
  return value;
}

const CONNECTIONS = setting("SOCKET_PROXYD_STRESS_CONNECTIONS", 5_000, 10_000_000);
const SEED = setting(
  "SOCKET_PROXYD_STRESS_SEED",
  crypto.getRandomValues(new Uint32Array(1))[0],
  2 ** 32,
);
/** The most connections at once in the main lane (phases pick 1 to this, log-uniformly). */
const MAX_CONCURRENCY = 64;
/** Kinds of failure listed in the assertion message, at most. */
const SHOWN = 10;

/** A small duplex connection on `route`: warm-ups, which start the proxy and take each path. */
function warmPlan(id: number, route: Route): ConnectionPlan {
  const side = {
    offset: 0,
    length: 1024,
    maxChunk: 1024,
    afterPeerEnd: false,
    slow: null,
    resetAfter: null,
    leaveAfterMs: 0,
    seed: 1,
  };
  return { id, behaviour: "duplex", route, client: side, backend: { ...side, offset: 4096 } };
}

/**
 * Starts a proxy with `--proxy-protocol=v2` and a STATUS= receiver, allowed to connect to the
 * Unix socket at `unixPath`.
 */
async function startWatched(
  name: string,
  listen: string[],
  fdnames: string[],
  args: string[],
  unixPath: string,
): Promise<Watched> {
  const notify = new NotifyReceiver(`\0socket-proxyd-stress-${crypto.randomUUID()}`);
  const process = await startProxy({
    listen,
    fdnames,
    args: ["--proxy-protocol=v2", "--connections-max=4096", ...args],
    env: { NOTIFY_SOCKET: notify.address },
    denoFlags: [`--allow-read=${unixPath}`, `--allow-write=${unixPath}`],
  });
  return { name, process, notify, baseFds: 0, baseRssKiB: 0, peakRssKiB: 0, connections: 0 };
}

/** Warm-up connections, one per route; then the proxy's descriptors and RSS at rest. */
async function warmUp(world: World, proxy: Watched, routes: Route[], registry: Registry) {
  for (const [i, route] of routes.entries()) {
    proxy.connections++;
    await connection(world, warmPlan(-1 - i, route), registry);
  }
  await statusShows(proxy, proxy.connections, 0);
  const pid = proxy.process.child.pid;
  let last = -1;
  await waitUntil(() => last === (last = usage(pid).fds), "descriptors to settle", 10_000, 200);
  const now = usage(pid);
  proxy.baseFds = now.fds;
  proxy.baseRssKiB = proxy.peakRssKiB = now.rssKiB;
}

/** How a proxy ended: its descriptors once every connection closed, and what went wrong. */
interface Ending {
  readonly fds: number;
  readonly problems: string[];
}

/**
 * Waits for the proxy to hold no connection and its descriptors to be back; then SIGTERM: it
 * must still run, exit 0, and count every connection in its stop line.
 */
async function stop(proxy: Watched, connectsMayFail: boolean): Promise<Ending> {
  const problems: string[] = [];
  const pid = proxy.process.child.pid;
  await statusShows(proxy, proxy.connections, 0).catch((e) => problems.push(String(e)));
  await waitUntil(() => usage(pid).fds === proxy.baseFds, "", 30_000, 100).catch(() => {
    problems.push(`${proxy.name}: ${usage(pid).fds} descriptors, ${proxy.baseFds} at the start`);
  });
  const fds = usage(pid).fds;
  proxy.process.child.kill("SIGTERM");
  const { code, stderr } = await proxy.process.exit();
  const expect = (okay: boolean, what: string) => okay || problems.push(`${proxy.name}: ${what}`);
  expect(code === 0, `exit status ${code} after SIGTERM`);
  // Every connection is counted once: served, or failed to reach the target.
  const stopped =
    /Stopped: (\d+) connection\(s\) served, none cut off(?:, (\d+) failed to reach the target)?/
      .exec(stderr);
  const taken = stopped === null ? -1 : Number(stopped[1]) + Number(stopped[2] ?? 0);
  expect(taken === proxy.connections, `no "Stopped: … served" line for ${proxy.connections}`);
  expect(/stopping: no longer accepting; 0 connection\(s\) open/.test(stderr), "connections open");
  expect(!/refusing|\d+ refused/.test(stderr), "refused a client");
  expect(!/panicked|Uncaught|RUST_BACKTRACE/.test(stderr), "crashed");
  expect(connectsMayFail || !stderr.includes("Failed to connect"), "failed to connect");
  // Every client is a TCP one: a line about it names its address.
  const unnamed = /Failed to connect to \S+ for (?!127\.0\.0\.1:\d)\S+/.exec(stderr);
  expect(unnamed === null, `a log line names a TCP client wrongly: "${unnamed?.[0]}"`);
  const tail = stderr.trimEnd().split("\n").slice(-30).join("\n");
  if (problems.length > 0) problems.push(`${proxy.name}'s stderr (its end):\n${tail}`);
  return { fds, problems };
}

function percentile(values: number[], p: number): string {
  if (values.length === 0) return "-";
  const sorted = [...values].sort((a, b) => a - b);
  return `${sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))].toFixed(0)}`;
}

function summary(world: World, endings: Ending[], seconds: number, lanes: number[]): string {
  const t = world.tally;
  const counts = (map: Map<string, number>) => [...map].map(([k, n]) => `${k} ${n}`).join(", ");
  const ms = (values: number[]) =>
    `p50 ${percentile(values, 0.5)} / p99 ${percentile(values, 0.99)} / max ` +
    `${percentile(values, 1)} ms`;
  const rss = (p: Watched) =>
    `${(p.baseRssKiB / 1024).toFixed(1)} -> ${(p.peakRssKiB / 1024).toFixed(1)} MiB peak`;
  return `seed ${SEED}: ${CONNECTIONS} connections in ${seconds.toFixed(1)} s ` +
    `(main lane ${lanes[0].toFixed(1)} s, late lane ${lanes[1].toFixed(1)} s) ` +
    `(${counts(t.byBehaviour)}; via ${counts(t.byRoute)}); ` +
    `checked ${mib(t.bytesUp)} client to backend, ${mib(t.bytesDown)} back; ` +
    `${t.mismatches.length} mismatches, ${t.failures.length} other failures; ` +
    `resets: other side closed ${ms(t.resetCloseMs)}; ` +
    `early-gone: backend reached ${t.reached}, not reached ${t.notReached}, ` +
    `backend side closed ${ms(t.earlyCloseMs)}; ` +
    `fds main ${world.main.baseFds} -> ${endings[0].fds}, late ${world.lateProxy.baseFds} -> ` +
    `${endings[1].fds}; RSS main ${rss(world.main)}, late ${rss(world.lateProxy)}; ` +
    `stop lines: ${world.main.connections} and ${world.lateProxy.connections} served`;
}

/** Samples both proxies' RSS for the peak, and tells progress on long runs. */
function sampler(world: World, started: number): () => void {
  let told = 0;
  const timer = setInterval(() => {
    for (const proxy of [world.main, world.lateProxy]) {
      try {
        proxy.peakRssKiB = Math.max(proxy.peakRssKiB, usage(proxy.process.child.pid).rssKiB);
      } catch {
        // Gone: the end checks tell.
      }
    }
    const t = world.tally;
    if (CONNECTIONS < 20_000 || t.done < told + CONNECTIONS / 10) return;
    told = t.done;
    const seconds = ((performance.now() - started) / 1000).toFixed(0);
    console.log(
      `[stress] ${t.done}/${CONNECTIONS} done in ${seconds} s: ${t.mismatches.length} ` +
        `mismatches, ${t.failures.length} other failures`,
    );
  }, 500);
  return () => clearInterval(timer);
}

/** The backends, and both proxies' activators listening (a proxy starts with its first client). */
async function setUp(block: Uint8Array): Promise<{ world: World; backends: StressBackend[] }> {
  const registry = new Registry();
  const lateRegistry = new Registry();
  const tally = new Tally();
  const backend = new StressBackend(registry, block, (f) => tally.backendFailure("main", f));
  const late = new StressBackend(lateRegistry, block, (f) => tally.backendFailure("late", f));
  const portOf = (server: net.Server) => (server.address() as net.AddressInfo).port;
  const tcp4 = portOf(await backend.listen({ host: "127.0.0.1", port: 0 }));
  const tcp6 = portOf(await backend.listen({ host: "::1", port: 0 }));
  const unixPath = tempSocketPath("backend.sock");
  await backend.listen({ path: unixPath });
  const latePort = freePort();
  const latePath = tempSocketPath("late.sock");
  const ports = {
    "v4": freePort(),
    "v6": freePort("::1"),
    "unix": freePort(),
    "late-tcp": freePort(),
    "late-unix": freePort(),
  };
  const main = await startWatched(
    "the main proxy",
    [`127.0.0.1:${ports.v4}`, `[::1]:${ports.v6}`, `127.0.0.1:${ports.unix}`],
    ["v4", "v6", "unix"],
    [`--target=v6=[::1]:${tcp6}`, `--target=unix=${unixPath}`, `127.0.0.1:${tcp4}`],
    unixPath,
  );
  const lateProxy = await startWatched(
    "the late proxy",
    [`127.0.0.1:${ports["late-tcp"]}`, `127.0.0.1:${ports["late-unix"]}`],
    ["tcp", "unix"],
    ["--connect-timeout=1s", `--target=unix=${latePath}`, `127.0.0.1:${latePort}`],
    latePath,
  );
  const world: World = {
    seed: SEED,
    maxConcurrency: MAX_CONCURRENCY,
    block,
    tally,
    ports,
    registry,
    lateRegistry,
    late,
    latePort,
    latePath,
    main,
    lateProxy,
    active: new Set(),
  };
  return { world, backends: [backend, late] };
}

/** Starts both proxies with warm-up connections (the late backends up for them). */
async function warmUpBoth(world: World): Promise<void> {
  await warmUp(world, world.main, ["v4", "v6", "unix"], world.registry);
  const servers = [
    await world.late.listen({ host: "127.0.0.1", port: world.latePort }),
    await world.late.listen({ path: world.latePath }),
  ];
  await warmUp(world, world.lateProxy, ["late-tcp", "late-unix"], world.lateRegistry);
  for (const server of servers) await world.late.unlisten(server);
}

/** Both lanes at once; returns how long each took, in seconds. */
async function runLanes(world: World, plans: readonly ConnectionPlan[]): Promise<number[]> {
  const started = performance.now();
  const took = (lane: Promise<void>) => lane.then(() => (performance.now() - started) / 1000);
  return await Promise.all([
    took(mainLane(world, plans.filter((p) => p.behaviour !== "early-gone"))),
    took(lateLane(world, plans.filter((p) => p.behaviour === "early-gone"))),
  ]);
}

/**
 * The failures grouped by kind (their text without the connection's label, numbers as N): each
 * kind's count and first instance, the most frequent first.
 */
function kinds(failures: readonly string[]): string[] {
  const groups = new Map<string, { count: number; first: string }>();
  for (const failure of failures) {
    const kind = failure.replace(/^#\d+ \S+ via \S+: /, "").replace(/\d+/g, "N");
    const group = groups.get(kind) ?? { count: 0, first: failure };
    group.count++;
    groups.set(kind, group);
  }
  return [...groups.values()].sort((a, b) => b.count - a.count)
    .map(({ count, first }) => `${count} like: ${first}`);
}

/** Everything that went wrong, by kind, for the assertion message. */
function findings(tally: Tally, problems: string[]): string[] {
  const listing = (what: string, items: string[]) =>
    items.length === 0 ? [] : [`${items.length} ${what}:`, ...kinds(items).slice(0, SHOWN)];
  return [
    ...listing("mismatches", tally.mismatches),
    ...listing("other failures", tally.failures),
    ...(problems.length === 0 ? [] : ["problems at the end:", ...problems]),
  ];
}

const REPLAY =
  `SOCKET_PROXYD_STRESS_SEED=${SEED} SOCKET_PROXYD_STRESS_CONNECTIONS=${CONNECTIONS} ` +
  "deno test -A tests/faults/stress_test.ts";

Deno.test(`stress: ${CONNECTIONS} connections with random behaviours, every byte checked`, async () => {
  console.log(`[stress] seed ${SEED} (replay: ${REPLAY})`);
  const started = performance.now();
  const plans = planConnections(SEED, CONNECTIONS);
  const { world, backends } = await setUp(pseudoRandomBytes(BLOCK_SIZE, SEED || 1));
  const stopWatchdog = watchdog(world.active);
  const stopSampler = sampler(world, started);
  try {
    await warmUpBoth(world);
    const lanes = await runLanes(world, plans);
    const endings = [await stop(world.main, false), await stop(world.lateProxy, true)];
    const problems = endings.flatMap((e) => e.problems);
    for (const [name, backend] of [["main", backends[0]], ["late", backends[1]]] as const) {
      if (backend.open > 0) problems.push(`the ${name} backend: ${backend.open} sides open`);
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(`[stress] ${summary(world, endings, seconds, lanes)}`);
    const found = findings(world.tally, problems);
    equal(found.length, 0, `replay: ${REPLAY}\n${found.join("\n")}`);
  } finally {
    stopWatchdog();
    stopSampler();
    for (const proxy of [world.main, world.lateProxy]) {
      await proxy.process.stop();
      await proxy.notify.close();
    }
    for (const backend of backends) await backend.close();
  }
});

Deno.test("stress plan: a seed plans the same run again, with every behaviour and route", () => {
  const plans = planConnections(SEED, 2_000);
  deepEqual(planConnections(SEED, 2_000), plans);
  deepEqual(planPhases(SEED, 2_000, MAX_CONCURRENCY), planPhases(SEED, 2_000, MAX_CONCURRENCY));
  notDeepEqual(planConnections(SEED + 1, 2_000), plans);
  deepEqual(new Set(plans.map((p) => p.behaviour)), new Set(BEHAVIOURS));
  deepEqual(new Set(plans.map((p) => p.route)), new Set(Object.keys(HOSTS)));
  for (const { client, backend } of plans) {
    for (const side of [client, backend]) {
      ok(side.offset >= 0 && side.offset + side.length <= BLOCK_SIZE);
      ok(side.resetAfter === null || side.resetAfter <= side.length);
    }
  }
  const early = plans.filter((p) => p.behaviour === "early-gone");
  deepEqual(planEpisodes(SEED, early).flatMap((e) => e.plans), early);
});

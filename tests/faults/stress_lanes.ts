/**
 * The stress run's two lanes (tests/faults/stress_test.ts), and how each connection is judged.
 *
 * The main lane runs its connections in phases of 1 to many at once; each connection's client
 * and backend play their sides of its plan, and then the bytes each way are compared (SHA-256),
 * or after a reset, what arrived must be a prefix of what was sent. A connection without
 * progress for {@link NEVER_MS} is given up as stuck.
 *
 * The late lane runs episodes against the late proxy: clients connect and leave, and only then
 * do its backends start; what reaches them is checked in the same way.
 * @module
 */
import net from "node:net";
import type { NotifyReceiver, Process } from "../integration/harness.ts";
import { usage, waitUntil } from "./helpers.ts";
import { Pairing, pairingKey, type Registry, type StressBackend } from "./stress_backend.ts";
import {
  type Behaviour,
  BEHAVIOURS,
  type ConnectionPlan,
  type Episode,
  planEpisodes,
  planPhases,
  type Route,
} from "./stress_plan.ts";
import { leaveEarly, playSide, sha256, type SideResult, Wire } from "./stress_wire.ts";

/** A close, or any progress, that has not come by then never comes. */
export const NEVER_MS = 20_000;

/** What the run saw. */
export class Tally {
  readonly byBehaviour = new Map<Behaviour, number>(BEHAVIOURS.map((b) => [b, 0]));
  readonly byRoute = new Map<Route, number>();
  /** Bytes checked end to end, client to backend and back. */
  bytesUp = 0;
  bytesDown = 0;
  readonly mismatches: string[] = [];
  readonly failures: string[] = [];
  /** After a reset: how long until the other side was closed. */
  readonly resetCloseMs: number[] = [];
  /** "early-gone": connections whose backend was reached (header and all), and the others. */
  reached = 0;
  notReached = 0;
  /** "early-gone": from the backend being reached to its side being closed. */
  readonly earlyCloseMs: number[] = [];
  /** Connections finished, for progress lines. */
  done = 0;

  /** Counts a connection about to start. */
  count(plan: ConnectionPlan): void {
    this.byBehaviour.set(plan.behaviour, this.byBehaviour.get(plan.behaviour)! + 1);
    this.byRoute.set(plan.route, (this.byRoute.get(plan.route) ?? 0) + 1);
  }

  /** Bytes that arrived are not the bytes sent. */
  mismatch(plan: ConnectionPlan, what: string): void {
    this.mismatches.push(`${label(plan)}: ${what}`);
  }

  /** Anything else that went wrong with a connection. */
  fail(plan: ConnectionPlan, what: string): void {
    this.failures.push(`${label(plan)}: ${what}`);
  }

  /** What went wrong at a backend outside any one connection. */
  backendFailure(backend: string, what: string): void {
    this.failures.push(`the ${backend} backend: ${what}`);
  }
}

function label(plan: ConnectionPlan): string {
  return `#${plan.id} ${plan.behaviour} via ${plan.route}`;
}

/** A proxy under test, with what the run watches of it. */
export interface Watched {
  readonly name: string;
  readonly process: Process;
  readonly notify: NotifyReceiver;
  /** Descriptors and RSS once warmed up, and the RSS peak since. */
  baseFds: number;
  baseRssKiB: number;
  peakRssKiB: number;
  /** Connections it has been given, warm-ups included. */
  connections: number;
}

/** Everything the lanes share. */
export interface World {
  /** The run's seed, and the most main-lane connections at once. */
  readonly seed: number;
  readonly maxConcurrency: number;
  readonly block: Uint8Array;
  readonly tally: Tally;
  /** The proxies' listening ports, by route. */
  readonly ports: Readonly<Record<Route, number>>;
  readonly registry: Registry;
  readonly lateRegistry: Registry;
  readonly late: StressBackend;
  readonly latePort: number;
  readonly latePath: string;
  readonly main: Watched;
  readonly lateProxy: Watched;
  /** Main-lane connections in flight, for the watchdog. */
  readonly active: Set<Pairing>;
}

/** Where each route's client connects from and to. */
export const HOSTS: Readonly<Record<Route, string>> = {
  "v4": "127.0.0.1",
  "v6": "::1",
  "unix": "127.0.0.1",
  "late-tcp": "127.0.0.1",
  "late-unix": "127.0.0.1",
};

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(socket);
    });
  });
}

/** Connects a client for `plan` and registers it for its backend connection to claim. */
async function openClient(
  world: World,
  plan: ConnectionPlan,
  registry: Registry,
): Promise<{ pairing: Pairing; wire: Wire; key: string }> {
  const port = world.ports[plan.route];
  const socket = await connect(HOSTS[plan.route], port);
  const wire = new Wire(socket);
  const pairing = new Pairing(plan);
  pairing.wires.push(wire);
  const key = pairingKey(plan.route === "v6" ? 6 : 4, socket.localPort!, port);
  registry.register(key, pairing);
  return { pairing, wire, key };
}

function payloadOf(world: World, script: ConnectionPlan["client"]): Uint8Array {
  return world.block.subarray(script.offset, script.offset + script.length);
}

/** `receiver` got exactly `sent`. */
function checkArrived(
  tally: Tally,
  plan: ConnectionPlan,
  way: string,
  sent: Uint8Array,
  receiver: SideResult,
): void {
  if (receiver.received === sent.length && receiver.receivedSha === sha256(sent)) return;
  const differs = receiver.received === sent.length ? ", SHA-256 differs" : "";
  tally.mismatch(plan, `${way}: ${receiver.received} bytes arrived of ${sent.length}${differs}`);
}

/** `receiver` got a prefix of `sent` (a reset may cut a stream short, never change it). */
function checkPrefix(
  tally: Tally,
  plan: ConnectionPlan,
  way: string,
  sent: Uint8Array,
  receiver: SideResult,
): void {
  const n = receiver.received;
  if (n <= sent.length && receiver.receivedSha === sha256(sent.subarray(0, n))) return;
  tally.mismatch(plan, `${way}: the ${n} bytes that arrived are not the first of ${sent.length}`);
}

function judgeComplete(
  world: World,
  plan: ConnectionPlan,
  client: SideResult,
  backend: SideResult,
) {
  const tally = world.tally;
  for (const [name, side] of [["client", client], ["backend", backend]] as const) {
    const error = side.readError ?? side.writeError;
    if (error !== null) tally.fail(plan, `the ${name} failed: ${error}`);
  }
  const up = payloadOf(world, plan.client);
  const down = payloadOf(world, plan.backend);
  checkArrived(tally, plan, "client to backend", up.subarray(0, client.sent), backend);
  checkArrived(tally, plan, "backend to client", down.subarray(0, backend.sent), client);
  if (client.sent !== up.length || backend.sent !== down.length) {
    tally.fail(plan, `sent ${client.sent} of ${up.length} and ${backend.sent} of ${down.length}`);
  }
  tally.bytesUp += backend.received;
  tally.bytesDown += client.received;
}

function judgeReset(world: World, plan: ConnectionPlan, client: SideResult, backend: SideResult) {
  const tally = world.tally;
  const clientResets = plan.client.resetAfter !== null;
  const [resetter, survivor] = clientResets ? [client, backend] : [backend, client];
  const [rName, sName] = clientResets ? ["client", "backend"] : ["backend", "client"];
  const rScript = clientResets ? plan.client : plan.backend;
  const sScript = clientResets ? plan.backend : plan.client;
  if (resetter.resetAt === null || resetter.readError !== null || resetter.writeError !== null) {
    const why = resetter.readError ?? resetter.writeError;
    return tally.fail(plan, `the ${rName} was cut off before its reset: ${why}`);
  }
  const rSent = payloadOf(world, rScript).subarray(0, resetter.sent);
  const sSent = payloadOf(world, sScript).subarray(0, survivor.sent);
  checkPrefix(tally, plan, `${rName} to ${sName}`, rSent, survivor);
  checkPrefix(tally, plan, `${sName} to ${rName}`, sSent, resetter);
  tally.resetCloseMs.push(Math.max(0, survivor.endedAt - resetter.resetAt));
  tally.bytesUp += backend.received;
  tally.bytesDown += client.received;
}

/** One connection of the main lane (or a warm-up), played by both sides and judged. */
export async function connection(
  world: World,
  plan: ConnectionPlan,
  registry: Registry,
): Promise<void> {
  let opened;
  try {
    opened = await openClient(world, plan, registry);
  } catch (e) {
    return world.tally.fail(plan, `the client could not connect: ${e}`);
  }
  const { pairing, wire } = opened;
  world.active.add(pairing);
  try {
    const client = await playSide(wire, plan.client, world.block, pairing.claimed.promise);
    const backend = await pairing.backend.promise;
    if (pairing.stuck !== null) throw new Error(pairing.stuck);
    if (plan.behaviour === "reset") judgeReset(world, plan, client, backend);
    else judgeComplete(world, plan, client, backend);
  } catch (e) {
    world.tally.fail(plan, pairing.stuck ?? String(e));
  } finally {
    world.active.delete(pairing);
    world.tally.done++;
  }
}

/** Gives up connections without progress for {@link NEVER_MS}; returns its stop. */
export function watchdog(active: Set<Pairing>): () => void {
  const timer = setInterval(() => {
    const now = performance.now();
    for (const pairing of active) {
      if (now - pairing.lastActivity() < NEVER_MS) continue;
      const where = pairing.reached ? "both sides connected" : "the backend never reached";
      pairing.abort(`no progress and no close for ${NEVER_MS / 1000} s (${where})`);
    }
  }, 1000);
  return () => clearInterval(timer);
}

/** Runs `run` over `items`, `limit` at a time. */
async function pool<T>(items: readonly T[], limit: number, run: (item: T) => Promise<void>) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await run(items[next++]);
  });
  await Promise.all(workers);
}

/** The main lane: its connections in phases of varying concurrency. */
export async function mainLane(world: World, plans: readonly ConnectionPlan[]): Promise<void> {
  let at = 0;
  for (const phase of planPhases(world.seed, plans.length, world.maxConcurrency)) {
    await pool(plans.slice(at, at + phase.connections), phase.concurrency, (plan) => {
      world.tally.count(plan);
      world.main.connections++;
      return connection(world, plan, world.registry);
    });
    at += phase.connections;
  }
}

/**
 * Waits for a STATUS= from `proxy` with `served` connections taken (served, or failed to reach
 * the target) and, if given, `active`.
 */
export async function statusShows(proxy: Watched, served: number, active?: number): Promise<void> {
  const pattern = /: (\d+) active, (\d+) served(?:, (\d+) failed)?/;
  await proxy.notify.waitFor(
    (message) => {
      const m = pattern.exec(message.STATUS ?? "");
      return m !== null && Number(m[2]) + Number(m[3] ?? 0) >= served &&
        (active === undefined || Number(m[1]) === active);
    },
    // Served only grows: what is wanted is in the last message or in later ones.
    Math.max(0, proxy.notify.messages.length - 1),
    NEVER_MS,
  ).catch(() => {
    throw new Error(
      `${proxy.name}: no STATUS= with ${served} served or failed` +
        (active === undefined ? "" : ` and ${active} active`) +
        ` within ${NEVER_MS / 1000} s; the last: ${proxy.notify.messages.at(-1)?.STATUS}; ` +
        `its stderr ends:\n${proxy.process.stderr.trimEnd().split("\n").slice(-30).join("\n")}`,
    );
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A client of an episode, once it has left. */
interface Gone {
  readonly plan: ConnectionPlan;
  readonly pairing: Pairing;
  readonly key: string;
  readonly sent: number;
}

/** One "early-gone" client: connects, sends, leaves. */
async function goEarly(world: World, plan: ConnectionPlan): Promise<Gone | null> {
  world.tally.count(plan);
  world.lateProxy.connections++;
  try {
    const { pairing, wire, key } = await openClient(world, plan, world.lateRegistry);
    return { plan, pairing, key, sent: await leaveEarly(wire, plan.client, world.block) };
  } catch (e) {
    world.tally.fail(plan, `the client could not connect and leave: ${e}`);
    return null;
  }
}

/** What reached the late backend for a client that was gone: all it sent, or after a reset a prefix. */
async function judgeGone(world: World, gone: Gone): Promise<void> {
  const { plan, pairing, sent } = gone;
  const tally = world.tally;
  if (!pairing.reached) {
    world.lateRegistry.forget(gone.key);
    tally.notReached++;
    return;
  }
  tally.reached++;
  const timer = setTimeout(() => pairing.abort("the backend side was not closed"), NEVER_MS);
  try {
    const backend = await pairing.backend.promise;
    const up = payloadOf(world, plan.client).subarray(0, sent);
    if (plan.client.resetAfter !== null) checkPrefix(tally, plan, "client to backend", up, backend);
    else if (backend.readError !== null) {
      tally.fail(plan, `the backend failed: ${backend.readError}`);
    } else checkArrived(tally, plan, "client to backend", up, backend);
    tally.earlyCloseMs.push(backend.endedAt - pairing.claimedAt);
    tally.bytesUp += backend.received;
  } catch (e) {
    tally.fail(plan, String(e));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One episode of the late lane: its clients connect and leave; once the proxy has taken them
 * all, the backends start after the planned delay; once the proxy has let go of all of them
 * (STATUS= and its descriptors), they stop again.
 */
async function episode(world: World, { plans, backendDelayMs }: Episode): Promise<void> {
  const proxy = world.lateProxy;
  const gone = (await Promise.all(plans.map((plan) => goEarly(world, plan)))).filter((g) => g);
  await statusShows(proxy, proxy.connections);
  await sleep(backendDelayMs);
  const servers = [
    await world.late.listen({ host: "127.0.0.1", port: world.latePort }),
    await world.late.listen({ path: world.latePath }),
  ];
  try {
    await statusShows(proxy, proxy.connections, 0);
    await waitUntil(
      () => usage(proxy.process.child.pid).fds === proxy.baseFds,
      () => `${proxy.name}: descriptors back to ${proxy.baseFds}`,
      NEVER_MS,
    );
  } finally {
    for (const server of servers) await world.late.unlisten(server);
  }
  for (const g of gone) await judgeGone(world, g!);
  world.tally.done += plans.length;
}

/** The late lane: its episodes one after the other. */
export async function lateLane(world: World, plans: readonly ConnectionPlan[]): Promise<void> {
  for (const e of planEpisodes(world.seed, plans)) await episode(world, e);
}

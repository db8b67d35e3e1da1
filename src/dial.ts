/**
 * Dialling: opens the backend connection for one client.
 * @module
 */
import { isIPAddress, type Target } from "./cli/target.ts";
import { type Resolver, systemResolver } from "./engine/resolve.ts";

/**
 * Connects to `target`. A host name is resolved on every call (as the reference does, so DNS
 * changes are honoured) and each of its addresses is tried in order until one connects, so
 * "localhost:8080" reaches a backend on either 127.0.0.1 or ::1.
 *
 * @throws the error of the last address tried, or of the resolution.
 */
export async function dial(
  target: Target,
  resolve: Resolver = systemResolver,
): Promise<Deno.Conn> {
  switch (target.kind) {
    case "unix":
      return await Deno.connect({ transport: "unix", path: target.path });
    case "abstract":
      return await Deno.connect({ transport: "unix", path: `\0${target.name}` });
    case "vsock":
      return await Deno.connect({ transport: "vsock", cid: target.cid, port: target.port });
    case "tcp": {
      const { host, port } = target;
      if (isIPAddress(host)) return await Deno.connect({ hostname: host, port });
      let last: unknown = new Error(`${host} has no addresses`);
      let addresses: string[];
      try {
        addresses = await resolve(host);
      } catch (e) {
        throw new Error(`cannot resolve ${host} (${e instanceof Error ? e.message : e})`);
      }
      for (const address of addresses) {
        try {
          return await Deno.connect({ hostname: address, port });
        } catch (e) {
          last = e;
        }
      }
      throw last;
    }
  }
}

/** Pause after the first failed attempt; doubled after each further one, up to the maximum. */
const RETRY_FIRST_MS = 25;
const RETRY_MAX_MS = 500;

/**
 * How often pending attempts are checked against their deadlines: one timer for all of them
 * rather than one per connection, whose arming and clearing was about 8% of the CPU a short
 * connection cost. A deadline is met up to this late.
 */
export const DEADLINE_TICK_MS = 50;

/** An attempt that gives up at `at` (a `performance.now()` time). */
interface Deadline {
  readonly at: number;
  readonly expire: () => void;
}

const deadlines = new Set<Deadline>();
let ticker: ReturnType<typeof setInterval> | undefined;

function tick(): void {
  const now = performance.now();
  for (const deadline of deadlines) {
    if (deadline.at > now) continue;
    deadlines.delete(deadline);
    deadline.expire();
  }
  if (deadlines.size > 0) return;
  clearInterval(ticker);
  ticker = undefined;
}

/** Settles as `attempt` does, or with null if it is still pending at `at`. */
function until<T>(attempt: Promise<T>, at: number): Promise<T | null> {
  return new Promise((resolve, reject) => {
    const deadline: Deadline = { at, expire: () => resolve(null) };
    deadlines.add(deadline);
    ticker ??= setInterval(tick, DEADLINE_TICK_MS);
    attempt.then((value) => {
      deadlines.delete(deadline);
      resolve(value);
    }, (error) => {
      deadlines.delete(deadline);
      reject(error);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Connects to `target`, retrying with a short back-off while it refuses or cannot be reached,
 * until `timeoutMs` has passed (0: a single attempt, as the reference does). A backend that is
 * still starting when the first client arrives is thus waited for rather than the client reset.
 *
 * @throws the last attempt's error once the time is up; a permission error (Deno's or the
 * system's, say EACCES on a Unix socket) at once. Running out of file descriptors is retried
 * like a refusal: the client then waits for descriptors to free up, as the clients still in
 * the listener's queue do, rather than being dropped.
 */
export async function dialWithRetry(
  target: Target,
  timeoutMs: number,
  connect: (target: Target) => Promise<Deno.Conn> = dial,
): Promise<Deno.Conn> {
  if (timeoutMs <= 0) return await connect(target);
  const deadline = performance.now() + timeoutMs;
  let pause = RETRY_FIRST_MS;
  let lastError: unknown = null;
  for (;;) {
    const left = deadline - performance.now();
    if (lastError !== null && left <= 0) throw lastError;
    const attempt = connect(target);
    let conn: Deno.Conn | null;
    try {
      conn = await until(attempt, deadline);
    } catch (e) {
      // A refusal is worth waiting out; a lack of permission is a configuration error.
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) throw e;
      lastError = e;
      await sleep(Math.max(0, Math.min(pause, deadline - performance.now())));
      pause = Math.min(pause * 2, RETRY_MAX_MS);
      continue;
    }
    if (conn !== null) return conn;
    // Out of time with the attempt still pending (say, SYNs to an unreachable host).
    attempt.then((late) => late.close(), () => {});
    throw new Deno.errors.TimedOut(`no connection within ${Math.round(timeoutMs)} ms`);
  }
}

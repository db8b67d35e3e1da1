/**
 * The proxy: admits accepted clients under the limits (see `admission.ts`), dials the target
 * for each and forwards until both sides are done; drains on stop.
 * @module
 */
import { Admission, sourceOf, type WhenFull } from "./service/admission.ts";
import { type Client, type DataPath, formatAddress } from "./client.ts";
import { waitAtMost } from "./service/deadline.ts";
import { dialWithRetry } from "./dial.ts";
import { connEndpoint, type Endpoint } from "./endpoint.ts";
import { takeConn } from "./fastpath.ts";
import { forward } from "./forward.ts";
import { IdleTimer } from "./service/idle.ts";
import { log, logs, ThrottledLog } from "./service/log.ts";
import { proxyHeader, type ProxyProtocolVersion } from "./engine/proxyprotocol.ts";
import type { Reclaimer } from "./service/reclaim.ts";
import { Refusals } from "./service/refusals.ts";
import { formatTarget, type Target } from "./cli/target.ts";

/** What the proxy needs to know. */
export interface ProxyOptions {
  /** "fast": backends are read and written through Deno's core ops, see `fastpath.ts`. */
  readonly dataPath: DataPath;
  /** The most connections open at once (over all targets). */
  readonly connectionsMax: number;
  /** What becomes of a client over `connectionsMax`. */
  readonly whenFull: WhenFull;
  /** The most connections open or waiting at once from one source, or null for no limit. */
  readonly connectionsPerSource: number | null;
  /** Microseconds without a connection before `onIdle`; Infinity never. */
  readonly exitIdleTimeUsec: number;
  /** Send this PROXY protocol header to the backend first, or none. */
  readonly proxyProtocol: ProxyProtocolVersion | null;
  /** Retry a refusing backend for this many milliseconds; 0 tries once. */
  readonly connectTimeoutMs: number;
  /** Close connections without traffic for this many milliseconds; Infinity never. */
  readonly idleTimeoutMs: number;
  /** Turn on TCP keepalive on both sides. */
  readonly keepalive: boolean;
  /** Called once the idle span has passed. */
  readonly onIdle: () => void;
  /** Called whenever the number of open connections changes. */
  readonly onChange?: () => void;
  /** Gives memory back once no connection is open (see `reclaim.ts`). */
  readonly reclaimer?: Reclaimer;
}

/** A client admitted or waiting: where it goes, and the source it is counted under. */
interface Admitted {
  readonly client: Client;
  readonly target: Target;
  readonly source: string | null;
}

/** Serves clients for one target; see {@link Proxy.admit}. */
export class Proxy {
  readonly #options: ProxyOptions;
  readonly #admission: Admission<Admitted>;
  readonly #idle: IdleTimer;
  readonly #refusals = new Refusals();
  readonly #failures = new ThrottledLog(
    "error",
    1000,
    (held) => `Failed to connect: ${held} more connection(s) failed since the last message.`,
  );
  /** Closes each open connection at once, for the end of a drain. */
  readonly #open = new Set<() => void>();
  #served = 0;
  #failed = 0;
  #drained: (() => void) | null = null;

  /** @param options what to forward to, and the limits. */
  constructor(options: ProxyOptions) {
    this.#options = options;
    this.#admission = new Admission({
      max: options.connectionsMax,
      perSource: options.connectionsPerSource,
      whenFull: options.whenFull,
    });
    this.#idle = new IdleTimer(options.exitIdleTimeUsec, options.onIdle);
  }

  /** Connections currently open. */
  get active(): number {
    return this.#admission.active;
  }

  /** Clients waiting for a slot (`--when-full=wait`). */
  get waiting(): number {
    return this.#admission.waiting;
  }

  /** The refusals so far, for status and stop lines ("" when none). */
  get refused(): string {
    return this.#refusals.describe();
  }

  /** Connections admitted since start. */
  get served(): number {
    return this.#served;
  }

  /** Connections that could not be forwarded because the target could not be reached. */
  get failed(): number {
    return this.#failed;
  }

  /** Starts the idle timer; call once every listener is being served. */
  start(): void {
    this.#idle.arm();
  }

  /** Writes the log lines held back (counts of refusals and failures) now: at stop. */
  flushLogs(): void {
    this.#refusals.flush();
    this.#failures.flush();
  }

  /**
   * Takes an accepted client: forwards it to `target`, lets it wait for a slot, or refuses it
   * (see `admission.ts`).
   */
  admit = (client: Client, target: Target): void => {
    const perSource = this.#options.connectionsPerSource;
    const source = perSource === null ? null : sourceOf(client.remote?.hostname ?? null);
    const admitted = { client, target, source };
    const decision = this.#admission.request(source, admitted);
    if (decision === "admitted") return this.#start(admitted);
    if (decision === "full") {
      const waiting = this.#admission.waiting;
      this.#refusals.refuse(
        client,
        "full",
        () =>
          `Hit connection limit, refusing connection (${this.#admission.active} open` +
          (waiting > 0 ? `, ${waiting} waiting, the most that may wait)` : ")"),
      );
    } else if (decision === "source") {
      this.#refusals.refuse(
        client,
        "source",
        () =>
          `Hit per-source connection limit, refusing connection from ${
            formatAddress(client.remote)
          } ` +
          `(${this.#admission.fromSource(source!)} open or waiting from ${source})`,
      );
    }
    this.#options.onChange?.();
  };

  #start(admitted: Admitted): void {
    this.#served++;
    this.#idle.disarm();
    this.#options.reclaimer?.busy();
    this.#options.onChange?.();
    this.#serve(admitted);
  }

  /** Gives back the connection's place under the limit, once it is over. */
  #release(source: string | null): void {
    const next = this.#admission.release(source);
    if (next !== null) return this.#start(next);
    this.#options.onChange?.();
    if (this.#admission.active === 0) {
      this.#drained?.();
      this.#idle.arm();
      this.#options.reclaimer?.idle();
    }
  }

  /**
   * Waits up to `timeoutMs` for open connections to finish (waiting clients are served as
   * slots free), then closes the rest.
   * @returns how many connections had to be closed: open ones, and waiting ones unserved.
   */
  async drain(timeoutMs: number): Promise<{ open: number; waiting: number }> {
    this.#idle.disarm();
    if (this.active > 0) {
      // "infinity" waits for good.
      await waitAtMost(new Promise<void>((resolve) => this.#drained = resolve), timeoutMs);
    }
    const waiting = this.#admission.takeWaiting();
    for (const { client } of waiting) client.refuse();
    const open = this.#open.size;
    for (const close of this.#open) close();
    return { open, waiting: waiting.length };
  }

  async #serve({ client, target: to, source }: Admitted): Promise<void> {
    const options = this.#options;
    const started = logs("debug") ? performance.now() : 0;
    let clientEnd: Endpoint | null = null;
    const abort = () => clientEnd === null ? client.refuse() : clientEnd.close();
    this.#open.add(abort);
    try {
      let backendEnd: Endpoint;
      try {
        const backend = await dialWithRetry(to, options.connectTimeoutMs);
        if (backend.remoteAddr.transport === "tcp") {
          (backend as Deno.TcpConn).setNoDelay(true);
          if (options.keepalive) (backend as Deno.TcpConn).setKeepAlive(true);
        }
        backendEnd = (options.dataPath === "fast" ? takeConn(backend) : null) ??
          connEndpoint(backend);
        if (options.proxyProtocol !== null) {
          const header = proxyHeader(options.proxyProtocol, client);
          await backendEnd.write(header).catch((e) => {
            backendEnd.close();
            throw e;
          });
        }
      } catch (e) {
        this.#failed++;
        this.#failures.hit(() =>
          `Failed to connect to ${formatTarget(to)} for ${formatAddress(client.remote)}: ` +
          (e as Error).message
        );
        client.refuse();
        return;
      }
      // Log lines are built only when written: the addresses are looked up before the socket
      // is taken over, and only then.
      const peer = logs("debug") ? formatAddress(client.remote) : "";
      clientEnd = client.open(options.keepalive);
      const result = await forward(clientEnd, backendEnd, options.idleTimeoutMs);
      if (peer === "") return;
      const seconds = ((performance.now() - started) / 1000).toFixed(3);
      const ended = result.error === null ? "closed" : `aborted (${describeError(result.error)})`;
      log(
        "debug",
        `${peer} -> ${formatTarget(to)}: ${result.sent} bytes sent, ` +
          `${result.received} received, ${seconds}s, ${ended}`,
      );
    } finally {
      this.#open.delete(abort);
      this.#release(source);
    }
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

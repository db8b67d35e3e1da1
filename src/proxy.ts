/**
 * The proxy: admits accepted clients under the connection limit, dials the target for each
 * and forwards until both sides are done; drains on stop.
 * @module
 */
import { type Client, type DataPath, formatAddress } from "./client.ts";
import { dialWithRetry } from "./dial.ts";
import { connEndpoint, type Endpoint } from "./endpoint.ts";
import { takeConn } from "./fastpath.ts";
import { forward } from "./forward.ts";
import { IdleTimer } from "./idle.ts";
import { ConnectionLimit } from "./limit.ts";
import { log, logs, Throttle } from "./log.ts";
import { proxyHeader, type ProxyProtocolVersion } from "./proxyprotocol.ts";
import type { Reclaimer } from "./reclaim.ts";
import { formatTarget, type Target } from "./target.ts";

/** What the proxy needs to know. */
export interface ProxyOptions {
  /** "fast": backends are read and written through Deno's core ops, see `fastpath.ts`. */
  readonly dataPath: DataPath;
  /** The most connections open at once (over all targets). */
  readonly connectionsMax: number;
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

/** Serves clients for one target; see {@link Proxy.admit}. */
export class Proxy {
  readonly #options: ProxyOptions;
  readonly #limit: ConnectionLimit;
  readonly #idle: IdleTimer;
  readonly #refusals = new Throttle(1000);
  readonly #failures = new Throttle(1000);
  /** Closes each open connection at once, for the end of a drain. */
  readonly #open = new Set<() => void>();
  #served = 0;
  #failed = 0;
  #drained: (() => void) | null = null;

  /** @param options what to forward to, and the limits. */
  constructor(options: ProxyOptions) {
    this.#options = options;
    this.#limit = new ConnectionLimit(options.connectionsMax);
    this.#idle = new IdleTimer(options.exitIdleTimeUsec, options.onIdle);
  }

  /** Connections currently open. */
  get active(): number {
    return this.#limit.active;
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

  /** Takes an accepted client: refuses it at the limit, else forwards it to `target`. */
  admit = (client: Client, target: Target): void => {
    if (!this.#limit.tryAcquire()) {
      client.refuse();
      const held = this.#refusals.hit();
      if (held !== null) {
        log(
          "warning",
          `Hit connection limit, refusing connection (${this.#limit.max} open` +
            (held > 0 ? `; ${held} more refused since the last message)` : ")"),
        );
      }
      return;
    }
    this.#served++;
    this.#idle.disarm();
    this.#options.reclaimer?.busy();
    this.#options.onChange?.();
    this.#serve(client, target);
  };

  /** Gives back the connection's place under the limit, once it is over. */
  #release(): void {
    this.#limit.release();
    this.#options.onChange?.();
    if (this.#limit.active === 0) {
      this.#drained?.();
      this.#idle.arm();
      this.#options.reclaimer?.idle();
    }
  }

  /**
   * Waits up to `timeoutMs` for open connections to finish, then closes the rest.
   * @returns how many connections had to be closed.
   */
  async drain(timeoutMs: number): Promise<number> {
    this.#idle.disarm();
    if (this.active > 0) {
      const done = new Promise<void>((resolve) => this.#drained = resolve);
      let timer: ReturnType<typeof setTimeout> | undefined;
      // setTimeout cannot wait longer than 2^31-1 ms (~24.8 days); "infinity" waits for good.
      const timeout = new Promise<void>((resolve) => {
        if (Number.isFinite(timeoutMs)) {
          timer = setTimeout(resolve, Math.min(timeoutMs, 2 ** 31 - 1));
        }
      });
      await Promise.race([done, timeout]);
      clearTimeout(timer);
    }
    const left = this.#open.size;
    for (const close of this.#open) close();
    return left;
  }

  async #serve(client: Client, to: Target): Promise<void> {
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
        const held = this.#failures.hit();
        if (held !== null) {
          log(
            "error",
            `Failed to connect to ${formatTarget(to)} for ${formatAddress(client.remote)}: ` +
              (e as Error).message +
              (held > 0 ? ` (${held} more failed since the last message)` : ""),
          );
        }
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
      this.#release();
    }
  }
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

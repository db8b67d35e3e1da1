/**
 * The proxy: admits accepted clients under the connection limit, dials the target for each
 * and forwards until both sides are done.
 * @module
 */
import type { Socket } from "node:net";
import type { Options } from "./cli.ts";
import { dial } from "./dial.ts";
import { connEndpoint, type Endpoint, socketEndpoint } from "./endpoint.ts";
import { takeEndpoint } from "./fastpath.ts";
import { forward } from "./forward.ts";
import { IdleTimer } from "./idle.ts";
import { ConnectionLimit } from "./limit.ts";
import { log, Throttle } from "./log.ts";
import { formatTarget } from "./target.ts";

/** How accepted clients are read and written. */
export type DataPath = "fast" | "portable";

/** Serves clients for one target; see {@link Proxy.admit}. */
export class Proxy {
  readonly #options: Options;
  readonly #limit: ConnectionLimit;
  readonly #idle: IdleTimer;
  readonly #refusals = new Throttle(1000);
  readonly #clientEndpoint: (client: Socket) => Endpoint;
  #served = 0;

  /**
   * @param options the parsed command line.
   * @param onIdle called once `--exit-idle-time` has passed without a connection.
   * @param dataPath "portable" to use only public `node:net` API for clients.
   */
  constructor(options: Options, onIdle: () => void, dataPath: DataPath = "fast") {
    this.#options = options;
    this.#limit = new ConnectionLimit(options.connectionsMax);
    this.#idle = new IdleTimer(options.exitIdleTimeUsec, onIdle);
    this.#clientEndpoint = dataPath === "fast"
      ? (client) => takeEndpoint(client) ?? socketEndpoint(client)
      : socketEndpoint;
  }

  /** Connections currently open. */
  get active(): number {
    return this.#limit.active;
  }

  /** Connections admitted since start. */
  get served(): number {
    return this.#served;
  }

  /** Starts the idle timer; call once every listener is being served. */
  start(): void {
    this.#idle.arm();
  }

  /** Takes an accepted client: refuses it at the limit, else forwards it to the target. */
  admit = (client: Socket): void => {
    if (!this.#limit.tryAcquire()) {
      client.destroy();
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
    this.#serve(client).finally(() => {
      this.#limit.release();
      if (this.#limit.active === 0) this.#idle.arm();
    });
  };

  async #serve(client: Socket): Promise<void> {
    const peer = client.remoteAddress === undefined
      ? "unix client"
      : `${client.remoteAddress}:${client.remotePort}`;
    let backend: Deno.Conn;
    try {
      backend = await dial(this.#options.target);
    } catch (e) {
      client.destroy();
      log(
        "error",
        `Failed to connect to ${formatTarget(this.#options.target)} for ${peer}: ` +
          (e instanceof Error ? e.message : String(e)),
      );
      return;
    }
    if (backend.remoteAddr.transport === "tcp") (backend as Deno.TcpConn).setNoDelay(true);
    if (!client.destroyed) client.setNoDelay(true);
    const result = await forward(this.#clientEndpoint(client), connEndpoint(backend));
    log(
      "debug",
      `${peer}: ${result.sent} bytes sent, ${result.received} received` +
        (result.error === null ? "" : `, ended by ${String(result.error)}`),
    );
  }
}

/**
 * The stress run's backends (tests/faults/stress_test.ts). The proxy runs with
 * `--proxy-protocol=v2`, so each backend connection starts with a header naming the client's
 * port and the port it connected to: the backend looks its connection's plan up by them and
 * plays the plan's backend side, however many connections run at once and in whatever order the
 * proxy dials.
 * @module
 */
import net from "node:net";
import type { ConnectionPlan } from "./stress_plan.ts";
import { playSide, type SideResult, Wire } from "./stress_wire.ts";

/** A connection in flight, as both of its sides see it. */
export class Pairing {
  /** Resolves once a backend connection has claimed this client. */
  readonly claimed: PromiseWithResolvers<void> = Promise.withResolvers();
  /** Resolves with the backend side's result. */
  readonly backend: PromiseWithResolvers<SideResult> = Promise.withResolvers();
  /** The sockets of both sides, to close if the connection is stuck. */
  readonly wires: Wire[] = [];
  /** Whether a backend connection claimed it, and when. */
  reached = false;
  claimedAt = 0;
  /** Why it was given up for stuck, or null. */
  stuck: string | null = null;
  readonly started: number = performance.now();

  constructor(readonly plan: ConnectionPlan) {
    this.backend.promise.catch(() => {}); // Given up (see abort) before anyone awaits it.
  }

  /** performance.now() of the last byte read or written by either side, or of its start. */
  lastActivity(): number {
    return Math.max(this.started, ...this.wires.map((w) => w.lastActivity));
  }

  /** Gives the connection up: closes both sides; its backend result becomes an error. */
  abort(reason: string): void {
    if (this.stuck !== null) return;
    this.stuck = reason;
    for (const wire of this.wires) wire.close();
    this.claimed.resolve();
    this.backend.reject(new Error(reason));
  }
}

/** "4|1234|5678": family, client port, port the client connected to. */
export function pairingKey(family: 4 | 6, clientPort: number, listenerPort: number): string {
  return `${family}|${clientPort}|${listenerPort}`;
}

/** Clients waiting for their backend connection, by {@link pairingKey}. */
export class Registry {
  readonly #pairings = new Map<string, Pairing>();
  readonly #waiters = new Map<string, (pairing: Pairing) => void>();

  /** A client is connected: its backend connection will claim it by `key`. */
  register(key: string, pairing: Pairing): void {
    const waiter = this.#waiters.get(key);
    this.#waiters.delete(key);
    if (waiter) return waiter(pairing);
    this.#pairings.set(key, pairing);
  }

  /** The pairing registered (now or later) under `key`; removes it. */
  claim(key: string): Promise<Pairing> {
    const pairing = this.#pairings.get(key);
    this.#pairings.delete(key);
    if (pairing) return Promise.resolve(pairing);
    return new Promise((resolve) => this.#waiters.set(key, resolve));
  }

  /** Drops `key` (a client whose backend connection never came, as the proxy may decide). */
  forget(key: string): void {
    this.#pairings.delete(key);
    this.#waiters.delete(key);
  }
}

const SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const LOOPBACK_V6 = [...Array(15).fill(0), 1];

/**
 * Reads a PROXY v2 header and returns its key; null if the connection ends before its first
 * byte (the proxy may drop a connection it dialled for a client that is gone).
 * @throws when it is not a v2 PROXY header for a TCP client on a loopback address.
 */
async function readHeader(wire: Wire): Promise<string | null> {
  const first = await wire.read(16).catch(() => null);
  if (first === null) return null;
  const head = new Uint8Array(16);
  head.set(first);
  head.set(await wire.readExactly(16 - first.length), first.length);
  if (SIGNATURE.some((b, i) => head[i] !== b)) throw new Error(`not a PROXY v2 header: ${head}`);
  if (head[12] !== 0x21) {
    throw new Error(
      `command 0x${head[12].toString(16)} (0x21 is PROXY) and family ` +
        `0x${head[13].toString(16)}, not the TCP client's address`,
    );
  }
  const body = await wire.readExactly((head[14] << 8) | head[15]);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  if (head[13] === 0x11 && body.length === 12 && body[0] === 127) {
    return pairingKey(4, view.getUint16(8), view.getUint16(10));
  }
  if (head[13] === 0x21 && body.length === 36 && LOOPBACK_V6.every((b, i) => body[i] === b)) {
    return pairingKey(6, view.getUint16(32), view.getUint16(34));
  }
  throw new Error(`unexpected address block: family ${head[13]}, ${Array.from(body)}`);
}

/** How long a backend connection waits for its client to be registered: "never". */
const CLAIM_TIMEOUT_MS = 20_000;

/** A backend that serves stress connections on any number of listeners. */
export class StressBackend {
  readonly #servers: net.Server[] = [];
  readonly #open = new Set<Wire>();
  readonly #handlers = new Set<Promise<void>>();

  /**
   * @param fail told what went wrong outside any one connection's sides (a bad header, a
   * connection for a client that never connected).
   */
  constructor(
    readonly registry: Registry,
    readonly block: Uint8Array,
    readonly fail: (what: string) => void,
  ) {}

  /** Listens on a TCP port (0: any) or a Unix path; retries while the address is in use. */
  async listen(address: { host: string; port: number } | { path: string }): Promise<net.Server> {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.#serve(socket));
    for (let tries = 0;; tries++) {
      try {
        if ("path" in address) await Deno.remove(address.path).catch(() => {});
        await new Promise<void>((resolve, reject) => {
          server.once("error", reject);
          server.listen("path" in address ? address.path : address, () => {
            server.off("error", reject);
            resolve();
          });
        });
        break;
      } catch (e) {
        if ((e as { code?: string }).code !== "EADDRINUSE" || tries >= 400) throw e;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    this.#servers.push(server);
    return server;
  }

  /** Stops listening on `server` (its connections go on). */
  async unlisten(server: net.Server): Promise<void> {
    this.#servers.splice(this.#servers.indexOf(server), 1);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Connections open now. */
  get open(): number {
    return this.#open.size;
  }

  /** Waits for every connection's handler to finish. */
  async settled(): Promise<void> {
    while (this.#handlers.size > 0) await Promise.all(this.#handlers);
  }

  /** Stops listening and closes whatever is still open. */
  async close(): Promise<void> {
    for (const wire of this.#open) wire.close();
    await Promise.all([...this.#servers].map((s) => this.unlisten(s)));
    await this.settled();
  }

  #serve(socket: net.Socket): void {
    const wire = new Wire(socket);
    this.#open.add(wire);
    const handler = this.#play(wire).finally(() => {
      wire.close();
      this.#open.delete(wire);
      this.#handlers.delete(handler);
    });
    this.#handlers.add(handler);
  }

  async #play(wire: Wire): Promise<void> {
    let key: string | null;
    try {
      key = await readHeader(wire);
    } catch (e) {
      this.fail(`a bad PROXY header: ${(e as Error).message}`);
      return;
    }
    if (key === null) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const pairing = await Promise.race([
      this.registry.claim(key),
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), CLAIM_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
    if (pairing === null) {
      this.fail(`a backend connection for a client that never connected (${key})`);
      this.registry.forget(key);
      return;
    }
    pairing.reached = true;
    pairing.claimedAt = performance.now();
    pairing.wires.push(wire);
    pairing.claimed.resolve();
    pairing.backend.resolve(await playSide(wire, pairing.plan.backend, this.block));
  }
}

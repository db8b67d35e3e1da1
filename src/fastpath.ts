/**
 * The fast path for accepted TCP clients: Deno's own read/write ops on the client's socket.
 *
 * `node:net` sockets deliver data as events with a fresh buffer per chunk. Deno 2.9 can move an
 * accepted TCP socket out of its `node:net` wrapper into a plain Deno resource
 * (`TCPWrap.takeStream()`), which `Deno[Deno.internal].core` reads into our own buffers exactly
 * like a `Deno.Conn`. Both are private API that a Deno release may change, so this module is the
 * only place that touches them: {@link fastPathMissing} tells at start-up what is missing, and
 * the functions here report `null` then; callers fall back to the portable `socketEndpoint`.
 * @module
 */
import type { Server, Socket } from "node:net";
import { EMPTY, type Endpoint } from "./endpoint.ts";
import { log } from "./service/log.ts";

/** The core ops the fast path uses. */
export interface CoreOps {
  read(rid: number, buffer: Uint8Array): Promise<number>;
  write(rid: number, data: Uint8Array): Promise<number>;
  shutdown(rid: number): Promise<void>;
  tryClose(rid: number): void;
}

interface TakeableHandle {
  takeStream(): number;
}

/** The core ops of `deno` (this runtime's `Deno`, or a stand-in in tests), if it has them all. */
export function findCore(deno: unknown = Deno): CoreOps | null {
  const namespace = deno as Record<symbol | string, unknown>;
  const internal = namespace.internal as symbol | undefined;
  const core = internal === undefined
    ? undefined
    : (namespace[internal] as { core?: Partial<CoreOps> } | undefined)?.core;
  const ok = core !== undefined &&
    ["read", "write", "shutdown", "tryClose"].every((op) =>
      typeof core[op as keyof CoreOps] === "function"
    );
  return ok ? core as CoreOps : null;
}

const core = findCore();

/** Where the fast path's private API lives, for the start-up notice. */
export const CORE_OPS = "Deno[Deno.internal].core.{read,write,shutdown,tryClose}";
/** ...and the take-over of accepted TCP clients. */
export const TAKE_STREAM = "TCP handle takeStream()";

/**
 * What the fast path for clients of `server` needs of this Deno and it lacks, for the start-up
 * notice (its clients then take the portable path); `core` is for tests.
 *
 * @returns the missing private API, or null (also for Unix servers, whose clients always take
 * the portable path).
 */
export function fastPathMissing(server: Server, ops: CoreOps | null = core): string | null {
  const address = server.address();
  if (address === null || typeof address === "string") return null;
  if (ops === null) return CORE_OPS;
  const handle = (server as unknown as { _handle?: Partial<TakeableHandle> | null })._handle;
  return typeof handle?.takeStream === "function" ? null : TAKE_STREAM;
}

/**
 * Takes over an accepted TCP client socket as an endpoint over Deno's core ops.
 *
 * @returns null when the socket (for example a Unix one) or this Deno does not allow it; the
 * socket is then untouched.
 */
export function takeEndpoint(socket: Socket): Endpoint | null {
  const handle = (socket as unknown as { _handle?: Partial<TakeableHandle> })._handle;
  if (core === null || typeof handle?.takeStream !== "function") return null;
  const rid = handle.takeStream();
  if (typeof rid !== "number") return null;
  socket.destroy();
  return new RidEndpoint(core, rid);
}

const ignore = (): void => {};

/** The private symbol under which a `Deno.Conn` keeps its resource id, once looked for (null:
 * not there). */
let ridSymbol: symbol | null | undefined;

/**
 * Takes over a dialled backend connection (TCP or Unix; set its socket options first) as an
 * endpoint over Deno's core ops: `Deno.Conn.read` wraps each op in an async function and a set
 * of pending promises, which cost CPU per chunk and memory per idle connection.
 *
 * @returns null when this Deno does not allow it; then use `connEndpoint(conn)`.
 */
export function takeConn(conn: Deno.Conn): Endpoint | null {
  if (core === null || ridSymbol === null) return null;
  ridSymbol ??=
    Object.getOwnPropertySymbols(conn).find((s) => s.description === "Deno.internal.rid") ?? null;
  const rid = ridSymbol === null
    ? undefined
    : (conn as unknown as Record<symbol, unknown>)[ridSymbol];
  if (typeof rid === "number") return new RidEndpoint(core, rid);
  // Only a backend connection shows this, so it is said at the first one, once.
  log(
    "info",
    `This Deno (${Deno.version.deno}) has no Symbol(Deno.internal.rid) on its connections; ` +
      "backends are read and written through Deno.Conn, the portable way.",
  );
  ridSymbol = null;
  return null;
}

/**
 * An endpoint over a Deno stream resource. A class, and plain promise chains rather than async
 * functions: an idle connection then holds one small object and, per pending read, one op
 * promise and one reaction.
 */
class RidEndpoint implements Endpoint {
  constructor(readonly ops: CoreOps, readonly rid: number) {}

  read(buffer: Uint8Array): Promise<number> {
    return this.ops.read(this.rid, buffer); // 0 at end of stream
  }

  write(data: Uint8Array): Promise<void> {
    return this.ops.write(this.rid, data).then((done) =>
      done < data.length ? this.write(data.subarray(done)) : undefined
    );
  }

  closeWrite(): Promise<void> {
    return this.ops.shutdown(this.rid);
  }

  probe(): Promise<void> {
    return this.ops.write(this.rid, EMPTY).then(ignore);
  }

  close(): void {
    this.ops.tryClose(this.rid);
  }
}

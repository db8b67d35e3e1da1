/**
 * The fast path for accepted TCP clients: Deno's own read/write ops on the client's socket.
 *
 * `node:net` sockets deliver data as events with a fresh buffer per chunk. Deno 2.9 can move an
 * accepted TCP socket out of its `node:net` wrapper into a plain Deno resource
 * (`TCPWrap.takeStream()`), which `Deno[Deno.internal].core` reads into our own buffers exactly
 * like a `Deno.Conn`. Both are private API that a Deno release may change, so this module is the
 * only place that touches them, checks them at start-up and reports `null` when they are
 * missing; callers then fall back to the portable `socketEndpoint`.
 * @module
 */
import type { Socket } from "node:net";
import { EMPTY, type Endpoint } from "./endpoint.ts";

interface CoreOps {
  read(rid: number, buffer: Uint8Array): Promise<number>;
  write(rid: number, data: Uint8Array): Promise<number>;
  shutdown(rid: number): Promise<void>;
  tryClose(rid: number): void;
}

interface TakeableHandle {
  takeStream(): number;
}

function findCore(): CoreOps | null {
  const deno = Deno as unknown as Record<symbol | string, unknown>;
  const internal = deno.internal as symbol | undefined;
  const core = internal === undefined
    ? undefined
    : (deno[internal] as { core?: Partial<CoreOps> } | undefined)?.core;
  const ok = core !== undefined &&
    ["read", "write", "shutdown", "tryClose"].every((op) =>
      typeof core[op as keyof CoreOps] === "function"
    );
  return ok ? core as CoreOps : null;
}

const core = findCore();

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

/** The private symbol under which a `Deno.Conn` keeps its resource id, once found. */
let ridSymbol: symbol | undefined;

/**
 * Takes over a dialled backend connection (TCP or Unix; set its socket options first) as an
 * endpoint over Deno's core ops: `Deno.Conn.read` wraps each op in an async function and a set
 * of pending promises, which cost CPU per chunk and memory per idle connection.
 *
 * @returns null when this Deno does not allow it; then use `connEndpoint(conn)`.
 */
export function takeConn(conn: Deno.Conn): Endpoint | null {
  if (core === null) return null;
  ridSymbol ??= Object.getOwnPropertySymbols(conn).find((s) =>
    s.description === "Deno.internal.rid"
  );
  const rid = ridSymbol === undefined
    ? undefined
    : (conn as unknown as Record<symbol, unknown>)[ridSymbol];
  return typeof rid === "number" ? new RidEndpoint(core, rid) : null;
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

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

/** Whether this Deno offers the ops the fast path needs. */
export const fastPathAvailable: boolean = core !== null;

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
  return ridEndpoint(core, rid);
}

const endOfStream = (n: number): number | null => n === 0 ? null : n;
const ignore = (): void => {};

/**
 * An endpoint over a Deno stream resource. Plain promise chains rather than async functions: a
 * pending read is then one op promise and one reaction, which idle connections hold for long.
 */
function ridEndpoint(ops: CoreOps, rid: number): Endpoint {
  const write = (data: Uint8Array): Promise<void> =>
    ops.write(rid, data).then((done) =>
      done < data.length ? write(data.subarray(done)) : undefined
    );
  return {
    read: (buffer) => ops.read(rid, buffer).then(endOfStream),
    write,
    closeWrite: () => ops.shutdown(rid),
    probe: () => ops.write(rid, EMPTY).then(ignore),
    close: () => ops.tryClose(rid),
  };
}

/**
 * Endpoints: one side of a proxied connection, as the forwarding pump sees it.
 *
 * Backends are `Deno.Conn`s; clients come from the adopted `node:net` listeners and are either
 * taken over by the fast path (see `fastpath.ts`) or wrapped portably here.
 * @module
 */
import type { Socket } from "node:net";

/** A byte stream that can be read, written, half-closed and closed. */
export interface Endpoint {
  /** Reads into `buffer`; resolves to the number of bytes read, or null or 0 at end of stream. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Writes all of `data`, resolving once the socket has taken it. */
  write(data: Uint8Array): Promise<void>;
  /** Shuts down the sending direction (TCP FIN); reading goes on. */
  closeWrite(): Promise<void>;
  /** Closes the socket in both directions; pending reads and writes fail. Idempotent. */
  close(): void;
  /**
   * Checks that the peer has not reset the connection, without reading or sending anything (an
   * empty write): rejects if it has. Only called before `closeWrite`. Absent where the data
   * path cannot tell; a reset is then noticed at the next read or write.
   */
  probe?(): Promise<void>;
}

/** What a probe writes. */
export const EMPTY: Uint8Array = new Uint8Array(0);

function ignore(): void {}

/**
 * A `Deno.Conn` (TCP or Unix) as an endpoint. A class rather than an object of closures: an
 * idle connection holds one for as long as it lasts, so it should cost one small object.
 */
class ConnEndpoint implements Endpoint {
  constructor(readonly conn: Deno.Conn) {}

  read(buffer: Uint8Array): Promise<number | null> {
    return this.conn.read(buffer);
  }

  async write(data: Uint8Array): Promise<void> {
    let done = await this.conn.write(data);
    while (done < data.length) done += await this.conn.write(data.subarray(done));
  }

  closeWrite(): Promise<void> {
    return this.conn.closeWrite();
  }

  probe(): Promise<void> {
    return this.conn.write(EMPTY).then(ignore);
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Wraps a `Deno.Conn` (TCP or Unix) as an endpoint. */
export function connEndpoint(conn: Deno.Conn): Endpoint {
  return new ConnEndpoint(conn);
}

/**
 * Wraps a `node:net` socket as an endpoint through its public stream API. It cannot be probed:
 * Deno's `node:net` makes no system call for an empty write.
 *
 * The socket must have been created with `allowHalfOpen`, or its end of stream would close it.
 */
export function socketEndpoint(socket: Socket): Endpoint {
  let pending: Uint8Array | null = null;
  let ended = false;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    wake?.();
    wake = null;
  };
  socket.on("readable", notify);
  socket.on("end", () => {
    ended = true;
    notify();
  });
  socket.on("error", (error) => {
    failure = error;
    notify();
  });
  socket.on("close", notify);
  return {
    async read(buffer) {
      for (;;) {
        if (pending === null) pending = socket.read() as Uint8Array | null;
        if (pending !== null) {
          const n = Math.min(buffer.length, pending.length);
          buffer.set(n === pending.length ? pending : pending.subarray(0, n));
          pending = n === pending.length ? null : pending.subarray(n);
          return n;
        }
        if (failure) throw failure;
        if (ended) return null;
        if (socket.destroyed) throw new Deno.errors.BadResource("socket closed");
        await new Promise<void>((resolve) => wake = resolve);
      }
    },
    write(data) {
      return new Promise((resolve, reject) => {
        socket.write(data, (error) => error ? reject(error) : resolve());
      });
    },
    closeWrite() {
      return new Promise((resolve, reject) => {
        if (failure) return reject(failure);
        socket.end(() => resolve());
      });
    },
    close() {
      socket.destroy();
    },
  };
}

/**
 * Forwarding: moves bytes both ways between a client and its backend until both are done.
 *
 * One pump per direction reads into a buffer it owns and writes it out before reading again, so
 * a peer that stops reading stops the pump (backpressure) and memory stays bounded. Buffers start
 * small, so idle connections cost little, and grow while reads fill them, so bulk transfers move
 * large chunks. End of stream on one side becomes a half-close towards the other; an error on
 * either side closes both at once.
 * @module
 */
import type { Endpoint } from "./endpoint.ts";

/**
 * The size of each direction's first buffer. A pending read holds its buffer, so this is what an
 * idle connection costs per direction: 512 bytes rather than 4 KiB took idle RSS from about 25.6
 * to 18 KiB per connection (bench/, 9,000 held). Small requests and responses still fit in one
 * read, and a bulk transfer reaches the maximum after six filled reads.
 */
export const INITIAL_BUFFER = 512;
/** Buffers grow by this factor whenever a read fills them... */
export const BUFFER_GROWTH = 4;
/** ...up to this size. */
export const MAX_BUFFER = 1024 * 1024;

/** What happened to a forwarded connection. */
export interface ForwardResult {
  /** Bytes from the client to the backend. */
  readonly sent: number;
  /** Bytes from the backend to the client. */
  readonly received: number;
  /** The first error that tore the connection down, or null if both directions ended cleanly. */
  readonly error: unknown;
}

/** Copies `from` to `to` until end of stream, then half-closes `to`; `count` sees each chunk. */
async function pump(from: Endpoint, to: Endpoint, count: (n: number) => void): Promise<void> {
  let buffer = new Uint8Array(INITIAL_BUFFER);
  for (;;) {
    const n = await from.read(buffer);
    if (n === null) break;
    await to.write(n === buffer.length ? buffer : buffer.subarray(0, n));
    count(n);
    if (n === buffer.length && buffer.length < MAX_BUFFER) {
      buffer = new Uint8Array(Math.min(buffer.length * BUFFER_GROWTH, MAX_BUFFER));
    }
  }
  await to.closeWrite();
}

/** A connection was closed by `--idle-timeout`. */
export class IdleTimeoutError extends Error {
  override name = "IdleTimeout";
}

/**
 * Forwards between `client` and `backend` until both directions have ended or one has failed,
 * then closes both. With a finite `idleTimeoutMs`, a connection on which nothing was read in
 * either direction for that long is closed too.
 */
export async function forward(
  client: Endpoint,
  backend: Endpoint,
  idleTimeoutMs = Infinity,
): Promise<ForwardResult> {
  let sent = 0;
  let received = 0;
  let error: unknown = null;
  const fail = (e: unknown) => {
    if (error !== null) return;
    error = e;
    client.close();
    backend.close();
  };
  let lastActivity = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (Number.isFinite(idleTimeoutMs)) {
    lastActivity = performance.now();
    const check = () => {
      const left = lastActivity + idleTimeoutMs - performance.now();
      if (left <= 0) fail(new IdleTimeoutError(`no traffic for ${idleTimeoutMs} ms`));
      else timer = setTimeout(check, Math.min(left, 2 ** 31 - 1));
    };
    timer = setTimeout(check, Math.min(idleTimeoutMs, 2 ** 31 - 1));
  }
  const idle = timer !== undefined;
  await Promise.all([
    pump(client, backend, (n) => {
      sent += n;
      if (idle) lastActivity = performance.now();
    }).catch(fail),
    pump(backend, client, (n) => {
      received += n;
      if (idle) lastActivity = performance.now();
    }).catch(fail),
  ]);
  clearTimeout(timer);
  client.close();
  backend.close();
  return { sent, received, error };
}

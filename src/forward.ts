/**
 * Forwarding: moves bytes both ways between a client and its backend until both are done.
 *
 * One pump per direction reads into a buffer it owns and writes it out before reading again, so
 * a peer that stops reading stops the pump (backpressure) and memory stays bounded. While it
 * waits, the peer it reads from is probed now and then, so that a reset there still closes the
 * connection. Buffers start
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

/**
 * How often writes that have not completed are looked at: a direction whose write has been
 * pending since the previous look (its receiver does not read) gets the peer it reads from
 * probed for a reset, since nothing else reads that peer meanwhile (see `Endpoint.probe`).
 * Such a reset then closes the connection within about twice this.
 */
export const PROBE_INTERVAL_MS = 500;

/** What happened to a forwarded connection. */
export interface ForwardResult {
  /** Bytes from the client to the backend. */
  readonly sent: number;
  /** Bytes from the backend to the client. */
  readonly received: number;
  /** The first error that tore the connection down, or null if both directions ended cleanly. */
  readonly error: unknown;
}

/** One direction of a connection: a pump from one endpoint to the other. */
class Direction {
  /** Bytes written so far. */
  bytes = 0;
  /**
   * Whether it passed its end of stream on: `to` was half-closed (or, for the last direction to
   * end, is about to be closed) and can no longer be written, even empty.
   */
  ended = false;
  /** The number of looks when the pending write began. */
  since = 0;
  probing = false;
  /** The opposite direction, which writes to `from`. */
  other: Direction = this;

  constructor(
    readonly from: Endpoint,
    readonly to: Endpoint,
    readonly active: () => void,
    readonly fail: (error: unknown) => void,
  ) {}

  /** Copies `from` to `to` until end of stream, then half-closes `to`. */
  async pump(): Promise<void> {
    let buffer = new Uint8Array(INITIAL_BUFFER);
    for (;;) {
      const n = await this.from.read(buffer);
      if (n === null || n === 0) break;
      this.active();
      writing(this);
      await this.to.write(n === buffer.length ? buffer : buffer.subarray(0, n));
      pending.delete(this);
      this.bytes += n;
      if (n === buffer.length && buffer.length < MAX_BUFFER) {
        buffer = new Uint8Array(Math.min(buffer.length * BUFFER_GROWTH, MAX_BUFFER));
      }
    }
    // The last direction to end sends no half-close of its own: forward() then closes both
    // sockets, which sends the same FIN, one system call sooner.
    if (!this.other.ended) await this.to.closeWrite();
    this.ended = true;
  }

  /** Probes `from` for a reset, unless that cannot be done or is under way. */
  probe(): void {
    if (this.probing || this.other.ended || this.from.probe === undefined) return;
    this.probing = true;
    this.from.probe().then(() => this.probing = false, this.fail);
  }
}

/** The directions with a write pending, and how many looks at them there have been. */
const pending = new Set<Direction>();
let looks = 0;
let looker: ReturnType<typeof setInterval> | undefined;

function writing(direction: Direction): void {
  direction.since = looks;
  pending.add(direction);
  if (looker !== undefined) return;
  looker = setInterval(look, PROBE_INTERVAL_MS);
  Deno.unrefTimer(looker as unknown as number); // Never what keeps the process alive.
}

function look(): void {
  looks++;
  if (pending.size === 0) {
    clearInterval(looker);
    looker = undefined;
  }
  for (const direction of pending) if (direction.since < looks - 1) direction.probe();
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
  const active = timer === undefined ? ignore : () => lastActivity = performance.now();
  const up = new Direction(client, backend, active, fail);
  const down = new Direction(backend, client, active, fail);
  up.other = down;
  down.other = up;
  await Promise.all([up.pump().catch(fail), down.pump().catch(fail)]);
  pending.delete(up);
  pending.delete(down);
  clearTimeout(timer);
  client.close();
  backend.close();
  return { sent: up.bytes, received: down.bytes, error };
}

function ignore(): void {}

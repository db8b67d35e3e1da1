/**
 * One side of a stress connection (tests/faults/stress_test.ts), client or backend alike: a
 * `node:net` socket read and written under the test's control (it can half-close, and reset with
 * an RST, which a `Deno.Conn` cannot), and the script that side plays, checksumming what it reads.
 * @module
 */
import type { Socket } from "node:net";
import { createHash } from "node:crypto";
import { Random, type SideScript, type SlowReading } from "./stress_plan.ts";

/**
 * A `node:net` socket (made with `allowHalfOpen`) as awaitable reads and writes. Reads take from
 * what the socket has buffered, so a side that reads slowly leaves the rest in the kernel and the
 * sender is held back.
 */
export class Wire {
  /** performance.now() of the last byte read or written. */
  lastActivity = performance.now();
  #pending: Uint8Array | null = null;
  #ended = false;
  #failure: Error | null = null;
  #closed = false;
  #wake: (() => void) | null = null;

  constructor(readonly socket: Socket) {
    const notify = () => {
      this.#wake?.();
      this.#wake = null;
    };
    socket.on("readable", notify);
    socket.on("end", () => {
      this.#ended = true;
      notify();
    });
    socket.on("error", (error: Error) => {
      this.#failure ??= error;
      notify();
    });
    socket.on("close", () => {
      this.#closed = true;
      notify();
    });
  }

  /** Up to `max` bytes; null at end of stream. Throws on a reset or once destroyed. */
  async read(max: number): Promise<Uint8Array | null> {
    for (;;) {
      if (this.#pending === null) this.#pending = this.socket.read() as Uint8Array | null;
      const pending = this.#pending;
      if (pending !== null) {
        const n = Math.min(max, pending.length);
        this.#pending = n === pending.length ? null : pending.subarray(n);
        this.lastActivity = performance.now();
        return pending.subarray(0, n);
      }
      if (this.#failure) throw this.#failure;
      if (this.#ended) return null;
      if (this.#closed || this.socket.destroyed) throw new Error("socket closed");
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Exactly `length` bytes; throws at an early end of stream. */
  async readExactly(length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    for (let at = 0; at < length;) {
      const chunk = await this.read(length - at);
      if (chunk === null) throw new Error(`end of stream after ${at} of ${length} bytes`);
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  /** Writes `data`; resolves once the socket takes more (backpressure), rejects on an error. */
  write(data: Uint8Array): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed || this.socket.destroyed) return Promise.reject(new Error("socket closed"));
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error?: Error | null) => {
        if (settled) return;
        settled = true;
        this.socket.off("drain", drained);
        this.socket.off("close", closed);
        this.lastActivity = performance.now();
        if (error) reject(error);
        else resolve();
      };
      const drained = () => settle();
      const closed = () => settle(this.#failure ?? new Error("socket closed while writing"));
      this.lastActivity = performance.now();
      if (this.socket.write(data, (error) => error && settle(error))) return settle();
      this.socket.once("drain", drained);
      this.socket.once("close", closed);
    });
  }

  /** Half-closes (FIN after everything written); resolves once the kernel has it all. */
  end(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      this.socket.once("close", () => reject(this.#failure ?? new Error("closed before FIN")));
      this.socket.end(() => resolve());
    });
  }

  /** Resets the connection: an RST for TCP; a Unix socket is just closed (with data unread). */
  reset(): void {
    if (typeof this.socket.remotePort === "number") this.socket.resetAndDestroy();
    else this.socket.destroy();
  }

  /** Closes the socket. */
  close(): void {
    this.socket.destroy();
  }
}

/** How a side's reading ended. */
export type Ending = "eof" | "error" | "own-reset";

/** What one side did and saw. */
export interface SideResult {
  /** Bytes of its payload it wrote (all of it unless it reset or a write failed). */
  sent: number;
  /** Bytes it read, and their SHA-256. */
  received: number;
  receivedSha: string;
  ending: Ending;
  /** Why reading failed (a reset, expected only when the peer reset), or null. */
  readError: string | null;
  /** Why a write or the half-close failed (expected only when the peer reset), or null. */
  writeError: string | null;
  /** performance.now() at its own reset, and when its reading ended. */
  resetAt: number | null;
  endedAt: number;
}

function describe(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  return typeof code === "string" ? code : (e as Error).message ?? String(e);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Reads to the end, all at once or slowly; hashes what comes. */
async function readSide(
  wire: Wire,
  slow: SlowReading | null,
  random: Random,
  result: SideResult,
): Promise<void> {
  const hash = createHash("sha256");
  let stalled = false;
  try {
    for (;;) {
      const chunk = await wire.read(slow === null ? Infinity : 1 + random.below(slow.piece));
      if (chunk === null) break;
      hash.update(chunk);
      result.received += chunk.length;
      if (slow === null) continue;
      if (!stalled && result.received >= slow.stallAt) {
        stalled = true;
        await sleep(slow.stallMs);
      } else if (slow.pauseMs > 0) {
        await sleep(random.below(slow.pauseMs + 1));
      }
    }
    result.ending = "eof";
  } catch (e) {
    result.ending = result.resetAt === null ? "error" : "own-reset";
    if (result.resetAt === null) result.readError = describe(e);
  }
  result.receivedSha = hash.digest("hex");
  result.endedAt = performance.now();
}

/**
 * Plays `script` on `wire`: writes its payload (a slice of `block`) in random pieces while
 * reading everything that comes, then half-closes and, once the peer has ended too, closes; or
 * resets once it has sent `resetAfter` bytes and `mayReset` has resolved.
 */
export async function playSide(
  wire: Wire,
  script: SideScript,
  block: Uint8Array,
  mayReset: Promise<unknown> = Promise.resolve(),
): Promise<SideResult> {
  const random = new Random(script.seed);
  const result: SideResult = {
    sent: 0,
    received: 0,
    receivedSha: "",
    ending: "eof",
    readError: null,
    writeError: null,
    resetAt: null,
    endedAt: 0,
  };
  const reading = readSide(wire, script.slow, random.fork(), result);
  const payload = block.subarray(script.offset, script.offset + script.length);
  const stop = script.resetAfter ?? payload.length;
  try {
    if (script.afterPeerEnd) await reading;
    while (result.sent < stop) {
      const n = Math.min(1 + random.below(script.maxChunk), stop - result.sent);
      await wire.write(payload.subarray(result.sent, result.sent + n));
      result.sent += n;
    }
    if (script.resetAfter !== null) {
      await mayReset;
      result.resetAt = performance.now();
      wire.reset();
    } else {
      await wire.end();
    }
  } catch (e) {
    result.writeError = describe(e);
  }
  await reading;
  wire.close();
  return result;
}

/** The SHA-256 of `data`, as hex. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Plays an "early-gone" client: writes its payload, stays `leaveAfterMs`, then leaves without
 * reading, by a reset or by a half-close and close (FIN).
 * @returns the bytes written.
 */
export async function leaveEarly(
  wire: Wire,
  script: SideScript,
  block: Uint8Array,
): Promise<number> {
  const random = new Random(script.seed);
  const payload = block.subarray(script.offset, script.offset + script.length);
  let sent = 0;
  while (sent < payload.length) {
    const n = Math.min(1 + random.below(script.maxChunk), payload.length - sent);
    await wire.write(payload.subarray(sent, sent + n));
    sent += n;
  }
  await sleep(script.leaveAfterMs);
  if (script.resetAfter !== null) wire.reset();
  else await wire.end();
  wire.close();
  return sent;
}

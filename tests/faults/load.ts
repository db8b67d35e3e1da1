/**
 * Load generators for the fault suite: many connections through the proxy to an echo backend,
 * each sending its own bytes and checking that exactly those come back.
 * @module
 */
import { pseudoRandomBytes, writeAll } from "../integration/harness.ts";

/** Every payload is a slice of this block. */
export const BLOCK: Uint8Array = pseudoRandomBytes(256 * 1024, 23);

/** Connection `i`'s payload: a deterministic slice of {@link BLOCK}, 1 to `maxSize` bytes. */
export function payload(i: number, maxSize: number): Uint8Array {
  let x = Math.imul(i + 1, 0x9e3779b1) >>> 0;
  x ^= x >>> 16;
  const size = 1 + (x % maxSize);
  const offset = Math.imul(x, 0x85ebca6b) >>> 0;
  const start = offset % (BLOCK.length - size);
  return BLOCK.subarray(start, start + size);
}

/**
 * Reads `conn` to its end and checks it against `expected` as it arrives.
 * @throws when a byte differs or the stream is longer or shorter.
 */
export async function expectEcho(
  conn: Deno.Conn,
  expected: Uint8Array,
  buffer: Uint8Array,
): Promise<void> {
  let at = 0;
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    if (at + n > expected.length) throw new Error(`${at + n} bytes back, ${expected.length} sent`);
    for (let i = 0; i < n; i++) {
      if (buffer[i] !== expected[at + i]) throw new Error(`byte ${at + i} differs`);
    }
    at += n;
  }
  if (at !== expected.length) throw new Error(`${at} bytes back, ${expected.length} sent`);
}

/** One short connection: send the payload, half-close, check the echo, close. */
export async function shortConnection(
  port: number,
  data: Uint8Array,
  buffer: Uint8Array,
): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, data);
    await conn.closeWrite();
    await expectEcho(conn, data, buffer);
  } finally {
    conn.close();
  }
}

/** The outcome of {@link soak}. */
export interface SoakResult {
  readonly connections: number;
  readonly failed: number;
  readonly firstError: unknown;
  /** Bytes sent and checked back. */
  readonly bytes: number;
  readonly seconds: number;
}

/**
 * Runs `count` short connections, `concurrency` at a time, numbered from `first`; `onProgress`
 * is called every `every` connections.
 */
export async function soak(
  port: number,
  count: number,
  options: {
    concurrency?: number;
    maxSize?: number;
    first?: number;
    every?: number;
    onProgress?: (done: number) => void;
  } = {},
): Promise<SoakResult> {
  const { concurrency = 50, maxSize = 4096, first = 0, every = 10_000, onProgress } = options;
  let next = 0;
  let failed = 0;
  let firstError: unknown = null;
  let bytes = 0;
  let done = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    const buffer = new Uint8Array(8192);
    while (next < count) {
      const i = first + next++;
      const data = payload(i, maxSize);
      try {
        await shortConnection(port, data, buffer);
        bytes += data.length;
      } catch (e) {
        failed++;
        firstError ??= e;
      }
      if (++done % every === 0) onProgress?.(done);
    }
  }));
  return {
    connections: count,
    failed,
    firstError,
    bytes,
    seconds: (performance.now() - started) / 1000,
  };
}

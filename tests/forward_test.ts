import { deepEqual, equal, ok } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import type { Endpoint } from "../src/endpoint.ts";
import { concat, pseudoRandomBytes as bytes } from "./integration/harness.ts";
import {
  BUFFER_GROWTH,
  forward,
  type ForwardResult,
  IdleTimeoutError,
  INITIAL_BUFFER,
  MAX_BUFFER,
  PROBE_INTERVAL_MS,
} from "../src/forward.ts";

/**
 * An in-memory endpoint. The test feeds what the pump reads (`push`, `end`, `failRead`) and
 * inspects what it wrote (`received()`); writes can be held back (`gate`) to play a slow peer.
 * Every method is checked against the Endpoint contract as the pump is expected to use it.
 */
class MemEndpoint implements Endpoint {
  readonly events: string[] = [];
  /** The length of the buffer passed to each read() call. */
  readonly readSizes: number[] = [];
  /** The length of each write() call's data. */
  readonly writeSizes: number[] = [];
  outstandingReads = 0;
  maxOutstandingReads = 0;
  outstandingWrites = 0;
  maxOutstandingWrites = 0;
  writeClosed = false;
  closeWriteCalls = 0;
  closed = false;
  closeCalls = 0;
  /** When set, write() waits for release(); otherwise it completes at once. */
  gate = false;
  /** How often probe() was called. */
  probes = 0;
  /** When set, probe() fails with this (a reset peer); otherwise it succeeds at once... */
  probeFailure: unknown = null;
  /** ...unless this is set: then it never completes. */
  probeHangs = false;
  /** When set, the next write() (or closeWrite()) fails with this. */
  writeFailure: unknown = null;
  closeWriteFailure: unknown = null;

  #incoming: Uint8Array[] = [];
  #eof = false;
  #readFailure: unknown = null;
  #pendingRead: {
    buffer: Uint8Array;
    resolve: (n: number | null) => void;
    reject: (e: unknown) => void;
  } | null = null;
  #pendingWrites: { data: Uint8Array; resolve: () => void; reject: (e: unknown) => void }[] = [];
  #out: Uint8Array[] = [];
  #waiters: { check: () => boolean; resolve: () => void }[] = [];

  constructor(readonly label: string) {}

  // --- The Endpoint interface -----------------------------------------------------------------

  read(buffer: Uint8Array): Promise<number | null> {
    this.events.push("read");
    this.readSizes.push(buffer.length);
    if (this.closed) return Promise.reject(new Error(`${this.label}: read after close`));
    if (this.#pendingRead !== null) {
      return Promise.reject(new Error(`${this.label}: concurrent read`));
    }
    this.outstandingReads++;
    this.maxOutstandingReads = Math.max(this.maxOutstandingReads, this.outstandingReads);
    const { promise, resolve, reject } = Promise.withResolvers<number | null>();
    this.#pendingRead = { buffer, resolve, reject };
    this.#serveRead();
    this.#changed();
    return promise;
  }

  write(data: Uint8Array): Promise<void> {
    this.events.push(`write ${data.length}`);
    this.writeSizes.push(data.length);
    if (this.closed) return Promise.reject(new Error(`${this.label}: write after close`));
    if (this.writeClosed) return Promise.reject(new Error(`${this.label}: write after closeWrite`));
    if (this.writeFailure !== null) {
      const failure = this.writeFailure;
      this.writeFailure = null;
      return Promise.reject(failure);
    }
    this.outstandingWrites++;
    this.maxOutstandingWrites = Math.max(this.maxOutstandingWrites, this.outstandingWrites);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#pendingWrites.push({ data, resolve, reject });
    if (!this.gate) this.release();
    this.#changed();
    return promise;
  }

  closeWrite(): Promise<void> {
    this.events.push("closeWrite");
    this.closeWriteCalls++;
    if (this.closed) return Promise.reject(new Error(`${this.label}: closeWrite after close`));
    if (this.#pendingWrites.length > 0) {
      return Promise.reject(new Error(`${this.label}: closeWrite with a write pending`));
    }
    if (this.closeWriteFailure !== null) return Promise.reject(this.closeWriteFailure);
    this.writeClosed = true;
    this.#changed();
    return Promise.resolve();
  }

  close(): void {
    this.events.push("close");
    this.closeCalls++;
    if (this.closed) return;
    this.closed = true;
    const error = new Error(`${this.label}: closed`);
    if (this.#pendingRead !== null) {
      this.#pendingRead.reject(error);
      this.#pendingRead = null;
      this.outstandingReads--;
    }
    for (const w of this.#pendingWrites.splice(0)) {
      w.reject(error);
      this.outstandingWrites--;
    }
    this.#changed();
  }

  probe(): Promise<void> {
    this.events.push("probe");
    this.probes++;
    if (this.closed) return Promise.reject(new Error(`${this.label}: probe after close`));
    if (this.writeClosed) return Promise.reject(new Error(`${this.label}: probe after closeWrite`));
    if (this.probeFailure !== null) return Promise.reject(this.probeFailure);
    if (this.probeHangs) return new Promise(() => {});
    this.#changed();
    return Promise.resolve();
  }

  // --- Test controls --------------------------------------------------------------------------

  /** Makes `bytes` readable, as one chunk (a read takes at most one chunk). */
  push(bytes: Uint8Array | string): void {
    this.#incoming.push(typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes);
    this.#serveRead();
  }

  /** End of stream after what was pushed. */
  end(): void {
    this.#eof = true;
    this.#serveRead();
  }

  /** The next read that finds no data fails with `error`. */
  failRead(error: unknown): void {
    this.#readFailure = error;
    this.#serveRead();
  }

  /** Completes pending writes (all, or the first `count`), copying their data only now. */
  release(count = Infinity): void {
    for (const w of this.#pendingWrites.splice(0, count)) {
      this.#out.push(w.data.slice());
      this.outstandingWrites--;
      w.resolve();
    }
    this.#changed();
  }

  get pendingWrites(): number {
    return this.#pendingWrites.length;
  }

  get readPending(): boolean {
    return this.#pendingRead !== null;
  }

  /** Everything written so far, as one array. */
  received(): Uint8Array {
    return concat(this.#out);
  }

  receivedText(): string {
    return new TextDecoder().decode(this.received());
  }

  /** Resolves once `check()` holds; re-checked after every change of state. */
  until(check: () => boolean): Promise<void> {
    if (check()) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ check, resolve });
    return promise;
  }

  #serveRead(): void {
    const pending = this.#pendingRead;
    if (pending === null) return;
    const chunk = this.#incoming[0];
    if (chunk !== undefined) {
      const n = Math.min(chunk.length, pending.buffer.length);
      pending.buffer.set(chunk.subarray(0, n));
      if (n === chunk.length) this.#incoming.shift();
      else this.#incoming[0] = chunk.subarray(n);
      this.#settleRead(() => pending.resolve(n));
    } else if (this.#readFailure !== null) {
      const failure = this.#readFailure;
      this.#readFailure = null;
      this.#settleRead(() => pending.reject(failure));
    } else if (this.#eof) {
      this.#settleRead(() => pending.resolve(null));
    }
  }

  #settleRead(settle: () => void): void {
    this.#pendingRead = null;
    this.outstandingReads--;
    settle();
    this.#changed();
  }

  #changed(): void {
    // Let the pump react (its continuations run as microtasks) before checking conditions.
    queueMicrotask(() => {
      for (const w of [...this.#waiters]) {
        if (w.check()) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    });
  }
}

/** Starts forward() and keeps track of whether it has settled. */
function start(client: MemEndpoint, backend: MemEndpoint) {
  const state = { settled: false };
  const promise = forward(client, backend).finally(() => state.settled = true);
  return {
    promise,
    get settled() {
      return state.settled;
    },
  };
}

/** Lets every pending microtask and immediately due macrotask run. */
const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

// ---------------------------------------------------------------------------------------------

Deno.test("buffer constants: 512 bytes, growing x4, up to 1 MiB", () => {
  equal(INITIAL_BUFFER, 512);
  equal(BUFFER_GROWTH, 4);
  equal(MAX_BUFFER, 1024 * 1024);
});

Deno.test("forward: an empty connection ends cleanly and closes both", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  client.end();
  backend.end();
  const result = await forward(client, backend);
  deepEqual(result, { sent: 0, received: 0, error: null });
  // The first direction to end half-closes; one that ends after the other has finished only
  // closes both (close sends its FIN). Ending at once, both half-close.
  const halfCloses = client.closeWriteCalls + backend.closeWriteCalls;
  ok(halfCloses === 1 || halfCloses === 2, String(halfCloses));
  ok(client.closed && backend.closed);
  deepEqual(client.writeSizes, []);
  deepEqual(backend.writeSizes, []);
});

Deno.test("forward: copies bytes exactly both ways", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const up = bytes(3 * 1024 * 1024 + 12345, 7);
  const down = bytes(2 * 1024 * 1024 + 999, 8);
  for (let at = 0; at < up.length; at += 65536) client.push(up.subarray(at, at + 65536));
  for (let at = 0; at < down.length; at += 1000) backend.push(down.subarray(at, at + 1000));
  client.end();
  backend.end();
  const result = await forward(client, backend);
  deepEqual(result, { sent: up.length, received: down.length, error: null });
  deepEqual(backend.received(), up);
  deepEqual(client.received(), down);
  ok(client.closed && backend.closed);
});

Deno.test("forward: data fed while running, in both directions, arrives in order", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  const up: string[] = [];
  const down: string[] = [];
  for (let i = 0; i < 50; i++) {
    up.push(`c${i};`);
    client.push(`c${i};`);
    down.push(`b${i};`);
    backend.push(`b${i};`);
    if (i % 7 === 0) await tick();
  }
  client.end();
  backend.end();
  const result = await run.promise;
  equal(backend.receivedText(), up.join(""));
  equal(client.receivedText(), down.join(""));
  deepEqual(result, { sent: up.join("").length, received: down.join("").length, error: null });
});

Deno.test("forward: writes exactly the bytes read, never the whole buffer", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const sizes = [1, 100, INITIAL_BUFFER - 1, 1, 7];
  for (const n of sizes) client.push(bytes(n, n));
  client.end();
  backend.end();
  await forward(client, backend);
  deepEqual(backend.writeSizes, sizes);
  deepEqual(client.writeSizes, []);
});

Deno.test("forward: the client's EOF half-closes the backend; the backend keeps talking", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  client.push("request");
  client.end();
  await backend.until(() => backend.writeClosed);
  equal(backend.receivedText(), "request");
  deepEqual(backend.events.slice(-2), ["write 7", "closeWrite"]);
  // Nothing is closed: the response direction is still open.
  ok(!client.closed && !backend.closed && !client.writeClosed);
  await tick();
  ok(!run.settled);
  backend.push("response, part 1;");
  await client.until(() => client.receivedText() === "response, part 1;");
  backend.push("part 2");
  await client.until(() => client.receivedText().endsWith("part 2"));
  ok(!run.settled && !client.closed && !backend.closed);
  backend.end();
  const result = await run.promise;
  deepEqual(result, {
    sent: 7,
    received: "response, part 1;part 2".length,
    error: null,
  });
  equal(client.receivedText(), "response, part 1;part 2");
  equal(backend.closeWriteCalls, 1);
  equal(client.closeWriteCalls, 0, "the backend ended last: the client is closed, with its FIN");
  ok(client.closed && backend.closed);
  // The client was not read again after its end of stream.
  equal(client.events.filter((e) => e === "read").length, 2);
});

Deno.test("forward: the backend's EOF half-closes the client; the client keeps talking", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  backend.push("banner\n");
  backend.end();
  await client.until(() => client.writeClosed);
  equal(client.receivedText(), "banner\n");
  ok(!client.closed && !backend.closed && !backend.writeClosed);
  await tick();
  ok(!run.settled);
  for (let i = 0; i < 10; i++) client.push(`line ${i}\n`);
  await backend.until(() => backend.receivedText().endsWith("line 9\n"));
  ok(!run.settled && !client.closed && !backend.closed);
  client.end();
  const result = await run.promise;
  equal(result.error, null);
  equal(result.received, 7);
  equal(result.sent, backend.received().length);
  ok(client.writeClosed && client.closed && backend.closed);
  equal(backend.closeWriteCalls, 0, "the client ended last: the backend is closed, with its FIN");
});

Deno.test("forward: a read error on the client closes both, even mid-transfer", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  client.push("abc");
  backend.push("xyz");
  await backend.until(() => backend.received().length === 3);
  await client.until(() => client.received().length === 3);
  const boom = new Error("connection reset");
  client.failRead(boom);
  const result = await run.promise;
  deepEqual(result, { sent: 3, received: 3, error: boom });
  ok(client.closed && backend.closed);
  // No half-close is sent for a failure.
  equal(backend.closeWriteCalls, 0);
  equal(client.closeWriteCalls, 0);
});

Deno.test("forward: a read error on the backend closes both", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  const boom = new Deno.errors.ConnectionReset("backend reset");
  backend.failRead(boom);
  const result = await run.promise;
  equal(result.error, boom);
  ok(client.closed && backend.closed);
});

Deno.test("forward: a write error closes both; unwritten bytes are not counted", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  client.push("abc");
  await backend.until(() => backend.received().length === 3);
  const boom = new Deno.errors.BrokenPipe("backend gone");
  backend.writeFailure = boom;
  client.push("defgh");
  const result = await run.promise;
  deepEqual(result, { sent: 3, received: 0, error: boom });
  ok(client.closed && backend.closed);
});

Deno.test("forward: a failing half-close is an error that closes both", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const boom = new Deno.errors.NotConnected("not connected");
  backend.closeWriteFailure = boom;
  const run = start(client, backend);
  client.push("x");
  client.end();
  const result = await run.promise;
  deepEqual(result, { sent: 1, received: 0, error: boom });
  ok(client.closed && backend.closed);
});

Deno.test("forward: an error unblocks a direction stalled on a slow writer", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  backend.gate = true; // the backend never takes what is written to it
  const run = start(client, backend);
  client.push("stuck");
  await backend.until(() => backend.pendingWrites === 1);
  const boom = new Error("backend read failed");
  backend.failRead(boom);
  const result = await run.promise;
  // The first error is reported, not the "closed" error of the stalled write.
  deepEqual(result, { sent: 0, received: 0, error: boom });
  ok(client.closed && backend.closed);
  equal(backend.pendingWrites, 0);
});

Deno.test("forward: the first error wins when both sides fail", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  const first = new Error("first");
  client.failRead(first);
  backend.failRead(new Error("second"));
  const result = await run.promise;
  equal(result.error, first);
});

Deno.test("forward: an endpoint that throws synchronously is handled like a rejection", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const boom = new Error("sync throw");
  const throwing: Endpoint = {
    read: () => {
      throw boom;
    },
    write: (d) => client.write(d),
    closeWrite: () => client.closeWrite(),
    close: () => client.close(),
  };
  const result = await forward(throwing, backend);
  equal(result.error, boom);
  ok(client.closed && backend.closed);
});

// ---------------------------------------------------------------------------------------------
// Buffers

/** The sizes a direction's buffer takes while every read fills it: INITIAL_BUFFER up to MAX_BUFFER. */
function growth(): number[] {
  const sizes = [INITIAL_BUFFER];
  while (sizes.at(-1)! < MAX_BUFFER) {
    sizes.push(Math.min(sizes.at(-1)! * BUFFER_GROWTH, MAX_BUFFER));
  }
  return sizes;
}

Deno.test("forward: buffers grow x4 while reads fill them, up to 1 MiB", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const data = bytes(3 * 1024 * 1024, 3);
  client.push(data); // one big chunk: every read fills its buffer
  client.end();
  backend.end();
  const result = await forward(client, backend);
  equal(result.sent, data.length);
  deepEqual(backend.received(), data);
  const sizes = growth();
  equal(sizes.length, 7); // 512 B; 2, 8, 32, 128, 512 KiB; 1 MiB
  const full: number[] = [...sizes];
  let left = data.length - full.reduce((a, b) => a + b, 0);
  while (left > MAX_BUFFER) {
    full.push(MAX_BUFFER);
    left -= MAX_BUFFER;
  }
  // Every read asks for the whole buffer; the last data read is partial, then end of stream.
  deepEqual(client.readSizes, [...full, MAX_BUFFER, MAX_BUFFER]);
  deepEqual(backend.writeSizes, [...full, left]);
  // The other direction saw no traffic and kept its small buffer.
  deepEqual(backend.readSizes, [INITIAL_BUFFER]);
});

Deno.test("forward: buffers do not grow on partial reads", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  for (let i = 0; i < 20; i++) client.push(bytes(INITIAL_BUFFER - 1, i + 1));
  client.end();
  backend.end();
  await forward(client, backend);
  ok(client.readSizes.every((n) => n === INITIAL_BUFFER), String(client.readSizes));
});

Deno.test("forward: a buffer grows only after a read filled it", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const [first, second, third] = growth();
  client.push(bytes(10, 1));
  client.push(bytes(first, 2));
  client.push(bytes(10, 3));
  client.push(bytes(second, 4));
  client.push(bytes(10, 5));
  client.end();
  backend.end();
  await forward(client, backend);
  deepEqual(client.readSizes, [first, first, second, second, third, third]);
  deepEqual(backend.writeSizes, [10, first, 10, second, 10]);
});

// ---------------------------------------------------------------------------------------------
// Backpressure

Deno.test("forward: a slow writer stops the pump: one read, then nothing until it drains", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  backend.gate = true;
  for (let i = 0; i < 10; i++) client.push(`chunk ${i};`);
  const run = start(client, backend);
  for (let i = 0; i < 10; i++) {
    await backend.until(() => backend.pendingWrites === 1);
    await tick();
    // Exactly one read per write so far: the pump does not read ahead of the slow writer.
    equal(client.events.filter((e) => e === "read").length, i + 1);
    equal(client.outstandingReads, 0);
    equal(backend.pendingWrites, 1);
    backend.release(1);
  }
  client.end();
  backend.gate = false;
  backend.end();
  const result = await run.promise;
  equal(result.error, null);
  equal(backend.receivedText(), Array.from({ length: 10 }, (_, i) => `chunk ${i};`).join(""));
  equal(client.maxOutstandingReads, 1);
  equal(backend.maxOutstandingReads, 1);
  equal(backend.maxOutstandingWrites, 1);
  equal(client.maxOutstandingWrites, 0);
});

Deno.test("forward: a stalled direction does not stall the other one", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  backend.gate = true; // client → backend is stalled
  const run = start(client, backend);
  client.push("upload");
  await backend.until(() => backend.pendingWrites === 1);
  for (let i = 0; i < 5; i++) backend.push(`down ${i};`);
  await client.until(() => client.receivedText().endsWith("down 4;"));
  equal(client.receivedText(), "down 0;down 1;down 2;down 3;down 4;");
  ok(!run.settled);
  backend.release();
  backend.gate = false;
  client.end();
  backend.end();
  const result = await run.promise;
  deepEqual(result, { sent: 6, received: client.received().length, error: null });
  equal(backend.receivedText(), "upload");
});

Deno.test("forward: the written data is not touched until its write completes", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  backend.gate = true;
  client.push("AAAA");
  client.push("BBBB");
  client.end();
  backend.end();
  const run = start(client, backend);
  await backend.until(() => backend.pendingWrites === 1);
  await tick();
  backend.release(); // copies the data only now
  await backend.until(() => backend.pendingWrites === 1);
  await tick();
  backend.release();
  backend.gate = false;
  await run.promise;
  equal(backend.receivedText(), "AAAABBBB");
});

// ---------------------------------------------------------------------------------------------
// Probes: a reset of the peer a stalled direction reads from

/**
 * Resolves with `promise`, keeping the event loop alive meanwhile (the probe timer does not),
 * or fails after `ms`.
 */
function settles<T>(promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Waits for `n` looks at pending writes: a span in which a stalled direction gets probed. */
const looks = (n: number) =>
  new Promise<void>((resolve) => setTimeout(resolve, n * PROBE_INTERVAL_MS));

Deno.test("forward: a reset of the client is seen while its data waits for a backend that does not read", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  backend.gate = true; // the backend stopped reading, and sends nothing
  const run = start(client, backend);
  client.push("stuck");
  await backend.until(() => backend.pendingWrites === 1);
  const reset = new Error("connection reset by peer");
  client.probeFailure = reset; // nothing reads the client now: only a probe can tell
  const result = await settles(run.promise);
  deepEqual(result, { sent: 0, received: 0, error: reset });
  ok(client.closed && backend.closed);
  equal(backend.probes, 0, "the backend was not the one waited on");
});

Deno.test("forward: a reset of the backend is seen while its data waits for a client that does not read", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  client.gate = true;
  const run = start(client, backend);
  backend.push("stuck");
  await client.until(() => client.pendingWrites === 1);
  const reset = new Error("connection reset by peer");
  backend.probeFailure = reset;
  const result = await settles(run.promise);
  deepEqual(result, { sent: 0, received: 0, error: reset });
  equal(client.probes, 0);
});

Deno.test("forward: no probes while writes complete, one at a time while one waits", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const run = start(client, backend);
  client.push("request");
  backend.push("response");
  await client.until(() => client.receivedText() === "response");
  await looks(3);
  equal(client.probes + backend.probes, 0, "an idle connection is not probed");
  backend.gate = true;
  client.push("stuck");
  client.probeHangs = true; // the first probe never completes
  await backend.until(() => backend.pendingWrites === 1);
  await looks(5);
  equal(client.probes, 1, "one probe at a time");
  client.end();
  backend.gate = false;
  backend.release();
  backend.end();
  deepEqual(await settles(run.promise), { sent: 12, received: 8, error: null });
});

Deno.test("forward: a peer already half-closed towards is not probed", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  backend.push("bye");
  backend.end(); // so the client gets "bye" and a half-close: it can no longer be written
  const run = start(client, backend);
  await client.until(() => client.writeClosed);
  backend.gate = true;
  client.push("stuck");
  await backend.until(() => backend.pendingWrites === 1);
  await looks(4);
  equal(client.probes, 0);
  backend.gate = false;
  backend.release();
  client.end();
  deepEqual(await settles(run.promise), { sent: 5, received: 3, error: null });
});

Deno.test("forward: an endpoint that cannot be probed is left alone", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const unprobed: Endpoint = {
    read: (b) => client.read(b),
    write: (d) => client.write(d),
    closeWrite: () => client.closeWrite(),
    close: () => client.close(),
  };
  backend.gate = true;
  const run = forward(unprobed, backend);
  client.push("stuck");
  await backend.until(() => backend.pendingWrites === 1);
  await looks(4);
  equal(client.probes, 0);
  client.end();
  backend.gate = false;
  backend.release();
  backend.end();
  deepEqual(await settles(run), { sent: 5, received: 0, error: null });
});

// ---------------------------------------------------------------------------------------------
// Properties

Deno.test("property: any chunking in both directions arrives byte-exact", async () => {
  const chunks = fc.array(fc.uint8Array({ minLength: 1, maxLength: 20_000 }), { maxLength: 12 });
  await fc.assert(
    fc.asyncProperty(chunks, chunks, fc.boolean(), async (up, down, gateWrites) => {
      const client = new MemEndpoint("client");
      const backend = new MemEndpoint("backend");
      const run = start(client, backend);
      for (const c of up) client.push(c);
      for (const c of down) backend.push(c);
      if (gateWrites) {
        // Slow writers on both sides, released one write at a time.
        client.gate = backend.gate = true;
        client.end();
        backend.end();
        while (!run.settled) {
          await tick();
          client.release(1);
          backend.release(1);
        }
      } else {
        client.end();
        backend.end();
      }
      const result: ForwardResult = await run.promise;
      deepEqual(result, {
        sent: up.reduce((n, c) => n + c.length, 0),
        received: down.reduce((n, c) => n + c.length, 0),
        error: null,
      });
      deepEqual(backend.received(), concat(up));
      deepEqual(client.received(), concat(down));
      ok(client.maxOutstandingReads <= 1 && backend.maxOutstandingReads <= 1);
      ok(client.maxOutstandingWrites <= 1 && backend.maxOutstandingWrites <= 1);
      const halfCloses = client.closeWriteCalls + backend.closeWriteCalls;
      ok(halfCloses === 1 || halfCloses === 2, String(halfCloses));
      ok(client.closed && backend.closed);
    }),
    { numRuns: 100 },
  );
});

Deno.test("idle timeout: a connection without traffic for the span is closed on both sides", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const started = performance.now();
  const result = await forward(client, backend, 100);
  const waited = performance.now() - started;
  ok(result.error instanceof IdleTimeoutError, String(result.error));
  ok(client.closed && backend.closed);
  ok(waited >= 95, `closed after ${waited} ms`);
});

Deno.test("idle timeout: traffic keeps a connection open past the span", async () => {
  const client = new MemEndpoint("client");
  const backend = new MemEndpoint("backend");
  const running = forward(client, backend, 150);
  for (let i = 0; i < 6; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    client.push(`ping ${i}`);
  }
  equal(client.closed, false, "still open after 300 ms of regular traffic");
  client.end();
  backend.end();
  const result = await running;
  equal(result.error, null);
  equal(result.sent, 36);
});

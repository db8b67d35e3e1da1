/**
 * Hostile input. Property-based tests for the parsers that had none (`--listen` addresses,
 * NOTIFY_SOCKET, WATCHDOG_USEC/WATCHDOG_PID): every input either parses to a valid value or
 * fails with a clear message naming it, and nothing else is ever thrown. (The targets, time
 * spans, command line and LISTEN_* environment have theirs in tests/*_test.ts.) And garbage on
 * a socket is just bytes: arbitrary binary data, protocol look-alikes included, crosses the
 * real proxy exactly, in both directions; a client cannot pass itself off as the proxy by
 * sending a PROXY header of its own.
 */
import { deepEqual, equal, fail, ok } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  formatListenAddress,
  type ListenAddress,
  parseListenAddress,
} from "../../src/cli/address.ts";
import { parseNotifySocket, watchdogIntervalMs } from "../../src/service/notify.ts";
import { V2_SIGNATURE } from "../../src/engine/proxyprotocol.ts";
import { Backend, concat, freePort, readAll, writeAll } from "../integration/harness.ts";
import { portOf, report, startLimitedProxy, warmUp } from "./helpers.ts";

// ---------------------------------------------------------------------------------------------
// --listen addresses

/** Pieces that make near-valid listen addresses likelier than random strings alone would. */
const addressPiece = fc.constantFrom(
  "",
  "0",
  "1",
  "80",
  "65535",
  "65536",
  "99999999999999999999",
  "-1",
  "+1",
  "1e3",
  "0x50",
  " 80",
  "80 ",
  ":",
  "::",
  "::1",
  "[",
  "]",
  "[::1]",
  "[::1]:",
  "127.0.0.1",
  "localhost",
  "example.com",
  "é",
  "/",
  "/run/a.sock",
  "@",
  "@name",
  "\0",
  "%",
  "vsock:1:2",
  "\n",
);

const listenText = fc.oneof(
  fc.string({ unit: "binary", maxLength: 24 }),
  fc.array(addressPiece, { maxLength: 4 }).map((parts) => parts.join("")),
  fc.tuple(fc.option(fc.constantFrom("127.0.0.1", "[::1]", "localhost", "host")), fc.integer())
    .map(([host, port]) => host === null ? String(port) : `${host}:${port}`),
  fc.string({ unit: "grapheme", maxLength: 200 }).map((s) => `/${s}`),
  fc.string({ unit: "grapheme", maxLength: 120 }).map((s) => `@${s}`),
);

/** Checks that `address` is a well-formed listen address. */
function checkListenAddress(text: string, address: ListenAddress): void {
  switch (address.kind) {
    case "tcp":
      ok(Number.isInteger(address.port) && address.port >= 1 && address.port <= 65535, text);
      ok(address.host === null || (address.host.length > 0 && !address.host.includes("]")), text);
      break;
    case "unix":
      ok(address.path.startsWith("/") && !address.path.includes("\0"), text);
      ok(new TextEncoder().encode(address.path).length <= 107, text);
      break;
    case "abstract":
      ok(address.name.length > 0, text);
      break;
    default:
      fail(`${JSON.stringify(text)} parsed to ${JSON.stringify(address)}`);
  }
}

Deno.test("property: a --listen address parses to a valid address that formats back, or a RangeError naming it", () => {
  fc.assert(
    fc.property(listenText, (text) => {
      let address: ListenAddress;
      try {
        address = parseListenAddress(text);
      } catch (e) {
        ok(e instanceof RangeError, `${JSON.stringify(text)} threw ${e}`);
        const named = e.message.startsWith(`Invalid listen address "${text}": `) ||
          e.message.startsWith(`Invalid listen address ${JSON.stringify(text)}: `);
        ok(named, `the message names the input: ${JSON.stringify(e.message)}`);
        ok(!e.message.includes("\n") || text.includes("\n"), e.message);
        return;
      }
      checkListenAddress(text, address);
      deepEqual(parseListenAddress(formatListenAddress(address)), address, text);
    }),
    { numRuns: 5000 },
  );
});

Deno.test("property: every valid TCP listen address is accepted", () => {
  fc.assert(
    fc.property(
      fc.option(fc.oneof(fc.ipV4(), fc.ipV6().map((a) => `[${a}]`), fc.domain())),
      fc.integer({ min: 1, max: 65535 }),
      (host, port) => {
        const text = host === null ? String(port) : `${host}:${port}`;
        const address = parseListenAddress(text);
        equal(address.kind, "tcp");
        if (address.kind === "tcp") equal(address.port, port);
      },
    ),
    { numRuns: 2000 },
  );
});

// ---------------------------------------------------------------------------------------------
// NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID

Deno.test("property: NOTIFY_SOCKET is a destination, nothing, or unsupported with a reason; never a throw", () => {
  fc.assert(
    fc.property(
      fc.option(
        fc.oneof(
          fc.string({ unit: "binary", maxLength: 40 }),
          fc.constantFrom("/", "@", "vsock:", "vsock:1:2", "@\0", "/run/systemd/notify"),
          fc.string({ maxLength: 20 }).map((s) => `@${s}`),
          fc.string({ maxLength: 20 }).map((s) => `/${s}`),
        ),
        { nil: undefined },
      ),
      (value) => {
        const destination = parseNotifySocket(value);
        if (value === undefined || value === "") return equal(destination, null);
        ok(destination !== null, JSON.stringify(value));
        if (destination.kind === "unix") {
          if (value.startsWith("/")) equal(destination.path, value);
          else {
            ok(value.startsWith("@") && value.length > 1, JSON.stringify(value));
            equal(destination.path, `\0${value.slice(1)}`);
          }
        } else {
          equal(destination.kind, "unsupported");
          ok(destination.reason.length > 0);
          ok(!value.startsWith("/") && !(value.startsWith("@") && value.length > 1));
        }
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("property: the watchdog interval is half of WATCHDOG_USEC for us, else none; never a throw", () => {
  const pid = 4242;
  const number = fc.oneof(
    fc.bigInt({ min: 0n, max: 2n ** 70n }).map(String),
    fc.constantFrom("", "0", "-1", "+1", "1.5", "1e6", " 1", "1 ", "0x10", "18446744073709551615"),
    fc.string({ unit: "binary", maxLength: 12 }),
  );
  fc.assert(
    fc.property(
      fc.option(number, { nil: undefined }),
      fc.option(fc.oneof(number, fc.constant(String(pid))), { nil: undefined }),
      (usec, watchdogPid) => {
        const ms = watchdogIntervalMs(usec, watchdogPid, pid);
        const forUs = watchdogPid === undefined || watchdogPid === String(pid);
        const valid = usec !== undefined && /^\d{1,19}$/.test(usec) && BigInt(usec) > 0n;
        if (!forUs || !valid) return equal(ms, null, `${usec} ${watchdogPid}`);
        ok(ms !== null && Number.isInteger(ms) && ms >= 1, `${usec} -> ${ms}`);
        // Half the period, in ms, rounded down (at least 1 ms).
        equal(ms, Math.max(1, Math.floor(Number(usec) / 2000)));
      },
    ),
    { numRuns: 3000 },
  );
});

// ---------------------------------------------------------------------------------------------
// Garbage on a socket

/** An echo backend that also keeps every byte it received, per connection. */
function recordingEcho(): { backend: Backend; received: Uint8Array[] } {
  const received: Uint8Array[] = [];
  const backend = new Backend(Deno.listen({ hostname: "127.0.0.1", port: 0 }), async (conn) => {
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
      await writeAll(conn, buffer.subarray(0, n));
    }
    received.push(concat(chunks)); // Before the client can see the end of the echo.
    await conn.closeWrite();
  });
  return { backend, received };
}

const text = (s: string) => new TextEncoder().encode(s);

/** Byte strings that mean something to some protocol; the proxy must not care. */
const LOOKALIKES: Uint8Array[] = [
  text("PROXY TCP4 203.0.113.7 198.51.100.1 4444 80\r\n"),
  text("PROXY UNKNOWN\r\n"),
  new Uint8Array([...V2_SIGNATURE, 0x21, 0x11]),
  text("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
  text("CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n"),
  new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]), // TLS hello
  new Uint8Array([0x05, 0x01, 0x00]), // SOCKS5
  new Uint8Array([0xff, 0xfe, 0xfd, 0xc0, 0x80, 0xed, 0xa0, 0x80]), // invalid UTF-8
  new Uint8Array(4096), // NULs
  text("\x1b]0;title\x07\x1b[2J"), // terminal escapes
  text("\r\n.\r\nQUIT\r\n"),
];

const payloads = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 4096 }) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 60_000, maxLength: 200_000 }) },
    { weight: 2, arbitrary: fc.constantFrom(...LOOKALIKES) },
  ),
  { maxLength: 8 },
);

Deno.test("property: garbage on a socket is just bytes, forwarded exactly both ways", async () => {
  const { backend, received } = recordingEcho();
  const port = freePort();
  const proxy = await startLimitedProxy({
    listen: [`127.0.0.1:${port}`],
    args: [`127.0.0.1:${portOf(backend.listener.addr)}`],
  });
  let connections = 0;
  let bytes = 0;
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close(); // Starts the proxy.
    await warmUp(proxy);
    await fc.assert(
      fc.asyncProperty(payloads, async (chunks) => {
        const sent = concat(chunks);
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        const [, echoed] = await Promise.all([
          (async () => {
            for (const chunk of chunks) await writeAll(conn, chunk); // As separate writes.
            await conn.closeWrite();
          })(),
          readAll(conn),
        ]);
        conn.close();
        deepEqual(echoed, sent, "the client got back exactly what it sent");
        deepEqual(received.at(-1), sent, "the backend got exactly what the client sent");
        connections++;
        bytes += sent.length;
      }),
      // Each run is a real connection: report the first failure rather than shrink it.
      { numRuns: 150, endOnFailure: true },
    );
    ok(await proxy.running());
    report(
      `garbage on the socket: ${connections} connections of arbitrary bytes and protocol ` +
        `look-alikes, ${bytes} bytes each way, all forwarded exactly`,
    );
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test({
  name: "a client's own PROXY header is forwarded as data after the proxy's, never believed",
  fn: async () => {
    const { backend, received } = recordingEcho();
    const port = freePort();
    const proxy = await startLimitedProxy({
      listen: [`127.0.0.1:${port}`],
      args: ["--proxy-protocol=v1", `127.0.0.1:${portOf(backend.listener.addr)}`],
    });
    try {
      const spoof = text("PROXY TCP4 203.0.113.7 127.0.0.1 4444 80\r\nhello");
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, spoof);
      await conn.closeWrite();
      await readAll(conn);
      const clientPort = (conn.localAddr as Deno.NetAddr).port;
      conn.close();
      await warmUp(proxy);
      await backend.waitForAccepted(1);
      const got = new TextDecoder().decode(received.at(-1));
      const header = `PROXY TCP4 127.0.0.1 127.0.0.1 ${clientPort} ${port}\r\n`;
      equal(got, header + new TextDecoder().decode(spoof), "the real address, then the data");
    } finally {
      await proxy.stop();
      await backend.close();
    }
  },
});

/**
 * A backend in its own process, for the fault suite: so that it can be killed mid-transfer, and
 * so that its descriptors do not count against the test process's limit under load.
 *
 * usage: deno run -A tests/faults/backend.ts echo|stream [PORT]
 *
 * Listens on 127.0.0.1:PORT (0: any free port), prints "port N" on stdout, then serves every
 * connection: "echo" sends every byte back and half-closes after the client's end of stream
 * (with a small buffer per connection, so ten thousand connections stay cheap); "stream" sends
 * an endless stream of bytes whose value is their offset modulo 251.
 * @module
 */
const [mode = "echo", portText = "0"] = Deno.args;
const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(portText) });
console.log(`port ${(listener.addr as Deno.NetAddr).port}`);

/** 64 KiB of the "stream" pattern; 65536 % 251 != 0, so each write starts at its own offset. */
const PATTERN_PERIOD = 251;
const pattern = new Uint8Array(64 * 1024 + PATTERN_PERIOD);
for (let i = 0; i < pattern.length; i++) pattern[i] = i % PATTERN_PERIOD;

async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    let done = 0;
    while (done < n) done += await conn.write(buffer.subarray(done, n));
  }
  await conn.closeWrite();
}

async function stream(conn: Deno.Conn): Promise<void> {
  let offset = 0;
  for (;;) {
    const start = offset % PATTERN_PERIOD;
    offset += await conn.write(pattern.subarray(start, start + 64 * 1024));
  }
}

for await (const conn of listener) {
  (mode === "stream" ? stream(conn) : echo(conn)).catch(() => {}).finally(() => {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  });
}

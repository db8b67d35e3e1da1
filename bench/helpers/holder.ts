/**
 * Helper process of the benchmark, run with a raised fd limit.
 *
 *   serve             listen on 127.0.0.1 (port chosen by the system, printed as "ready PORT");
 *                     greet every client with "hi\n", then echo what it sends until it ends.
 *   hold PORT COUNT   open COUNT connections to 127.0.0.1:PORT, read the greeting on each, print
 *                     one JSON line {"held","failed","error","ms"}, keep them open until stdin
 *                     ends, then close them all and exit.
 * @module
 */

const GREETING = new TextEncoder().encode("hi\n");
const CONCURRENCY = 200;
const GREETING_TIMEOUT_MS = 15_000;

async function serveOne(conn: Deno.Conn): Promise<void> {
  try {
    await conn.write(GREETING);
    const buffer = new Uint8Array(1024);
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) break;
      let done = 0;
      while (done < n) done += await conn.write(buffer.subarray(done, n));
    }
  } catch {
    // The client went away.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

async function serve(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`ready ${(listener.addr as Deno.NetAddr).port}`);
  for (;;) {
    try {
      const conn = await listener.accept();
      serveOne(conn);
    } catch (e) {
      console.error(`accept: ${e}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function readGreeting(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(GREETING.length);
  let got = 0;
  const timer = setTimeout(() => conn.close(), GREETING_TIMEOUT_MS);
  try {
    while (got < buffer.length) {
      const n = await conn.read(buffer.subarray(got));
      if (n === null) throw new Error("closed before the greeting");
      got += n;
    }
  } finally {
    clearTimeout(timer);
  }
}

async function hold(port: number, count: number): Promise<void> {
  const started = performance.now();
  const conns: Deno.Conn[] = [];
  let failed = 0;
  let error = "";
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      let conn: Deno.Conn | null = null;
      try {
        conn = await Deno.connect({ hostname: "127.0.0.1", port });
        await readGreeting(conn);
        conns.push(conn);
      } catch (e) {
        failed++;
        error = String(e);
        try {
          conn?.close();
        } catch {
          // Closed by the timeout.
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, count) }, worker));
  const ms = Math.round(performance.now() - started);
  console.log(JSON.stringify({ held: conns.length, failed, error, ms }));
  for await (const _ of Deno.stdin.readable) {
    // Hold until stdin ends.
  }
  for (const c of conns) {
    try {
      c.close();
    } catch {
      // Closed by the peer.
    }
  }
}

if (import.meta.main) {
  const [mode, port, count] = Deno.args;
  if (mode === "serve") await serve();
  else if (mode === "hold") await hold(Number(port), Number(count));
  else {
    console.error("usage: holder.ts serve | hold PORT COUNT");
    Deno.exit(2);
  }
}

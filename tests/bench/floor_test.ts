import { deepEqual as assertEquals } from "node:assert/strict";
import { FLOOR, type Paths, startContender } from "../../bench/lib/services.ts";
import { rollupKiB } from "../../bench/lib/system.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** Only what the floor needs: it runs under the wrapper, and never the bundle. */
const PATHS: Paths = {
  root: ROOT,
  wrapper: `${ROOT}/systemd/socket-proxyd`,
  bundle: "/nonexistent/socket-proxyd.js",
  baseline: null,
  floor: FLOOR,
  reference: "/nonexistent/systemd-socket-proxyd",
};

async function readAll(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64);
  for (let n; (n = await conn.read(buffer)) !== null;) chunks.push(buffer.slice(0, n));
  return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
}

Deno.test("the Deno floor, under the wrapper, answers the backend's first bytes and idles", async () => {
  const backend = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await backend.accept();
    await conn.write(new TextEncoder().encode("hi\n"));
    conn.close();
  })();
  const floor = await startContender("deno-floor", (backend.addr as Deno.NetAddr).port, PATHS);
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: floor.port });
    assertEquals(await readAll(client), "hi\n");
    client.close();
    await served;
    await floor.execed();
    const memory = rollupKiB(floor.pid!);
    assertEquals(memory.anonymous > 0 && memory.rss >= memory.anonymous, true);
  } finally {
    await floor.stop();
    backend.close();
  }
});

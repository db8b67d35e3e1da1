/**
 * The Deno underneath, through the real binary: a Deno that lacks the private APIs behind the
 * fast path and the fd-exhaustion recovery gets one start-up line and forwards on the portable
 * path; a Deno that adopts a socket without serving it is refused before "Forwarding". Both are
 * stood for by a module preloaded into the real program (tests/integration/preload/).
 */
import { equal, match, ok } from "node:assert/strict";
import {
  echoBackend,
  freePort,
  pseudoRandomBytes,
  ROOT,
  roundTrip,
  startProxy,
  tempSocketPath,
} from "./harness.ts";

const PRELOAD = `${ROOT}tests/integration/preload`;

Deno.test("private APIs missing: one start-up line naming them, then TCP and Unix clients are forwarded on the portable path", async () => {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const port = freePort();
  const path = tempSocketPath("portable.sock");
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`, path],
    args: [`127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`],
    denoFlags: [`--preload=${PRELOAD}/no_private_api.ts`],
  });
  try {
    for (let round = 0; round < 2; round++) {
      const payload = pseudoRandomBytes(500_000, round + 1);
      equal((await roundTrip({ hostname: "127.0.0.1", port }, payload)).length, payload.length);
      const back = await roundTrip({ transport: "unix", path }, payload);
      ok(back.every((b, i) => b === payload[i]), "Unix bytes intact");
    }
    await proxy.waitForLog(/Forwarding 127\.0\.0\.1:/);
    const notices = proxy.stderr.split("\n").filter((line) => line.includes("private APIs"));
    equal(notices.length, 1, proxy.stderr);
    match(notices[0], /^This Deno \(2\.\d+\.\d+\) lacks private APIs that socket-proxyd uses/);
    match(notices[0], /without TCP handle takeStream\(\), TCP clients take the portable data path/);
    match(notices[0], /without Unix server handle fdForIpc\(\), a listener that runs out of file/);
    // The notice comes before the start-up line, which means it was said at start-up.
    ok(proxy.stderr.indexOf(notices[0]) < proxy.stderr.indexOf("Forwarding 127.0.0.1:"));
  } finally {
    await proxy.stop();
    await backend.close();
  }
});

Deno.test("a Deno that adopts a socket without serving it is refused by the self-test, exit 1, never 'Forwarding'", async () => {
  const port = freePort();
  const proxy = await startProxy({
    listen: [`127.0.0.1:${port}`],
    args: ["127.0.0.1:1"],
    denoFlags: [`--preload=${PRELOAD}/adopt_without_serving.ts`],
  });
  (await Deno.connect({ hostname: "127.0.0.1", port })).close(); // Starts it.
  const { code, stderr } = await proxy.exit();
  equal(code, 1);
  match(
    stderr,
    /This Deno \(2\.\d+\.\d+\) cannot serve the sockets passed in: its self-test says an adopted listening socket accepted nothing within 5000 ms\./,
  );
  ok(!stderr.includes("Forwarding"), stderr);
});

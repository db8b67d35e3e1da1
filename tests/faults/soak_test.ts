/**
 * Soak: many short connections through the real proxy, each with its own bytes checked on the
 * way back; afterwards the proxy's open descriptors are exactly what they were and, once idle,
 * its memory is back near what it was at start-up.
 *
 * The normal suite runs SOAK_CONNECTIONS (default 30,000); the long soak of a million is
 * `SOAK_CONNECTIONS=1000000 deno test -A tests/faults/soak_test.ts` (the `soak` task).
 */
import { equal, ok } from "node:assert/strict";
import { freePort } from "../integration/harness.ts";
import {
  BackendProcess,
  report,
  settledUsage,
  startLimitedProxy,
  usage,
  waitUntil,
  warmUp,
} from "./helpers.ts";
import { soak } from "./load.ts";

const CONNECTIONS = Number(Deno.env.get("SOAK_CONNECTIONS") ?? 30_000);
/**
 * Once idle, RSS comes back to within this of its value at start-up (issue 18's bound)...
 *
 * Measured (docs/benchmark.md, "Memory over a proxy's life": the wrapper over the bundle, 30,000
 * short connections then 2,000 held, interleaved rounds): RSS 30 s after the load was start-up
 * +26 to +30 MiB without the idle reclaim (glibc keeps its freed arenas), +5.8 and +6.6 MiB with
 * it, and +6.7 MiB in this test. What stays is pages of the `deno` binary that serving touched
 * (+7 MiB, clean and shared with other Deno processes; private memory is back to start-up), so
 * the bound is about 1.5 times the worst measured return, and a return that fails is the
 * reclaim not working (+16 MiB with Deno's trim alone, +25 with the GC alone).
 */
const RSS_MARGIN_KIB = 10 * 1024;
/** ...within this long after the last connection closed (the reclaim runs 1 s in). */
const SHRINK_TIMEOUT_MS = 30_000;

Deno.test(`soak: ${CONNECTIONS} short connections, every byte checked, nothing leaked`, async () => {
  const backend = await BackendProcess.start("echo");
  const port = freePort();
  const proxy = await startLimitedProxy({ listen: [`127.0.0.1:${port}`], args: [backend.target] });
  try {
    // The first connection starts the proxy: start-up is measured after it.
    equal((await soak(port, 1)).failed, 0);
    await warmUp(proxy);
    const before = await settledUsage(proxy);
    let peakKiB = before.rssKiB;
    const result = await soak(port, CONNECTIONS, {
      first: 1,
      every: 5_000,
      onProgress: () => {
        peakKiB = Math.max(peakKiB, proxy.usage().rssKiB);
      },
    });
    equal(result.failed, 0, `${result.failed} connections failed; the first: ${result.firstError}`);
    const closed = await settledUsage(proxy);
    equal(closed.fds, before.fds, "every descriptor was released");
    const shrinkMs = await waitUntil(
      () => proxy.usage().rssKiB - before.rssKiB < RSS_MARGIN_KIB,
      () => `RSS back near ${before.rssKiB} KiB (${proxy.usage().rssKiB} KiB)`,
      SHRINK_TIMEOUT_MS,
      250,
    );
    const after = proxy.usage();
    ok(await proxy.running());
    ok(usage(backend.child.pid).fds > 0);
    report(
      `soak: ${result.connections} short connections in ${result.seconds.toFixed(1)} s ` +
        `(${(result.connections / result.seconds).toFixed(0)}/s, 50 at a time), 0 failed; ` +
        `${result.bytes} bytes (${(result.bytes / 1024 / 1024).toFixed(1)} MiB) sent and the ` +
        `same checked back byte for byte (each connection its own payload of 1-4096 bytes)` +
        `; proxy fds ${before.fds} before, ${after.fds} after; RSS ` +
        `${(before.rssKiB / 1024).toFixed(1)} MiB at start-up, ${(peakKiB / 1024).toFixed(1)} ` +
        `MiB peak, ${(closed.rssKiB / 1024).toFixed(1)} MiB when closed, ` +
        `${(after.rssKiB / 1024).toFixed(1)} MiB ${(shrinkMs / 1000).toFixed(1)} s later`,
    );
  } finally {
    await proxy.stop();
    await backend.kill();
  }
});

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
 * Once idle, the proxy's anonymous memory (heaps and buffers: what it holds) comes back to within
 * this of its value at start-up (issue 18's bound)...
 *
 * Measured: with the reclaim, anonymous memory ends at or below start-up, and what stays of RSS
 * is file pages of the `deno` binary that serving touched (its optimizing compiler among them),
 * clean and shared with other Deno processes: +5 to +11 MiB over a start-up that loads little.
 * Without the reclaim glibc keeps its freed arenas (+16 MiB with Deno's trim alone, +26 to +30
 * with none). The bound is on what the reclaim returns; RSS is reported.
 */
const ANON_MARGIN_KIB = 10 * 1024;
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
      () => proxy.usage().anonKiB - before.anonKiB < ANON_MARGIN_KIB,
      () => `anonymous memory back near ${before.anonKiB} KiB (${proxy.usage().anonKiB} KiB)`,
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
        `${(after.rssKiB / 1024).toFixed(1)} MiB ${(shrinkMs / 1000).toFixed(1)} s later ` +
        `(anonymous ${(before.anonKiB / 1024).toFixed(1)} MiB at start-up, ` +
        `${(after.anonKiB / 1024).toFixed(1)} MiB then)`,
    );
  } finally {
    await proxy.stop();
    await backend.kill();
  }
});

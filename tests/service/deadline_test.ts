import { equal } from "node:assert/strict";
import { waitAtMost } from "../../src/service/deadline.ts";

Deno.test("waitAtMost: what is done first ends the wait, and no timer is left (sanitizer)", async () => {
  const started = performance.now();
  await waitAtMost(Promise.resolve(), 60_000);
  equal(performance.now() - started < 1000, true);
});

Deno.test("waitAtMost: the span ends a wait for something that never comes", async () => {
  let ended = false;
  await waitAtMost(new Promise(() => {}), 20).then(() => ended = true);
  equal(ended, true);
});

Deno.test("waitAtMost: Infinity waits for what it waits for, with no timer", async () => {
  const { promise, resolve } = Promise.withResolvers<void>();
  let ended = false;
  const waiting = waitAtMost(promise, Infinity).then(() => ended = true);
  await new Promise((r) => setTimeout(r, 30));
  equal(ended, false);
  resolve();
  await waiting;
  equal(ended, true);
});

import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import {
  ANSWER_CACHE_MS,
  FAILURE_CACHE_MS,
  MAX_CONCURRENT_LOOKUPS,
  SharedResolver,
  systemResolver,
} from "../../src/engine/resolve.ts";

/** A lookup the test answers by hand, and a clock it moves. */
function controlled() {
  const calls: Array<{ host: string; answer: (a: string[]) => void; fail: (e: Error) => void }> =
    [];
  let now = 0;
  const resolver = new SharedResolver({
    lookup: (host) =>
      new Promise((answer, fail) => {
        calls.push({ host, answer, fail });
      }),
    now: () => now,
  });
  return {
    resolver,
    calls,
    advance(ms: number) {
      now += ms;
    },
  };
}

/** Lets promise callbacks run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("SharedResolver: one lookup per name, shared by everyone who asks meanwhile", async () => {
  const { resolver, calls } = controlled();
  const asks = Array.from({ length: 40 }, () => resolver.resolve("backend.test"));
  await settle();
  equal(calls.length, 1, "40 asks, one lookup");
  calls[0].answer(["192.0.2.1", "2001:db8::1"]);
  for (const addresses of await Promise.all(asks)) {
    deepEqual(addresses, ["192.0.2.1", "2001:db8::1"]);
  }
  // Each gets its own copy: one caller's changes reach no other.
  const [a, b] = await Promise.all([
    resolver.resolve("backend.test"),
    resolver.resolve("backend.test"),
  ]);
  a.pop();
  deepEqual(b, ["192.0.2.1", "2001:db8::1"]);
});

Deno.test("SharedResolver: at most MAX_CONCURRENT_LOOKUPS run; further names wait in order", async () => {
  const { resolver, calls } = controlled();
  const names = Array.from({ length: 10 }, (_, i) => `n${i}.test`);
  const asks = names.map((name) => resolver.resolve(name));
  await settle();
  ok(MAX_CONCURRENT_LOOKUPS <= 8, "well below Deno's 32 blocking threads");
  equal(calls.length, MAX_CONCURRENT_LOOKUPS);
  deepEqual([resolver.running, resolver.queued], [
    MAX_CONCURRENT_LOOKUPS,
    10 - MAX_CONCURRENT_LOOKUPS,
  ]);
  // A second ask of a queued name joins it: no second lookup when its turn comes.
  const again = resolver.resolve("n9.test");
  for (let answered = 0; answered < names.length; answered++) {
    calls[answered].answer([`192.0.2.${answered}`]);
    await settle();
    ok(resolver.running <= MAX_CONCURRENT_LOOKUPS);
  }
  deepEqual(calls.map((call) => call.host), names, "looked up in the order asked, once each");
  deepEqual(await Promise.all(asks), names.map((_, i) => [`192.0.2.${i}`]));
  deepEqual(await again, ["192.0.2.9"]);
  deepEqual([resolver.running, resolver.queued], [0, 0]);
});

Deno.test("SharedResolver: an answer is kept for ANSWER_CACHE_MS, then looked up again", async () => {
  const { resolver, calls, advance } = controlled();
  const first = resolver.resolve("backend.test");
  await settle();
  calls[0].answer(["192.0.2.1"]);
  deepEqual(await first, ["192.0.2.1"]);
  advance(ANSWER_CACHE_MS - 1);
  deepEqual(await resolver.resolve("backend.test"), ["192.0.2.1"]);
  equal(calls.length, 1, "kept");
  advance(1);
  const later = resolver.resolve("backend.test");
  await settle();
  equal(calls.length, 2, "looked up again once kept long enough");
  calls[1].answer(["192.0.2.2"]);
  deepEqual(await later, ["192.0.2.2"], "a changed address is seen");
});

Deno.test("SharedResolver: a failure reaches every waiter and is kept for FAILURE_CACHE_MS", async () => {
  const { resolver, calls, advance } = controlled();
  const asks = [resolver.resolve("gone.test"), resolver.resolve("gone.test")];
  await settle();
  calls[0].fail(new Error("ENOTFOUND"));
  for (const ask of asks) await rejects(ask, /ENOTFOUND/);
  await rejects(resolver.resolve("gone.test"), /ENOTFOUND/);
  equal(calls.length, 1, "kept");
  advance(FAILURE_CACHE_MS);
  const retried = resolver.resolve("gone.test");
  await settle();
  equal(calls.length, 2, "tried again after FAILURE_CACHE_MS");
  calls[1].answer(["192.0.2.7"]);
  deepEqual(await retried, ["192.0.2.7"]);
});

Deno.test("SharedResolver: a failed lookup gives its place to the next", async () => {
  const resolver = new SharedResolver({
    maxConcurrent: 1,
    lookup: (host) =>
      host === "bad.test" ? Promise.reject(new Error("no")) : Promise.resolve(["192.0.2.1"]),
  });
  const [bad, good] = [resolver.resolve("bad.test"), resolver.resolve("good.test")];
  await rejects(bad, /no/);
  deepEqual(await good, ["192.0.2.1"]);
  deepEqual([resolver.running, resolver.queued], [0, 0]);
});

Deno.test("systemResolver: localhost through the system's resolver", async () => {
  const addresses = await systemResolver("localhost");
  ok(addresses.some((a) => a === "127.0.0.1" || a === "::1"), addresses.join());
});

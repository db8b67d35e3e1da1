import { deepEqual, equal, ok } from "node:assert/strict";
import { MIN_CONNECTIONS, Reclaimer, REST_MS, TRIM_VARIABLE } from "../../src/service/reclaim.ts";

/** A reclaimer on a hand-driven clock that reclaims after 3 connections. */
function harness(steps = 1) {
  const timers = new Map<number, { run: () => void; ms: number }>();
  let next = 0;
  const ran: number[] = [];
  const reclaimer = new Reclaimer({
    steps: Array.from({ length: steps }, (_, i) => () => ran.push(i)),
    minConnections: 3,
    schedule: (run, ms) => {
      timers.set(++next, { run, ms });
      return next;
    },
    cancel: (timer) => timers.delete(timer as number),
  });
  return {
    reclaimer,
    ran,
    timers,
    /** `n` connections open and close, the last leaving the proxy idle. */
    serve(n = 3) {
      for (let i = 0; i < n; i++) reclaimer.busy();
      reclaimer.idle();
    },
    /** Fires every armed timer. */
    fire() {
      const due = [...timers.values()];
      timers.clear();
      for (const t of due) t.run();
    },
  };
}

Deno.test("reclaim: runs every step, in order, once the proxy has rested", () => {
  const h = harness(2);
  h.serve();
  deepEqual([...h.timers.values()].map((t) => t.ms), [REST_MS]);
  deepEqual(h.ran, []);
  h.fire();
  deepEqual(h.ran, [0, 1]);
  equal(h.timers.size, 0, "nothing is armed again: no periodic work");
});

Deno.test("reclaim: a connection before the rest is over cancels it", () => {
  const h = harness();
  h.serve();
  h.reclaimer.busy();
  equal(h.timers.size, 0);
  h.fire();
  deepEqual(h.ran, []);
  h.reclaimer.idle(); // Idle again: the rest starts over, the connections still count.
  h.fire();
  deepEqual(h.ran, [0]);
});

Deno.test("reclaim: going idle twice keeps one timer", () => {
  const h = harness();
  h.serve();
  h.reclaimer.idle();
  equal(h.timers.size, 1);
  h.fire();
  deepEqual(h.ran, [0]);
});

Deno.test("reclaim: not while something else is open (datagram sessions beside connections)", () => {
  let open = 1;
  const ran: number[] = [];
  const timers: Array<() => void> = [];
  const reclaimer = new Reclaimer({
    steps: [() => ran.push(0)],
    minConnections: 1,
    atRest: () => open === 0,
    schedule: (run) => timers.push(run),
    cancel: () => {},
  });
  reclaimer.busy();
  reclaimer.idle(); // The connections are done, but a session is still open.
  equal(timers.length, 0, "nothing armed while a session is open");
  open = 0;
  reclaimer.idle(); // The last session ended.
  equal(timers.length, 1);
  timers[0]();
  deepEqual(ran, [0]);
});

Deno.test("reclaim: rested (open sessions silent) reclaims at once, once enough came", () => {
  const h = harness();
  h.reclaimer.busy();
  h.reclaimer.rested();
  deepEqual(h.ran, [], "1 of 3: too few came");
  h.reclaimer.busy();
  h.reclaimer.busy();
  h.reclaimer.idle(); // Armed by connections going idle: the rest reported cancels it.
  h.reclaimer.rested();
  deepEqual(h.ran, [0]);
  equal(h.timers.size, 0, "no timer left armed");
  h.reclaimer.rested();
  deepEqual(h.ran, [0], "counted again from the reclaim");
});

Deno.test("reclaim: skipped until enough connections came since the last one", () => {
  const h = harness();
  h.serve(2);
  equal(h.timers.size, 0, "2 of 3 connections: nothing armed");
  h.serve(1);
  h.fire();
  deepEqual(h.ran, [0], "the third one");
  h.serve(2);
  equal(h.timers.size, 0, "counted again from the reclaim");
  h.serve(1);
  h.fire();
  deepEqual(h.ran, [0, 0]);
  equal(MIN_CONNECTIONS, 100);
});

Deno.test("reclaim: memory held (a spare buffer) makes the next rest reclaim however few came", () => {
  const h = harness();
  h.serve(1);
  equal(h.timers.size, 0, "1 of 3 connections: nothing armed");
  h.reclaimer.busy();
  h.reclaimer.held();
  h.reclaimer.idle();
  h.fire();
  deepEqual(h.ran, [0], "2 of 3, but memory was held");
  h.serve(1);
  equal(h.timers.size, 0, "held no more after the reclaim");
});

Deno.test("reclaim: what is kept for reuse is let go first, before the steps", () => {
  const order: string[] = [];
  const timers: Array<() => void> = [];
  const reclaimer = new Reclaimer({
    steps: [() => order.push("trim")],
    minConnections: 1,
    schedule: (run) => timers.push(run),
    cancel: () => {},
  });
  reclaimer.willReclaim(() => order.push("spares"));
  reclaimer.busy();
  reclaimer.idle();
  deepEqual(order, [], "nothing before the rest");
  timers[0]();
  deepEqual(order, ["spares", "trim"]);
});

Deno.test("reclaim: without steps nothing is ever armed", () => {
  const h = harness(0);
  h.serve();
  equal(h.timers.size, 0);
});

Deno.test("reclaim: the real timer fires", async () => {
  let ran = false;
  const reclaimer = new Reclaimer({ steps: [() => ran = true], restMs: 10, minConnections: 1 });
  reclaimer.busy();
  reclaimer.idle();
  await new Promise((resolve) => setTimeout(resolve, 50));
  ok(ran);
});

Deno.test("reclaim: the trim step's signal is never fatal, whether Deno trims on it or not", async () => {
  const module = new URL("../../src/service/reclaim.ts", import.meta.url).href;
  const code = `import { trimStep } from "${module}";
    const trim = trimStep();
    trim();
    trim();
    await new Promise((resolve) => setTimeout(resolve, 200));
    console.log("alive");`;
  const envs: Record<string, string>[] = [{}, { [TRIM_VARIABLE]: "1" }];
  for (const env of envs) {
    const { code: status, stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env,
      stdout: "piped",
    }).output();
    equal(status, 0, JSON.stringify(env));
    equal(new TextDecoder().decode(stdout), "alive\n");
  }
});

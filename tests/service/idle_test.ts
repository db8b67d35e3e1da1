import { deepEqual, equal, ok } from "node:assert/strict";
import { IdleTimer } from "../../src/service/idle.ts";
import type { Clock } from "../../src/service/timer.ts";

const MS = 1000; // microseconds per millisecond

/** An IdleTimer whose next firing can be awaited. */
function watched(spanUsec: number) {
  let fired = 0;
  let waiter = Promise.withResolvers<number>();
  const timer = new IdleTimer(spanUsec, () => {
    fired++;
    waiter.resolve(performance.now());
    waiter = Promise.withResolvers<number>();
  });
  return {
    timer,
    get fired() {
      return fired;
    },
    /** Resolves with performance.now() at the next firing. */
    next: () => waiter.promise,
  };
}

// ---------------------------------------------------------------------------------------------
// Real timers, short spans

Deno.test("IdleTimer: fires once the span has passed, not before", async () => {
  const w = watched(30 * MS);
  const armed = performance.now();
  w.timer.arm();
  const at = await w.next();
  ok(at - armed >= 30, `fired after ${at - armed} ms`);
  equal(w.fired, 1);
});

Deno.test("IdleTimer: keeps its span", () => {
  equal(new IdleTimer(1234, () => {}).spanUsec, 1234);
});

Deno.test("IdleTimer: disarm stops it from firing", async () => {
  const w = watched(10 * MS);
  w.timer.arm();
  w.timer.disarm();
  // A second, longer timer is the witness that the first one's span has long passed.
  const witness = watched(40 * MS);
  witness.timer.arm();
  await witness.next();
  equal(w.fired, 0);
});

Deno.test("IdleTimer: disarm without arm, and twice, is harmless", () => {
  const w = watched(10 * MS);
  w.timer.disarm();
  w.timer.disarm();
  equal(w.fired, 0);
});

Deno.test("IdleTimer: re-arming restarts the span", async () => {
  const w = watched(60 * MS);
  w.timer.arm();
  const halfway = watched(30 * MS);
  halfway.timer.arm();
  await halfway.next();
  const rearmed = performance.now();
  w.timer.arm();
  const at = await w.next();
  ok(at - rearmed >= 60, `fired ${at - rearmed} ms after re-arming`);
  equal(w.fired, 1);
});

Deno.test("IdleTimer: can be armed again after it fired, and after disarm", async () => {
  const w = watched(15 * MS);
  w.timer.arm();
  await w.next();
  w.timer.arm();
  await w.next();
  equal(w.fired, 2);
  w.timer.arm();
  w.timer.disarm();
  w.timer.arm();
  await w.next();
  equal(w.fired, 3);
});

Deno.test("IdleTimer: fires only once per arm", async () => {
  const w = watched(10 * MS);
  w.timer.arm();
  await w.next();
  const witness = watched(40 * MS);
  witness.timer.arm();
  await witness.next();
  equal(w.fired, 1);
});

Deno.test("IdleTimer: a zero span fires right away", async () => {
  const w = watched(0);
  const fired = w.next();
  w.timer.arm();
  await fired;
  equal(w.fired, 1);
});

Deno.test("IdleTimer: a sub-millisecond span fires", async () => {
  const w = watched(1);
  // A span this short may already be over when arm() checks it, and fire within arm().
  const fired = w.next();
  w.timer.arm();
  await fired;
  equal(w.fired, 1);
});

Deno.test("IdleTimer: an infinite span never fires and leaves no timer behind", () => {
  // The test sanitizer fails this test if arm() left a timer pending.
  const w = watched(Infinity);
  w.timer.arm();
  w.timer.arm();
  equal(w.fired, 0);
});

Deno.test("IdleTimer: onIdle may re-arm the timer", async () => {
  let count = 0;
  const done = Promise.withResolvers<void>();
  const timer: IdleTimer = new IdleTimer(5 * MS, () => {
    if (++count < 3) timer.arm();
    else done.resolve();
  });
  timer.arm();
  await done.promise;
  equal(count, 3);
});

// ---------------------------------------------------------------------------------------------
// A fake clock, for exact deadlines and spans longer than one timer can wait

interface FakeTimer {
  at: number;
  fn: () => void;
}

/** A clock whose time moves only when the test says. */
function fakeClock() {
  let now = 1_000_000;
  let nextId = 1;
  const timers = new Map<number, FakeTimer>();
  const delays: number[] = [];
  const clock: Clock = {
    now: () => now,
    after(delay, fn) {
      delays.push(delay);
      const id = nextId++;
      timers.set(id, { at: now + Math.max(1, delay), fn });
      return () => timers.delete(id);
    },
  };
  return {
    clock,
    get pending() {
      return timers.size;
    },
    delays,
    /** Moves the clock forward by `ms`, running every timer that comes due, in order. */
    advance(ms: number) {
      const end = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= end)
          .sort((a, b) => a[1].at - b[1].at || a[0] - b[0]);
        if (due.length === 0) break;
        const [id, t] = due[0];
        timers.delete(id);
        now = t.at;
        t.fn();
      }
      now = end;
    },
  };
}

Deno.test("IdleTimer (fake clock): fires exactly at the deadline", () => {
  const time = fakeClock();
  let fired = 0;
  const timer = new IdleTimer(1000 * MS, () => fired++, time.clock);
  timer.arm();
  time.advance(999);
  equal(fired, 0);
  time.advance(1);
  equal(fired, 1);
  equal(time.pending, 0);
  time.advance(10_000);
  equal(fired, 1);
});

Deno.test("IdleTimer (fake clock): disarmed, its pending timer fires nothing; armed again, the whole span is waited", () => {
  const time = fakeClock();
  let fired = 0;
  const timer = new IdleTimer(1000 * MS, () => fired++, time.clock);
  timer.arm();
  time.advance(500);
  timer.disarm();
  time.advance(10_000);
  equal(fired, 0);
  equal(time.pending, 0, "the timer came due and set no other");
  timer.arm();
  time.advance(999);
  equal(fired, 0);
  time.advance(1);
  equal(fired, 1);
});

Deno.test("IdleTimer (fake clock): re-arming restarts the span and keeps one timer", () => {
  const time = fakeClock();
  let fired = 0;
  const timer = new IdleTimer(1000 * MS, () => fired++, time.clock);
  timer.arm();
  time.advance(600);
  timer.disarm();
  timer.arm();
  equal(time.pending, 1);
  time.advance(600);
  equal(fired, 0);
  equal(time.pending, 1, "the first timer came due and waits for what is left");
  time.advance(399);
  equal(fired, 0);
  time.advance(1);
  equal(fired, 1);
  // Armed and disarmed at every connection, a thousand times: still one timer at most.
  for (let i = 0; i < 1000; i++) {
    timer.arm();
    timer.disarm();
  }
  ok(time.pending <= 1);
});

Deno.test("IdleTimer (fake clock): fractional milliseconds are waited out", () => {
  const time = fakeClock();
  let fired = 0;
  const timer = new IdleTimer(1500, () => fired++, time.clock); // 1.5 ms
  timer.arm();
  time.advance(1);
  equal(fired, 0);
  time.advance(1);
  equal(fired, 1);
  // Rounded up to one 2 ms timeout, not a 1 ms one followed by a busy 0 ms one.
  deepEqual(time.delays, [2]);
});

Deno.test("IdleTimer (fake clock): spans beyond a timer's 2^31-1 ms are waited in steps", () => {
  const time = fakeClock();
  const thirtyDaysMs = 30 * 86_400_000;
  ok(thirtyDaysMs > 2 ** 31 - 1);
  let fired = 0;
  const timer = new IdleTimer(thirtyDaysMs * MS, () => fired++, time.clock);
  timer.arm();
  time.advance(thirtyDaysMs - 1);
  equal(fired, 0);
  time.advance(1);
  equal(fired, 1);
  deepEqual(time.delays, [2 ** 31 - 1, thirtyDaysMs - (2 ** 31 - 1)]);
});

Deno.test("IdleTimer (fake clock): the largest span does not overflow a timer", () => {
  const time = fakeClock();
  let fired = 0;
  const timer = new IdleTimer(Number.MAX_SAFE_INTEGER, () => fired++, time.clock);
  timer.arm();
  equal(time.delays[0], 2 ** 31 - 1);
  time.advance(100 * 86_400_000);
  equal(fired, 0);
});

Deno.test("IdleTimer (fake clock): Infinity schedules nothing", () => {
  const time = fakeClock();
  const timer = new IdleTimer(Infinity, () => {
    throw new Error("must not fire");
  }, time.clock);
  timer.arm();
  equal(time.pending, 0);
  equal(time.delays.length, 0);
});

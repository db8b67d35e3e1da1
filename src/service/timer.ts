/**
 * The program's timers. In Deno 2.9 the global `setTimeout` is `node:timers`'s: its first call
 * loads Deno's Node compatibility layer, which cost the start-up 25-55 ms and 3 MiB (1.3 MiB of
 * it anonymous) here, measured in one run against `AbortSignal.timeout`, which is Deno's own web
 * timer and costs about 1 ms. A proxy's first timer is armed before its first client is served,
 * so every timer of the program is one of these.
 *
 * Nothing cancels an `AbortSignal.timeout`: a cancelled timer drops its callback at once, but
 * stays armed, a few dozen bytes, until its time. Timers armed again and again over long spans
 * keep one pending instead (see `idle.ts`). Like Deno's own timers, a pending one keeps the
 * process alive: the program ends with `Deno.exit` (`main.ts`), whatever is pending.
 * @module
 */

/** Cancels a timer; harmless once it has run. */
export type Cancel = () => void;

/** The longest delay a timer takes (about 24.8 days); a longer one is cut to it. */
export const MAX_DELAY_MS = 2 ** 31 - 1;

/** Runs `run` once, after `ms` milliseconds. */
export function after(ms: number, run: () => void): Cancel {
  let task: (() => void) | null = run;
  const delay = Math.min(Math.max(0, Math.ceil(ms)), MAX_DELAY_MS);
  AbortSignal.timeout(delay).addEventListener("abort", () => {
    const due = task;
    task = null;
    due?.();
  }, { once: true });
  return () => task = null;
}

/** Runs `run` every `ms` milliseconds, until cancelled (one timer pending at a time). */
export function every(ms: number, run: () => void): Cancel {
  let live = true;
  let cancel: Cancel = () => {};
  const tick = () => {
    cancel = after(ms, () => {
      if (!live) return;
      tick();
      run();
    });
  };
  tick();
  return () => {
    live = false;
    cancel();
  };
}

/** What time-keeping code needs of time; tests give their own. */
export interface Clock {
  /** The time in milliseconds. */
  now(): number;
  /** Calls `fn` after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): Cancel;
}

/** The real clock: `performance.now()` and {@link after}. */
export const REAL_CLOCK: Clock = { now: () => performance.now(), after };

import { deepEqual, equal } from "node:assert/strict";
import { REPEAT_WINDOW_MS, StopSignals } from "../../src/service/signals.ts";

/** The actions for signals at these times, on one judge. */
const actions = (times: number[], windowMs?: number) => {
  const signals = new StopSignals(windowMs);
  return times.map((t) => signals.receive(t));
};

Deno.test("StopSignals: the first signal stops", () => {
  equal(REPEAT_WINDOW_MS, 1000);
  deepEqual(actions([0]), ["stop"]);
  deepEqual(actions([123456.789]), ["stop"]);
});

Deno.test("StopSignals: copies within the window are ignored, however many", () => {
  deepEqual(actions([5000, 5000, 5000.2, 5003, 5999.9]), ["stop", "copy", "copy", "copy", "copy"]);
});

Deno.test("StopSignals: a signal after the window exits at once, and so does every later one", () => {
  deepEqual(actions([5000, 6000]), ["stop", "exit"]);
  deepEqual(actions([5000, 5001, 7000, 7000.5]), ["stop", "copy", "exit", "exit"]);
});

Deno.test("StopSignals: the window counts from the first signal, not from the last copy", () => {
  deepEqual(actions([0, 600, 900, 1100]), ["stop", "copy", "copy", "exit"]);
});

Deno.test("StopSignals: another window", () => {
  deepEqual(actions([0, 49, 50], 50), ["stop", "copy", "exit"]);
  deepEqual(actions([0, 0], 0), ["stop", "exit"]);
});

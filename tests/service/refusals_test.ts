import { deepEqual, equal } from "node:assert/strict";
import { type Level, setLogWriter, writerFor } from "../../src/service/log.ts";
import { REFUSAL_LOG_WAIT_MS, Refusals } from "../../src/service/refusals.ts";

/** Closing a client: records when it is refused, among the other events. */
function client(events: string[], name: string): () => void {
  return () => events.push(`closed ${name}`);
}

/** A log writer whose flush resolves only when the test says the line is written. */
function slowWriter(events: string[]) {
  let written = Promise.withResolvers<void>();
  return {
    write: (_level: Level, message: string) => events.push(`logged ${message}`),
    flush: () => written.promise,
    finish() {
      events.push("written");
      written.resolve();
      written = Promise.withResolvers<void>();
    },
  };
}

Deno.test("Refusals: a logged refusal's client is closed only once its line is written", async () => {
  const events: string[] = [];
  const writer = slowWriter(events);
  setLogWriter(writer);
  try {
    const refusals = new Refusals();
    refusals.refuse(client(events, "first"), "full", () => "Hit connection limit, refusing");
    await Promise.resolve();
    deepEqual(events, ["logged Hit connection limit, refusing"], "not closed yet");
    // A refusal within the second is held back, and its client closed at once.
    refusals.refuse(client(events, "second"), "full", () => "never built");
    deepEqual(events.at(-1), "closed second");
    writer.finish();
    await new Promise((resolve) => setTimeout(resolve, 0));
    deepEqual(events, [
      "logged Hit connection limit, refusing",
      "closed second",
      "written",
      "closed first",
    ]);
    refusals.flush();
    deepEqual(
      events.at(-1),
      "logged Hit connection limit: 1 more connection(s) refused since the last message.",
    );
  } finally {
    setLogWriter(writerFor("stderr"));
  }
});

Deno.test("Refusals: a line that is never written costs its client a bounded wait", async () => {
  const events: string[] = [];
  setLogWriter(slowWriter(events)); // Never finished.
  try {
    const started = performance.now();
    const closed = Promise.withResolvers<void>();
    new Refusals().refuse(
      () => closed.resolve(),
      "source",
      () => "Hit per-source connection limit",
    );
    await closed.promise;
    const waited = performance.now() - started;
    equal(waited >= REFUSAL_LOG_WAIT_MS - 5, true, `closed after ${waited} ms`);
  } finally {
    setLogWriter(writerFor("stderr"));
  }
});

Deno.test("Refusals: counted by reason, described for status and stop lines", () => {
  setLogWriter({ write: () => {}, flush: () => Promise.resolve() });
  try {
    const refusals = new Refusals();
    equal(refusals.describe(), "");
    const none: string[] = [];
    for (let i = 0; i < 3; i++) refusals.refuse(client(none, "f"), "full", () => "full");
    refusals.refuse(client(none, "s"), "source", () => "source");
    equal(refusals.count("full"), 3);
    equal(refusals.count("source"), 1);
    equal(refusals.total, 4);
    equal(
      refusals.describe(),
      "4 refused (3 over --connections-max, 1 over --connections-per-source)",
    );
    refusals.flush();
  } finally {
    setLogWriter(writerFor("stderr"));
  }
});

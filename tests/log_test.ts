import { deepEqual, equal } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import { configureLog, formatLine, type Level, log, PRIORITY, Throttle } from "../src/log.ts";

// ---------------------------------------------------------------------------------------------
// Throttle

Deno.test("Throttle: the first hit is reported, with nothing held back", () => {
  equal(new Throttle(1000).hit(0), 0);
  equal(new Throttle(1000).hit(123456), 0);
  equal(new Throttle(1000).hit(-5000), 0);
});

Deno.test("Throttle: hits within the interval are held back and counted", () => {
  const t = new Throttle(1000);
  equal(t.hit(0), 0);
  equal(t.hit(1), null);
  equal(t.hit(500), null);
  equal(t.hit(999), null);
  equal(t.hit(999.999), null);
  equal(t.hit(1000), 4); // the interval has passed: report, with the 4 held back
  equal(t.hit(1500), null);
  equal(t.hit(2001), 1);
  equal(t.hit(5000), 0);
});

Deno.test("Throttle: the interval counts from the last report, not the last hit", () => {
  const t = new Throttle(100);
  equal(t.hit(0), 0);
  for (let now = 10; now < 100; now += 10) equal(t.hit(now), null);
  equal(t.hit(100), 9);
  equal(t.hit(150), null);
  equal(t.hit(199), null);
  equal(t.hit(200), 2);
});

Deno.test("Throttle: a zero interval reports every hit", () => {
  const t = new Throttle(0);
  for (let i = 0; i < 5; i++) equal(t.hit(42), 0);
});

Deno.test("Throttle: intervalMs is kept", () => {
  equal(new Throttle(250).intervalMs, 250);
});

Deno.test("Throttle: without an argument it uses performance.now()", () => {
  const t = new Throttle(60_000);
  equal(t.hit(), 0);
  equal(t.hit(), null);
  equal(t.hit(), null);
  // A report far in the future of performance.now() carries the two held back.
  equal(t.hit(performance.now() + 60_000), 2);
});

Deno.test("Throttle: independent instances do not share state", () => {
  const a = new Throttle(1000);
  const b = new Throttle(1000);
  equal(a.hit(0), 0);
  equal(b.hit(1), 0);
  equal(a.hit(2), null);
  equal(b.hit(3), null);
});

Deno.test("property: Throttle reports at most once per interval and loses no hit", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 1000 }),
      fc.array(fc.integer({ min: 0, max: 500 }), { minLength: 1, maxLength: 200 }),
      (interval, gaps) => {
        const t = new Throttle(interval);
        let now = 0;
        let lastReport = -Infinity;
        let reported = 0;
        let held = 0;
        for (const gap of gaps) {
          now += gap;
          const result = t.hit(now);
          if (now - lastReport >= interval) {
            equal(result, held);
            reported += 1 + held;
            held = 0;
            lastReport = now;
          } else {
            equal(result, null);
            held++;
          }
        }
        equal(reported + held, gaps.length);
      },
    ),
    { numRuns: 1000 },
  );
});

// ---------------------------------------------------------------------------------------------
// formatLine(), log() and configureLog()

Deno.test("PRIORITY: syslog numbers", () => {
  deepEqual(PRIORITY, { error: 3, warning: 4, info: 6, debug: 7 });
});

Deno.test("formatLine: one line, newlines flattened, optional syslog prefix", () => {
  equal(formatLine("info", "plain", false), "plain");
  equal(formatLine("info", "two\nlines\n", false), "two lines ");
  equal(formatLine("error", "e", true), "<3>e");
  equal(formatLine("warning", "w", true), "<4>w");
  equal(formatLine("info", "i", true), "<6>i");
  equal(formatLine("debug", "a\nb", true), "<7>a b");
  equal(formatLine("info", "", false), "");
});

Deno.test("property: formatLine never yields more than one line", () => {
  fc.assert(
    fc.property(
      fc.constantFrom<Level>("error", "warning", "info", "debug"),
      fc.string({ unit: "binary" }),
      fc.boolean(),
      (level, message, journal) => {
        const line = formatLine(level, message, journal);
        equal(line.includes("\n"), false);
        equal(line, (journal ? `<${PRIORITY[level]}>` : "") + message.replaceAll("\n", " "));
      },
    ),
  );
});

/** Runs `fn` while capturing what is written to stderr; restores the default configuration. */
function captureStderr(fn: () => void): string[] {
  const lines: string[] = [];
  const stderr = Deno.stderr as { writeSync(p: Uint8Array): number };
  const hadOwn = Object.hasOwn(stderr, "writeSync");
  const original = stderr.writeSync;
  stderr.writeSync = (p: Uint8Array) => {
    lines.push(new TextDecoder().decode(p));
    return p.length;
  };
  try {
    fn();
  } finally {
    if (hadOwn) stderr.writeSync = original;
    else delete (stderr as Partial<typeof stderr>).writeSync;
    configureLog("info", false);
  }
  return lines;
}

Deno.test("log: one write per message, newlines flattened (default: info, no prefix)", () => {
  const lines = captureStderr(() => {
    log("debug", "not shown");
    log("error", "plain");
    log("info", "two\nlines\n");
  });
  deepEqual(lines, ["plain\n", "two lines \n"]);
});

Deno.test("configureLog: every threshold", () => {
  const all: Level[] = ["error", "warning", "info", "debug"];
  const expected: Record<Level, string[]> = {
    error: ["error\n"],
    warning: ["error\n", "warning\n"],
    info: ["error\n", "warning\n", "info\n"],
    debug: ["error\n", "warning\n", "info\n", "debug\n"],
  };
  for (const level of all) {
    const lines = captureStderr(() => {
      configureLog(level, false);
      for (const l of all) log(l, l);
    });
    deepEqual(lines, expected[level], level);
  }
});

Deno.test("configureLog: journal lines carry the syslog priority", () => {
  const lines = captureStderr(() => {
    configureLog("debug", true);
    log("error", "e");
    log("warning", "w\nx");
    log("info", "i");
    log("debug", "d");
  });
  deepEqual(lines, ["<3>e\n", "<4>w x\n", "<6>i\n", "<7>d\n"]);
});

Deno.test("log: never throws, even when stderr fails", () => {
  const stderr = Deno.stderr as { writeSync(p: Uint8Array): number };
  const hadOwn = Object.hasOwn(stderr, "writeSync");
  const original = stderr.writeSync;
  stderr.writeSync = () => {
    throw new Deno.errors.BrokenPipe("gone");
  };
  try {
    log("error", "lost");
  } finally {
    if (hadOwn) stderr.writeSync = original;
    else delete (stderr as Partial<typeof stderr>).writeSync;
  }
});

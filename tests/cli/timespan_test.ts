import { equal, fail, match, ok, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import { formatTimespan, MAX_SPAN_USEC, parseTimespan } from "../../src/cli/timespan.ts";
import { throwsRange } from "../assert.ts";

/** Every unit name of systemd's parse_sec(), with its size in microseconds. */
const SYSTEMD_UNITS: ReadonlyArray<[string, number]> = [
  ["usec", 1],
  ["us", 1],
  ["\u00b5s", 1],
  ["\u03bcs", 1],
  ["msec", 1_000],
  ["ms", 1_000],
  ["seconds", 1_000_000],
  ["second", 1_000_000],
  ["sec", 1_000_000],
  ["s", 1_000_000],
  ["minutes", 60_000_000],
  ["minute", 60_000_000],
  ["min", 60_000_000],
  ["m", 60_000_000],
  ["hours", 3_600_000_000],
  ["hour", 3_600_000_000],
  ["hr", 3_600_000_000],
  ["h", 3_600_000_000],
  ["days", 86_400_000_000],
  ["day", 86_400_000_000],
  ["d", 86_400_000_000],
  ["weeks", 604_800_000_000],
  ["week", 604_800_000_000],
  ["w", 604_800_000_000],
  ["months", 2_629_800_000_000],
  ["month", 2_629_800_000_000],
  ["M", 2_629_800_000_000],
  ["years", 31_557_600_000_000],
  ["year", 31_557_600_000_000],
  ["y", 31_557_600_000_000],
];

// ---------------------------------------------------------------------------------------------
// parseTimespan: units

Deno.test("parseTimespan: every systemd unit name, with and without a space before it", () => {
  for (const [unit, size] of SYSTEMD_UNITS) {
    equal(parseTimespan(`1${unit}`), size, `1${unit}`);
    equal(parseTimespan(`3${unit}`), 3 * size, `3${unit}`);
    equal(parseTimespan(`3 ${unit}`), 3 * size, `3 ${unit}`);
    equal(parseTimespan(`0${unit}`), 0, `0${unit}`);
  }
});

Deno.test("parseTimespan: both micro signs (U+00B5 and U+03BC) mean microseconds", () => {
  equal(parseTimespan("7\u00b5s"), 7);
  equal(parseTimespan("7\u03bcs"), 7);
  equal(parseTimespan("7 \u00b5s"), 7);
  equal(parseTimespan("1.5ms 7\u03bcs"), 1507);
});

Deno.test("parseTimespan: a number without a unit is in seconds", () => {
  equal(parseTimespan("0"), 0);
  equal(parseTimespan("1"), 1_000_000);
  equal(parseTimespan("30"), 30_000_000);
  equal(parseTimespan("007"), 7_000_000);
  equal(parseTimespan("1.5"), 1_500_000);
});

Deno.test("parseTimespan: units are case-sensitive: M is months, m is minutes", () => {
  equal(parseTimespan("1M"), 2_629_800_000_000);
  equal(parseTimespan("1m"), 60_000_000);
  throwsRange(
    () => parseTimespan("1S"),
    'Invalid time span "1S": unknown unit "S" (use us, ms, s, min, h, d, w, M, y)',
  );
  throwsRange(
    () => parseTimespan("1H"),
    'Invalid time span "1H": unknown unit "H" (use us, ms, s, min, h, d, w, M, y)',
  );
  throwsRange(
    () => parseTimespan("1Min"),
    'Invalid time span "1Min": unknown unit "Min" (use us, ms, s, min, h, d, w, M, y)',
  );
});

Deno.test("parseTimespan: unknown units and unit-like suffixes are rejected", () => {
  const unknown = (text: string, unit: string) =>
    throwsRange(
      () => parseTimespan(text),
      `Invalid time span "${text}": unknown unit "${unit}" (use us, ms, s, min, h, d, w, M, y)`,
    );
  unknown("5x", "x");
  unknown("5mins", "mins");
  unknown("5secs", "secs");
  unknown("5hrs", "hrs");
  unknown("5ns", "ns");
  unknown("5nsec", "nsec");
  unknown("1e3s", "e");
  unknown("5s-3", "s-");
  unknown("5min 3foo", "foo");
  unknown("0x10", "x");
  unknown("5,5s", ",");
});

// ---------------------------------------------------------------------------------------------
// parseTimespan: combinations, fractions, whitespace

Deno.test("parseTimespan: components add up, with or without spaces between them", () => {
  equal(parseTimespan("5min 20s"), 320_000_000);
  equal(parseTimespan("5min20s"), 320_000_000);
  equal(parseTimespan("5min  \t 20s"), 320_000_000);
  equal(parseTimespan("1h 1min 1s 1ms 1us"), 3_661_001_001);
  equal(parseTimespan("1y 1M 1w 1d"), 31_557_600e6 + 2_629_800e6 + 604_800e6 + 86_400e6);
  equal(parseTimespan("2d3h"), 2 * 86_400e6 + 3 * 3_600e6);
  // The same unit twice adds up too, as in systemd.
  equal(parseTimespan("1s 1s"), 2_000_000);
  // A bare number after a unit is seconds; two bare numbers add up.
  equal(parseTimespan("1min 5"), 65_000_000);
  equal(parseTimespan("5s5"), 10_000_000);
  equal(parseTimespan("5 5"), 10_000_000);
});

Deno.test("parseTimespan: fractions of every unit", () => {
  equal(parseTimespan("1.5h"), 5_400_000_000);
  equal(parseTimespan("1.5s"), 1_500_000);
  equal(parseTimespan(".5s"), 500_000);
  equal(parseTimespan("0.5s"), 500_000);
  equal(parseTimespan(".5"), 500_000);
  equal(parseTimespan("0.25min"), 15_000_000);
  equal(parseTimespan("2.5ms"), 2_500);
  equal(parseTimespan("0.001s"), 1_000);
  equal(parseTimespan("0.000001s"), 1);
  equal(parseTimespan("1.1s"), 1_100_000);
  equal(parseTimespan("2.3h"), 8_280_000_000);
  equal(parseTimespan("0.5d"), 43_200_000_000);
  equal(parseTimespan("1.5s.5"), 2_000_000); // "1.5s" then ".5" (seconds)
  equal(parseTimespan("12.34 .56"), 12_900_000); // systemd accepts this one explicitly
  equal(parseTimespan("12.34s.56"), 12_900_000); // ...and this one
});

Deno.test("parseTimespan: fractions finer than a microsecond are truncated, not rounded", () => {
  equal(parseTimespan("1.5us"), 1);
  equal(parseTimespan("0.9us"), 0);
  equal(parseTimespan("0.0000009s"), 0);
  equal(parseTimespan("1.0000019s"), 1_000_001);
  equal(parseTimespan("0.9999999s"), 999_999);
});

// BUG (src/cli/timespan.ts): the fraction is computed as Number(frac) * factor / 10 ** frac.length in
// floating point; with 16 or more digits Number(frac) rounds up to 10 ** frac.length and a span
// just below a whole unit becomes the whole unit. systemd adds digit by digit in integers and
// gets 999999.
Deno.test("parseTimespan: a fraction never rounds up to the next whole unit", () => {
  equal(parseTimespan("0.9999999999999999s"), 999_999);
  equal(parseTimespan("0.9999999999999999us"), 0);
  equal(parseTimespan("1.99999999999999999999h"), 7_199_999_999);
});

// BUG (src/cli/timespan.ts): a fraction of more than 308 digits makes Number(frac) and 10 ** length
// both Infinity, their quotient NaN, and the span is then reported as "too large".
Deno.test("parseTimespan: a long fraction is a valid (small) span, not 'too large'", () => {
  equal(parseTimespan(`0.${"5".repeat(400)}s`), 555_555);
  equal(parseTimespan(`1.${"0".repeat(400)}s`), 1_000_000);
});

// BUG (src/cli/timespan.ts): "12.34.56" parses as 12.34s + .56s; systemd's parse_time() rejects it
// ("Don't allow '12.34.56', but accept '12.34 .56' or '12.34s.56'").
Deno.test("parseTimespan: a second fraction right after a fraction is rejected, as in systemd", () => {
  throws(() => parseTimespan("12.34.56"), RangeError);
  throws(() => parseTimespan("1.2.3s"), RangeError);
  throws(() => parseTimespan("0.0.0"), RangeError);
});

Deno.test("parseTimespan: whitespace around and inside is allowed", () => {
  equal(parseTimespan("  5s  "), 5_000_000);
  equal(parseTimespan("\t5s\n"), 5_000_000);
  equal(parseTimespan("5 s"), 5_000_000);
  equal(parseTimespan("5\ts"), 5_000_000);
  equal(parseTimespan("1.5 h"), 5_400_000_000);
  equal(parseTimespan(" 1 min 30 s "), 90_000_000);
});

Deno.test("parseTimespan: infinity", () => {
  equal(parseTimespan("infinity"), Infinity);
  equal(parseTimespan("  infinity\t"), Infinity);
  throwsRange(
    () => parseTimespan("Infinity"),
    'Invalid time span "Infinity": expected a number at "Infinity"',
  );
  throwsRange(
    () => parseTimespan("inf"),
    'Invalid time span "inf": expected a number at "inf"',
  );
  throwsRange(
    () => parseTimespan("infinity 5s"),
    'Invalid time span "infinity 5s": expected a number at "infinity 5s"',
  );
  throwsRange(
    () => parseTimespan("5s infinity"),
    'Invalid time span "5s infinity": expected a number at "infinity"',
  );
});

// ---------------------------------------------------------------------------------------------
// parseTimespan: errors

Deno.test("parseTimespan: empty and blank input", () => {
  throwsRange(() => parseTimespan(""), 'Invalid time span "": it is empty');
  throwsRange(() => parseTimespan("   "), 'Invalid time span "   ": it is empty');
  throwsRange(() => parseTimespan("\t\n"), 'Invalid time span "\t\n": it is empty');
});

Deno.test("parseTimespan: negative spans are rejected", () => {
  throwsRange(() => parseTimespan("-5s"), 'Invalid time span "-5s": expected a number at "-5s"');
  throwsRange(() => parseTimespan("-0"), 'Invalid time span "-0": expected a number at "-0"');
  throwsRange(() => parseTimespan(" -1"), 'Invalid time span " -1": expected a number at "-1"');
  throws(() => parseTimespan("5s -1s"), RangeError);
});

Deno.test("parseTimespan: a unit without a number, a lone dot, a trailing dot", () => {
  throwsRange(() => parseTimespan("s"), 'Invalid time span "s": expected a number at "s"');
  throwsRange(() => parseTimespan("min"), 'Invalid time span "min": expected a number at "min"');
  throwsRange(() => parseTimespan("."), 'Invalid time span ".": expected a number at "."');
  throwsRange(() => parseTimespan("5."), 'Invalid time span "5.": expected a number at "."');
  throwsRange(() => parseTimespan("5.s"), 'Invalid time span "5.s": expected a number at ".s"');
  throwsRange(() => parseTimespan("5. 1"), 'Invalid time span "5. 1": expected a number at ". 1"');
  throwsRange(() => parseTimespan("5s s"), 'Invalid time span "5s s": expected a number at "s"');
  throwsRange(() => parseTimespan("+5s"), 'Invalid time span "+5s": expected a number at "+5s"');
});

Deno.test("parseTimespan: the largest span and overflow", () => {
  equal(MAX_SPAN_USEC, Number.MAX_SAFE_INTEGER);
  equal(parseTimespan(`${MAX_SPAN_USEC}us`), MAX_SPAN_USEC);
  equal(parseTimespan("285y"), 285 * 31_557_600e6);
  const tooLarge = (text: string) =>
    throwsRange(
      () => parseTimespan(text),
      `Invalid time span "${text}": too large (use "infinity")`,
    );
  tooLarge(`${MAX_SPAN_USEC + 1}us`);
  tooLarge("9007199254740993us");
  tooLarge("286y");
  tooLarge("300y");
  tooLarge("285y 1y");
  tooLarge("99999999999999999999999s");
  tooLarge(`${"9".repeat(400)}s`); // Number() of this is Infinity
  tooLarge(`${MAX_SPAN_USEC}us 1us`);
});

// ---------------------------------------------------------------------------------------------
// formatTimespan

Deno.test("formatTimespan: systemd-style output", () => {
  equal(formatTimespan(320_000_000), "5min 20s");
  equal(formatTimespan(1), "1us");
  equal(formatTimespan(999), "999us");
  equal(formatTimespan(1_000), "1ms");
  equal(formatTimespan(1_500), "1ms 500us");
  equal(formatTimespan(1_000_000), "1s");
  equal(formatTimespan(60_000_000), "1min");
  equal(formatTimespan(3_600_000_000), "1h");
  equal(formatTimespan(3_600_000_001), "1h 1us");
  equal(formatTimespan(86_400e6), "1d");
  equal(formatTimespan(604_800e6), "1w");
  equal(formatTimespan(2_629_800e6), "1month");
  equal(formatTimespan(31_557_600e6), "1y");
  equal(formatTimespan(3_661_001_001), "1h 1min 1s 1ms 1us");
  equal(formatTimespan(MAX_SPAN_USEC), "285y 5month 1d 13h 17min 34s 740ms 991us");
});

Deno.test("formatTimespan: zero, negative, infinity, fractions", () => {
  equal(formatTimespan(0), "0");
  equal(formatTimespan(-1), "0");
  equal(formatTimespan(-Infinity), "0");
  equal(formatTimespan(Infinity), "infinity");
  equal(formatTimespan(1.5), "1us");
  equal(formatTimespan(1_000_000.9), "1s");
});

// BUG (src/cli/timespan.ts): formatTimespan floors its input (1.5 → "1us") but 0 < usec < 1 floors to
// 0 after the `usec <= 0` test, so no part is printed and the result is "", which does not parse.
Deno.test("formatTimespan: less than a microsecond formats as 0", () => {
  equal(formatTimespan(0.5), "0");
});

// ---------------------------------------------------------------------------------------------
// Properties

Deno.test("property: parseTimespan(formatTimespan(x)) === x for every integer span", () => {
  fc.assert(
    fc.property(fc.maxSafeNat(), (x) => {
      equal(parseTimespan(formatTimespan(x)), x);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.nat({ max: 10_000_000 }), (x) => {
      equal(parseTimespan(formatTimespan(x)), x);
    }),
    { numRuns: 2000 },
  );
  equal(parseTimespan(formatTimespan(Infinity)), Infinity);
});

Deno.test("property: formatTimespan prints descending units, each below the next larger", () => {
  const order = ["y", "month", "w", "d", "h", "min", "s", "ms", "us"];
  const limit: Record<string, number> = {
    month: 12,
    w: 5,
    d: 7,
    h: 24,
    min: 60,
    s: 60,
    ms: 1000,
    us: 1000,
  };
  fc.assert(
    fc.property(fc.integer({ min: 1, max: MAX_SPAN_USEC }), (x) => {
      const text = formatTimespan(x);
      match(text, /^\d+[a-z]+( \d+[a-z]+)*$/);
      let last = -1;
      for (const part of text.split(" ")) {
        const [, n, unit] = /^(\d+)([a-z]+)$/.exec(part)!;
        const index = order.indexOf(unit);
        ok(index > last, `${text}: units out of order`);
        last = index;
        ok(Number(n) >= 1, `${text}: zero component`);
        if (unit in limit) ok(Number(n) < limit[unit], `${text}: ${part} should carry over`);
      }
    }),
    { numRuns: 1000 },
  );
});

Deno.test("property: sums of whole components parse to their exact total", () => {
  const component = fc.tuple(fc.nat({ max: 100_000 }), fc.constantFrom(...SYSTEMD_UNITS, null));
  fc.assert(
    fc.property(
      fc.array(component, { minLength: 1, maxLength: 6 }),
      fc.constantFrom(" ", "  ", "\t"),
      (components, space) => {
        let expected = 0n;
        const text = components.map(([n, unit], i) => {
          expected += BigInt(n) * BigInt(unit === null ? 1_000_000 : unit[1]);
          // Without a unit the next number would run into this one, so separate it.
          const sep = i === 0 ? "" : (components[i - 1][1] === null ? space : "");
          return `${sep}${n}${unit === null ? "" : unit[0]}`;
        }).join("");
        if (expected <= BigInt(MAX_SPAN_USEC)) {
          equal(parseTimespan(text), Number(expected), text);
        } else {
          throwsRange(
            () => parseTimespan(text),
            `Invalid time span "${text}": too large (use "infinity")`,
          );
        }
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("property: any string parses to a whole span or throws a RangeError naming it", () => {
  const tokens = [
    ..."0123456789",
    ".",
    " ",
    "\t",
    "-",
    "+",
    "e",
    "x",
    "\u00b5",
    ...SYSTEMD_UNITS.map(([u]) => u),
    "infinity",
  ];
  const check = (text: string) => {
    let value: number;
    try {
      value = parseTimespan(text);
    } catch (e) {
      if (!(e instanceof RangeError)) fail(`${JSON.stringify(text)} threw ${e}`);
      ok(e.message.startsWith(`Invalid time span "${text}": `), e.message);
      return;
    }
    ok(
      value === Infinity || (Number.isSafeInteger(value) && value >= 0),
      `${JSON.stringify(text)} → ${value}`,
    );
  };
  fc.assert(fc.property(fc.string({ unit: "binary", maxLength: 40 }), check), {
    numRuns: 2000,
  });
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...tokens), { maxLength: 12 }).map((a) => a.join("")),
      check,
    ),
    { numRuns: 3000 },
  );
});

/**
 * A model of systemd's parse_time(text, USEC_PER_SEC) (src/basic/time-util.c) in exact integer
 * arithmetic, for ASCII input without signs: the span in microseconds, or null if invalid. Each
 * component is floored to whole microseconds on its own, as in systemd.
 */
function systemdParseSec(text: string): bigint | "infinity" | null {
  const units: ReadonlyArray<[string, bigint]> = [
    ["seconds", 1_000_000n],
    ["second", 1_000_000n],
    ["sec", 1_000_000n],
    ["s", 1_000_000n],
    ["minutes", 60_000_000n],
    ["minute", 60_000_000n],
    ["min", 60_000_000n],
    ["months", 2_629_800_000_000n],
    ["month", 2_629_800_000_000n],
    ["M", 2_629_800_000_000n],
    ["msec", 1_000n],
    ["ms", 1_000n],
    ["m", 60_000_000n],
    ["hours", 3_600_000_000n],
    ["hour", 3_600_000_000n],
    ["hr", 3_600_000_000n],
    ["h", 3_600_000_000n],
    ["days", 86_400_000_000n],
    ["day", 86_400_000_000n],
    ["d", 86_400_000_000n],
    ["weeks", 604_800_000_000n],
    ["week", 604_800_000_000n],
    ["w", 604_800_000_000n],
    ["years", 31_557_600_000_000n],
    ["year", 31_557_600_000_000n],
    ["y", 31_557_600_000_000n],
    ["usec", 1n],
    ["us", 1n],
    ["\u03bcs", 1n],
    ["\u00b5s", 1n],
  ];
  const isSpace = (c: string | undefined) => c !== undefined && " \t\n\r".includes(c);
  const isDigit = (c: string | undefined) => c !== undefined && c >= "0" && c <= "9";
  let p = 0;
  while (isSpace(text[p])) p++;
  if (text.startsWith("infinity", p)) {
    let s = p + "infinity".length;
    while (isSpace(text[s])) s++;
    return s === text.length ? "infinity" : null;
  }
  let total = 0n;
  let something = false;
  for (;;) {
    let multiplier = 1_000_000n;
    while (isSpace(text[p])) p++;
    if (p === text.length) return something ? total : null;
    if (text[p] === "-") return null;
    let e = p;
    while (isDigit(text[e])) e++;
    const l = e === p ? 0n : BigInt(text.slice(p, e));
    if (l > 2n ** 63n - 1n) return null; // strtoll: ERANGE
    if (text[e] === ".") {
      p = e + 1;
      while (isDigit(text[p])) p++;
    } else if (e === p) {
      return null;
    } else {
      p = e;
    }
    let s = p;
    while (isSpace(text[s])) s++;
    const unit = units.find(([name]) => text.startsWith(name, s));
    if (unit !== undefined) {
      multiplier = unit[1];
      s += unit[0].length;
    }
    if (s === p && s !== text.length) return null;
    p = s;
    total += l * multiplier;
    something = true;
    if (text[e] === ".") {
      let b = e + 1;
      while (isDigit(text[b])) b++;
      if (b === e + 1) return null;
      // systemd truncates digit by digit (multiplier / 10, / 100, ... in integers), which can
      // lose a few microseconds on long fractions; the model floors the exact value instead.
      const digits = text.slice(e + 1, b);
      total += (BigInt(digits) * multiplier) / 10n ** BigInt(digits.length);
    }
  }
}

// Fails while the fraction bugs above are present (e.g. "0.0.0", "0.9999999999999999s", and
// "0.5us 0.5us", where the implementation sums the fractions before flooring and gets 1).
Deno.test("property: parseTimespan agrees with systemd's parse_time()", () => {
  const tokens = [
    ..."0123456789",
    "0",
    "1",
    "5",
    "9",
    ".",
    ".",
    " ",
    "\t",
    "s",
    "ms",
    "us",
    "\u00b5s",
    "min",
    "m",
    "h",
    "hr",
    "d",
    "w",
    "M",
    "y",
    "sec",
    "month",
    "x",
  ];
  fc.assert(
    fc.property(
      fc.array(fc.constantFrom(...tokens), { minLength: 1, maxLength: 24 }).map((a) => a.join("")),
      (text) => {
        const expected = systemdParseSec(text);
        if (expected === "infinity") {
          equal(parseTimespan(text), Infinity);
        } else if (expected === null || expected > BigInt(MAX_SPAN_USEC)) {
          throws(() => parseTimespan(text), RangeError, JSON.stringify(text));
        } else {
          equal(parseTimespan(text), Number(expected), JSON.stringify(text));
        }
      },
    ),
    { numRuns: 5000 },
  );
});

Deno.test("the systemd parse_time() model used above is itself right", () => {
  // Sanity checks of the model itself.
  equal(systemdParseSec("5s"), 5_000_000n);
  equal(systemdParseSec(" 5s "), 5_000_000n);
  equal(systemdParseSec("5min20s"), 320_000_000n);
  equal(systemdParseSec(" 5min 20s"), 320_000_000n);
  equal(systemdParseSec("11.1"), 11_100_000n);
  equal(systemdParseSec(".3 infinity"), null);
  equal(systemdParseSec(" .5"), 500_000n);
  equal(systemdParseSec("12.34.56"), null);
  equal(systemdParseSec("12.34 .56"), 12_900_000n);
  equal(systemdParseSec("12.34s.56"), 12_900_000n);
  equal(systemdParseSec("3.sec"), null);
  equal(systemdParseSec("3. 1"), null);
  equal(systemdParseSec("."), null);
  equal(systemdParseSec(""), null);
  equal(systemdParseSec("infinity"), "infinity");
  equal(systemdParseSec("0.9999999999999999s"), 999_999n);
  equal(systemdParseSec("0.5us 0.5us"), 0n);
  equal(systemdParseSec("1.99999999999999999999h"), 7_199_999_999n);
});

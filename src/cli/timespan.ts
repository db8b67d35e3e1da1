/**
 * Time spans in the syntax of systemd.time(7): "500ms", "5min 20s", "1.5h", "infinity".
 *
 * Pure parsing and formatting; spans are carried as microseconds, like systemd's usec_t.
 * @module
 */

/** Microseconds per unit name, as systemd's parse_sec() knows them. */
const UNITS: ReadonlyMap<string, number> = new Map([
  ["usec", 1],
  ["us", 1],
  ["\u00b5s", 1], // micro sign
  ["\u03bcs", 1], // Greek small letter mu
  ["msec", 1e3],
  ["ms", 1e3],
  ["seconds", 1e6],
  ["second", 1e6],
  ["sec", 1e6],
  ["s", 1e6],
  ["minutes", 60e6],
  ["minute", 60e6],
  ["min", 60e6],
  ["m", 60e6],
  ["hours", 3600e6],
  ["hour", 3600e6],
  ["hr", 3600e6],
  ["h", 3600e6],
  ["days", 86400e6],
  ["day", 86400e6],
  ["d", 86400e6],
  ["weeks", 604800e6],
  ["week", 604800e6],
  ["w", 604800e6],
  ["months", 2629800e6],
  ["month", 2629800e6],
  ["M", 2629800e6],
  ["years", 31557600e6],
  ["year", 31557600e6],
  ["y", 31557600e6],
]);

/** The largest finite span accepted, in microseconds (about 285 years). */
export const MAX_SPAN_USEC = Number.MAX_SAFE_INTEGER;

const COMPONENT = /^\s*(\d*)(?:\.(\d+))?(\s*)([^\d\s.]*)/;

/**
 * Parses a systemd time span; a number without a unit is in seconds.
 *
 * @returns the span in whole microseconds, or `Infinity` for "infinity".
 * @throws {RangeError} naming the input when it is not a valid span.
 */
export function parseTimespan(text: string): number {
  const trimmed = text.trim();
  if (trimmed === "infinity") return Infinity;
  if (trimmed === "") throw new RangeError(`Invalid time span "${text}": it is empty`);
  let rest = trimmed;
  let total = 0n; // Exact arithmetic: fractions must not round up to the next unit.
  while (rest !== "") {
    const m = COMPONENT.exec(rest);
    const [whole, int, frac, space, unit] = m ?? ["", "", undefined, "", ""];
    if (whole.trim() === "" || (int === "" && frac === undefined)) {
      throw new RangeError(`Invalid time span "${text}": expected a number at "${rest.trim()}"`);
    }
    const after = rest.slice(whole.length);
    if (frac !== undefined && unit === "" && space === "" && /^\.\d/.test(after)) {
      throw new RangeError(`Invalid time span "${text}": a number has two decimal points`);
    }
    const factor = unit === "" ? 1e6 : UNITS.get(unit);
    if (factor === undefined) {
      throw new RangeError(
        `Invalid time span "${text}": unknown unit "${unit}" (use us, ms, s, min, h, d, w, M, y)`,
      );
    }
    const f = BigInt(factor);
    total += BigInt(int || "0") * f;
    if (frac !== undefined) total += (BigInt(frac) * f) / 10n ** BigInt(frac.length);
    rest = after;
  }
  if (total > BigInt(MAX_SPAN_USEC)) {
    throw new RangeError(`Invalid time span "${text}": too large (use "infinity")`);
  }
  return Number(total);
}

const FORMAT_UNITS: ReadonlyArray<[string, number]> = [
  ["y", 31557600e6],
  ["month", 2629800e6],
  ["w", 604800e6],
  ["d", 86400e6],
  ["h", 3600e6],
  ["min", 60e6],
  ["s", 1e6],
  ["ms", 1e3],
  ["us", 1],
];

/** Formats microseconds the way systemd prints spans, e.g. 320000000 → "5min 20s". */
export function formatTimespan(usec: number): string {
  if (usec === Infinity) return "infinity";
  if (!(usec >= 1)) return "0";
  const parts: string[] = [];
  let rest = Math.floor(usec);
  for (const [name, size] of FORMAT_UNITS) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${name}`);
      rest %= size;
    }
  }
  return parts.join(" ");
}

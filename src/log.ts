/**
 * Logging: one line per event on stderr, where systemd collects it into the journal.
 * @module
 */

/** Severities, with their syslog priority numbers. */
export const PRIORITY = { error: 3, warning: 4, info: 6, debug: 7 } as const;

/** A severity name. */
export type Level = keyof typeof PRIORITY;

const encoder = new TextEncoder();
let threshold: number = PRIORITY.info;
let prefixed = false;

/**
 * Sets the least severe level that is still written (default: info), and whether lines carry
 * a syslog priority prefix such as "<4>", which the journal understands (set `journal` when
 * stderr is connected to it, i.e. JOURNAL_STREAM is set).
 */
export function configureLog(level: Level, journal: boolean): void {
  threshold = PRIORITY[level];
  prefixed = journal;
}

/** Whether lines at `level` are written: check before building a costly message. */
export function logs(level: Level): boolean {
  return PRIORITY[level] <= threshold;
}

/** Formats one log line (without the newline). */
export function formatLine(level: Level, message: string, journal: boolean): string {
  const line = message.replaceAll("\n", " ");
  return journal ? `<${PRIORITY[level]}>${line}` : line;
}

/** Writes one line at `level`, if that level is enabled; never throws. */
export function log(level: Level, message: string): void {
  if (!logs(level)) return;
  try {
    Deno.stderr.writeSync(encoder.encode(`${formatLine(level, message, prefixed)}\n`));
  } catch {
    // Nowhere left to report to.
  }
}

/**
 * Lets a repeated event through at most once per `intervalMs`, counting what it held back, so a
 * flood (say, of refused connections) cannot flood the log.
 */
export class Throttle {
  #last = -Infinity;
  #held = 0;

  constructor(readonly intervalMs: number) {}

  /**
   * Records one occurrence.
   * @returns null to stay quiet, or the number of occurrences held back since the last report.
   */
  hit(now: number = performance.now()): number | null {
    if (now - this.#last < this.intervalMs) {
      this.#held++;
      return null;
    }
    const held = this.#held;
    this.#last = now;
    this.#held = 0;
    return held;
  }
}

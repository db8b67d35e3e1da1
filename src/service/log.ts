/**
 * Logging: one line per event, to wherever it is safe to write.
 *
 * Usually that is stderr, which systemd connects to the journal. But with `Accept=yes` and
 * `StandardInput=socket`, stderr is the client's connection: a line written there would reach
 * the client as if the backend had sent it. So {@link logDestination} decides at start-up, from
 * what stderr is: the journal's stream (JOURNAL_STREAM names it), something else that is not a
 * socket (a terminal, a pipe, a file), or a socket that is not the journal's, which is never
 * written to; lines then go to the journal's native socket, or nowhere.
 *
 * Writing never blocks the proxy: lines are queued and written asynchronously, and when the
 * reader falls behind by more than {@link MAX_QUEUED_BYTES} further lines are dropped and
 * counted, then reported once writing catches up. Until the destination is known (it takes an
 * fstat(2), see {@link DeferredWriter}), lines are held.
 * @module
 */
import { after, type Clock, REAL_CLOCK } from "./timer.ts";

import { DatagramSender } from "./unixgram.ts";

/** Severities, with their syslog priority numbers. */
export const PRIORITY = { error: 3, warning: 4, info: 6, debug: 7 } as const;

/** A severity name. */
export type Level = keyof typeof PRIORITY;

/** The journal's socket for its native protocol. */
export const JOURNAL_SOCKET = "/run/systemd/journal/socket";

/** Lines waiting for a slow reader, at most; further ones are dropped and counted. */
export const MAX_QUEUED_BYTES = 64 * 1024;

/** Datagrams waiting for the journal, at most; further ones are dropped and counted. */
export const MAX_DATAGRAMS_QUEUED = 64;

/** How long the journal may take to accept one datagram before it is left alone for a while. */
export const JOURNAL_SEND_TIMEOUT_MS = 50;

/** How long the journal is left alone after it did not take a datagram. */
export const JOURNAL_PAUSE_MS = 1000;

/** The identifier the journal shows for our lines (SYSLOG_IDENTIFIER=). */
export const IDENTIFIER = "socket-proxyd";

/** What fstat(2) says about a file descriptor, as far as logging cares. */
export interface FdIdentity {
  readonly socket: boolean;
  readonly dev: number;
  readonly ino: number;
}

/**
 * Where log lines go:
 * - "journal-stream": stderr is the journal's stream; lines carry a syslog prefix such as "<4>";
 * - "stderr": plain lines on stderr (a terminal, pipe or file);
 * - "journal-socket": stderr must not be written to; lines go to {@link JOURNAL_SOCKET}.
 */
export type Destination = "journal-stream" | "stderr" | "journal-socket";

/**
 * Decides where log lines go, from what stderr is (null when it is not open) and JOURNAL_STREAM
 * ("DEV:INODE" of the journal's stream, which a service's stderr inherits or not).
 */
export function logDestination(
  stderr: FdIdentity | null,
  journalStream: string | undefined,
): Destination {
  const match = /^(\d+):(\d+)$/.exec(journalStream ?? "");
  if (
    stderr !== null && match !== null && Number(match[1]) === stderr.dev &&
    Number(match[2]) === stderr.ino
  ) {
    return "journal-stream";
  }
  // A socket that is not the journal's is most likely a client's connection. A closed stderr
  // is no better: the next socket opened could take its number.
  return stderr === null || stderr.socket ? "journal-socket" : "stderr";
}

/** What {@link oneLine} rewrites: control characters, bidirectional overrides, backslashes. */
const UNSAFE = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/gu;

/**
 * A message as one line that is safe to show: a newline becomes a space, and every other control
 * character (C0, DEL, C1) or bidirectional override becomes an escape (`\x1b`, `\u202e`).
 * Messages carry what clients chose (a Unix client's socket name, say), which must never move a
 * terminal's cursor, recolour a line or fake one. Backslashes stay as they are: systemd's own
 * escapes in unit and file names (`socket-proxyd@-run-app\x2da.sock.socket`) read as the operator
 * wrote them, at the price that `\x1b` in a line may be those four characters.
 */
export function oneLine(message: string): string {
  return message.replace(UNSAFE, (c) => {
    if (c === "\n") return " ";
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** Formats one log line for a stream (without the newline). */
export function formatLine(level: Level, message: string, prefixed: boolean): string {
  const line = oneLine(message);
  return prefixed ? `<${PRIORITY[level]}>${line}` : line;
}

/** Formats one entry of the journal's native protocol. */
export function journalEntry(level: Level, message: string): string {
  return `PRIORITY=${PRIORITY[level]}\nSYSLOG_IDENTIFIER=${IDENTIFIER}\n` +
    `MESSAGE=${oneLine(message)}\n`;
}

/** Takes log lines and writes them out asynchronously. */
export interface LogWriter {
  /** Queues one line; never blocks or throws. */
  write(level: Level, message: string): void;
  /** Resolves once everything queued so far has been written or given up on. */
  flush(): Promise<void>;
}

const encoder = new TextEncoder();

function dropped(count: number, where: string): string {
  return `${count} log line(s) dropped: ${where} did not keep up.`;
}

/**
 * Writes lines to a stream, one write at a time: lines that arrive meanwhile are written
 * together by the next one.
 */
export class StreamWriter implements LogWriter {
  #queue: string[] = [];
  #queued = 0;
  #dropped = 0;
  #writing: Promise<void> | null = null;
  #broken = false;

  /**
   * @param stream where to write: `Deno.stderr`, or a stand-in in tests.
   * @param prefixed whether lines carry a syslog priority prefix (for the journal's stream).
   */
  constructor(
    readonly stream: { write(data: Uint8Array): Promise<number> },
    readonly prefixed: boolean,
  ) {}

  write(level: Level, message: string): void {
    if (this.#broken) return;
    const line = `${formatLine(level, message, this.prefixed)}\n`;
    if (this.#queued + line.length > MAX_QUEUED_BYTES) {
      this.#dropped++;
      return;
    }
    this.#queue.push(line);
    this.#queued += line.length;
    this.#writing ??= this.#drain();
  }

  flush(): Promise<void> {
    return this.#writing ?? Promise.resolve();
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0 && !this.#broken) {
      const data = encoder.encode(this.#queue.join(""));
      this.#queue = [];
      this.#queued = 0;
      try {
        for (let done = 0; done < data.length;) {
          done += await this.stream.write(data.subarray(done));
        }
      } catch {
        this.#broken = true; // Nowhere left to report to.
      }
      if (this.#dropped > 0 && this.#queue.length === 0) {
        this.#queue.push(
          `${formatLine("warning", dropped(this.#dropped, "stderr"), this.prefixed)}\n`,
        );
        this.#dropped = 0;
      }
    }
    this.#writing = null;
  }
}

/**
 * Sends lines to the journal by its native protocol, as datagrams, one at a time. A journal that
 * does not take one within {@link JOURNAL_SEND_TIMEOUT_MS} (or is not there) is left alone for
 * {@link JOURNAL_PAUSE_MS}: the lines queued and written meanwhile are counted, and the count is
 * sent first when lines go out again.
 */
export class JournalWriter implements LogWriter {
  #queue: Uint8Array[] = [];
  #dropped = 0;
  #pausedUntil = -Infinity;
  #sending: Promise<void> | null = null;

  /**
   * @param send sends one datagram to the journal: `DatagramSender.send`, or a stand-in.
   * @param now the clock, in milliseconds (tests pass their own).
   */
  constructor(
    readonly send: (data: Uint8Array) => Promise<void>,
    readonly now: () => number = () => performance.now(),
  ) {}

  write(level: Level, message: string): void {
    if (this.#queue.length >= MAX_DATAGRAMS_QUEUED || this.now() < this.#pausedUntil) {
      this.#dropped++;
      return;
    }
    if (this.#dropped > 0) {
      this.#queue.push(
        encoder.encode(journalEntry("warning", dropped(this.#dropped, "the journal"))),
      );
      this.#dropped = 0;
    }
    this.#queue.push(encoder.encode(journalEntry(level, message)));
    this.#sending ??= this.#drain();
  }

  flush(): Promise<void> {
    return this.#sending ?? Promise.resolve();
  }

  async #drain(): Promise<void> {
    for (let data = this.#queue.shift(); data !== undefined; data = this.#queue.shift()) {
      try {
        await this.send(data);
      } catch {
        this.#dropped += 1 + this.#queue.length;
        this.#queue = [];
        this.#pausedUntil = this.now() + JOURNAL_PAUSE_MS;
      }
    }
    this.#sending = null;
  }
}

/** Lines held until the destination is known, at most; further ones are dropped and counted. */
export const MAX_HELD_LINES = 1000;

/**
 * Holds lines until {@link DeferredWriter.settle} says where they go, then passes them on in
 * order. Finding out costs start-up time (see `stdio.ts`), so it is done after the first
 * client is served, or when something must be written out (at exit).
 */
export class DeferredWriter implements LogWriter {
  #held: Array<[Level, string]> = [];
  #dropped = 0;
  #target: LogWriter | null = null;
  #settling: Promise<void> | null = null;

  /** @param decide finds the writer the lines go to. */
  constructor(readonly decide: () => Promise<LogWriter>) {}

  write(level: Level, message: string): void {
    if (this.#target !== null) return this.#target.write(level, message);
    if (this.#held.length < MAX_HELD_LINES) this.#held.push([level, message]);
    else this.#dropped++;
  }

  /** Decides where lines go (once), and passes on what was held. */
  settle(): Promise<void> {
    return this.#settling ??= this.decide().then((target) => {
      for (const [level, message] of this.#held) target.write(level, message);
      if (this.#dropped > 0) target.write("warning", dropped(this.#dropped, "start-up"));
      this.#held = [];
      this.#target = target;
    });
  }

  async flush(): Promise<void> {
    await this.settle();
    await this.#target!.flush();
  }
}

/** A writer for `destination`, on this process's stderr or the journal's socket. */
export function writerFor(destination: Destination): LogWriter {
  if (destination !== "journal-socket") {
    return new StreamWriter(Deno.stderr, destination === "journal-stream");
  }
  const sender = new DatagramSender("journal");
  return new JournalWriter((data) => sender.send(JOURNAL_SOCKET, data, JOURNAL_SEND_TIMEOUT_MS));
}

let threshold: number = PRIORITY.info;
let writer: LogWriter = writerFor("stderr");

/** Sets where lines go (default: plain lines on stderr). */
export function setLogWriter(to: LogWriter): void {
  writer = to;
}

/** Sets the least severe level that is still written (default: info). */
export function setLogLevel(level: Level): void {
  threshold = PRIORITY[level];
}

/** Whether lines at `level` are written: check before building a costly message. */
export function logs(level: Level): boolean {
  return PRIORITY[level] <= threshold;
}

/** Writes one line at `level`, if that level is enabled; never blocks or throws. */
export function log(level: Level, message: string): void {
  if (logs(level)) writer.write(level, message);
}

/**
 * Waits until what has been logged is written, for at most `timeoutMs`: call before exiting.
 * A stuck stderr then costs the exit that long, and never the proxy while it serves.
 */
export async function flushLog(timeoutMs: number): Promise<void> {
  let cancel = () => {};
  await Promise.race([
    writer.flush(),
    new Promise<void>((resolve) => cancel = after(timeoutMs, resolve)),
  ]);
  cancel();
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
    return this.report(now);
  }

  /**
   * Reports now, whether or not the interval has passed (say, when it ends with hits held).
   * @returns the number of occurrences held back since the last report.
   */
  report(now: number = performance.now()): number {
    const held = this.#held;
    this.#last = now;
    this.#held = 0;
    return held;
  }

  /** The number of occurrences held back since the last report. */
  get held(): number {
    return this.#held;
  }

  /** When the current interval ends: the earliest time the next hit is reported. */
  get nextReport(): number {
    return this.#last + this.intervalMs;
  }
}

/**
 * The log line of a repeated event (a refused connection, a failed connect), written at most
 * once per interval. The occurrences held back are not lost: when the interval ends, one line
 * says how many there were ({@link ThrottledLog.flush} says it at once, say at stop), so every
 * occurrence shows in the log within one interval.
 */
export class ThrottledLog {
  readonly #throttle: Throttle;
  #cancel: (() => void) | null = null;

  /**
   * @param level the level of both kinds of line.
   * @param summary the line for `held` occurrences held back since the last line.
   */
  constructor(
    readonly level: Level,
    intervalMs: number,
    readonly summary: (held: number) => string,
    readonly clock: Clock = REAL_CLOCK,
  ) {
    this.#throttle = new Throttle(intervalMs);
  }

  /**
   * Records one occurrence, and writes `message()` unless an interval is running.
   * @returns whether the line was written (queued to the log writer).
   */
  hit(message: () => string): boolean {
    const held = this.#throttle.hit(this.clock.now());
    if (held === null) {
      this.#cancel ??= this.clock.after(
        Math.max(0, this.#throttle.nextReport - this.clock.now()),
        () => {
          this.#cancel = null;
          this.#report();
        },
      );
      return false;
    }
    if (held > 0) log(this.level, this.summary(held)); // The timer was late.
    this.#cancel?.();
    this.#cancel = null;
    log(this.level, message());
    return true;
  }

  /** Writes the count held back now, if there is one. */
  flush(): void {
    this.#cancel?.();
    this.#cancel = null;
    if (this.#throttle.held > 0) this.#report();
  }

  #report(): void {
    const held = this.#throttle.report(this.clock.now());
    if (held > 0) log(this.level, this.summary(held));
  }
}

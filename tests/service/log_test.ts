import { deepEqual, equal, fail, ok } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import type { Clock } from "../../src/service/timer.ts";
import {
  DeferredWriter,
  type Destination,
  type FdIdentity,
  formatLine,
  JOURNAL_PAUSE_MS,
  JOURNAL_SEND_TIMEOUT_MS,
  journalEntry,
  JournalWriter,
  type Level,
  log,
  logDestination,
  type LogWriter,
  MAX_DATAGRAMS_QUEUED,
  MAX_HELD_LINES,
  MAX_QUEUED_BYTES,
  oneLine,
  PRIORITY,
  setLogLevel,
  setLogWriter,
  StreamWriter,
  Throttle,
  ThrottledLog,
  writerFor,
} from "../../src/service/log.ts";

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

Deno.test("Throttle: report() reports at once, and starts a new interval", () => {
  const t = new Throttle(1000);
  equal(t.hit(0), 0);
  equal(t.hit(10), null);
  equal(t.hit(20), null);
  equal(t.held, 2);
  equal(t.nextReport, 1000);
  equal(t.report(500), 2);
  equal(t.held, 0);
  equal(t.nextReport, 1500);
  equal(t.hit(1400), null);
  equal(t.hit(1500), 1);
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
// formatLine(), journalEntry(), logDestination()

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
        equal(line, (journal ? `<${PRIORITY[level]}>` : "") + oneLine(message));
      },
    ),
  );
});

Deno.test("oneLine: control characters and bidirectional overrides are escaped, backslashes kept", () => {
  // A Unix client's abstract name as the reproduction chose it.
  equal(
    oneLine("client @\0evil\x1b[31mred\r\x1b[0mFAKE"),
    "client @\\x00evil\\x1b[31mred\\x0d\\x1b[0mFAKE",
  );
  equal(oneLine("a\tb\x7fc\x9bd\u202ee\u2066f"), "a\\x09b\\x7fc\\x9bd\\u202ee\\u2066f");
  equal(
    oneLine("socket-proxyd@-run-spx\\x2da.sock.socket"),
    "socket-proxyd@-run-spx\\x2da.sock.socket",
  );
  equal(oneLine("two\nlines"), "two lines");
  equal(oneLine("plain é ✓ 中"), "plain é ✓ 中");
  equal(
    journalEntry("warning", "\x1b[2J"),
    "PRIORITY=4\nSYSLOG_IDENTIFIER=socket-proxyd\nMESSAGE=\\x1b[2J\n",
  );
});

Deno.test("property: a formatted line holds no control character; a message without one is kept as it is", () => {
  const unsafe = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/u;
  fc.assert(
    fc.property(fc.string({ unit: "binary" }), (message) => {
      const line = formatLine("info", message, true);
      equal(unsafe.test(line), false, JSON.stringify(line));
      if (!unsafe.test(message)) equal(line, `<6>${message}`);
    }),
  );
});

Deno.test("journalEntry: the native protocol's fields, one line of message", () => {
  equal(
    journalEntry("warning", "a\nb"),
    "PRIORITY=4\nSYSLOG_IDENTIFIER=socket-proxyd\nMESSAGE=a b\n",
  );
  equal(journalEntry("debug", ""), "PRIORITY=7\nSYSLOG_IDENTIFIER=socket-proxyd\nMESSAGE=\n");
});

const pipe: FdIdentity = { socket: false, dev: 14, ino: 1234 };
const socket: FdIdentity = { socket: true, dev: 8, ino: 99 };

Deno.test("logDestination: every case", () => {
  const cases: Array<[FdIdentity | null, string | undefined, Destination]> = [
    // The journal's own stream: prefixed lines on stderr.
    [socket, "8:99", "journal-stream"],
    [pipe, "14:1234", "journal-stream"],
    // A socket that is not the journal's (a client's connection under Accept=yes): never.
    [socket, undefined, "journal-socket"],
    [socket, "8:98", "journal-socket"],
    [socket, "9:99", "journal-socket"],
    [socket, "", "journal-socket"],
    [socket, "garbage", "journal-socket"],
    // stderr redirected elsewhere although JOURNAL_STREAM was inherited: plain lines.
    [pipe, "8:99", "stderr"],
    [pipe, undefined, "stderr"],
    [pipe, "14:1234:5", "stderr"],
    [pipe, " 14:1234", "stderr"],
    // stderr closed: its number may be taken by the next socket opened, so never.
    [null, undefined, "journal-socket"],
    [null, "8:99", "journal-socket"],
  ];
  for (const [stderr, journalStream, expected] of cases) {
    equal(
      logDestination(stderr, journalStream),
      expected,
      `${JSON.stringify([stderr, journalStream])}`,
    );
  }
});

Deno.test("property: a socket on stderr is written to only if it is the journal's stream", () => {
  fc.assert(
    fc.property(
      fc.record({ socket: fc.boolean(), dev: fc.nat(), ino: fc.nat() }),
      fc.option(fc.tuple(fc.nat(), fc.nat()), { nil: undefined }),
      (stderr, journal) => {
        const destination = logDestination(stderr, journal && `${journal[0]}:${journal[1]}`);
        const isJournal = journal !== undefined && journal[0] === stderr.dev &&
          journal[1] === stderr.ino;
        if (isJournal) equal(destination, "journal-stream");
        else equal(destination, stderr.socket ? "journal-socket" : "stderr");
      },
    ),
  );
});

// ---------------------------------------------------------------------------------------------
// StreamWriter: asynchronous, one write at a time, bounded

/** A stream whose writes complete only when the test says so. */
class SlowStream {
  readonly writes: string[] = [];
  readonly #pending: Array<() => void> = [];
  /** Bytes accepted per write, at most (short writes). */
  constructor(readonly most = Infinity) {}
  write(data: Uint8Array): Promise<number> {
    const n = Math.min(data.length, this.most);
    this.writes.push(new TextDecoder().decode(data.subarray(0, n)));
    return new Promise((resolve) => this.#pending.push(() => resolve(n)));
  }
  /** Completes the oldest pending write; false if none is pending. */
  complete(): boolean {
    const next = this.#pending.shift();
    next?.();
    return next !== undefined;
  }
  get waiting(): number {
    return this.#pending.length;
  }
}

/** Lets pending promise reactions run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("StreamWriter: writes at once, batches what arrives meanwhile, keeps the order", async () => {
  const stream = new SlowStream();
  const writer = new StreamWriter(stream, false);
  writer.write("info", "one");
  deepEqual(stream.writes, ["one\n"], "the first line is written without waiting");
  writer.write("error", "two\nlines");
  writer.write("info", "three");
  equal(stream.writes.length, 1, "one write at a time");
  stream.complete();
  await settle();
  deepEqual(stream.writes, ["one\n", "two lines\nthree\n"]);
  stream.complete();
  await writer.flush();
  equal(stream.waiting, 0);
});

Deno.test("StreamWriter: the journal's stream gets syslog prefixes", async () => {
  const stream = new SlowStream();
  const writer = new StreamWriter(stream, true);
  for (const level of ["error", "warning", "info", "debug"] as const) writer.write(level, level);
  stream.complete();
  await settle();
  stream.complete();
  await writer.flush();
  deepEqual(stream.writes, ["<3>error\n", "<4>warning\n<6>info\n<7>debug\n"]);
});

Deno.test("StreamWriter: short writes are continued", async () => {
  const stream = new SlowStream(3);
  const writer = new StreamWriter(stream, false);
  writer.write("info", "abcdefg");
  while (stream.complete()) await settle();
  await writer.flush();
  deepEqual(stream.writes, ["abc", "def", "g\n"]);
});

Deno.test("StreamWriter: a reader that does not keep up never blocks the caller; lines beyond the bound are dropped, counted and reported", async () => {
  const stream = new SlowStream();
  const writer = new StreamWriter(stream, false);
  const line = "x".repeat(99); // 100 bytes with the newline
  // The stream completes nothing until told: each write() returns regardless.
  for (let i = 0; i < 10_000; i++) writer.write("info", line);
  equal(stream.waiting, 1, "one write pending, nothing else in flight");
  stream.complete();
  await settle();
  const queued = Math.floor(MAX_QUEUED_BYTES / 100);
  equal(stream.writes[1], `${line}\n`.repeat(queued), "what fitted in the queue, in one write");
  stream.complete();
  await settle();
  equal(stream.writes[2], `${10_000 - 1 - queued} log line(s) dropped: stderr did not keep up.\n`);
  stream.complete();
  await writer.flush();
  equal(stream.writes.length, 3);
});

Deno.test("StreamWriter: a failing stream is given up, silently", async () => {
  let calls = 0;
  const writer = new StreamWriter({
    write: () => {
      calls++;
      return Promise.reject(new Deno.errors.BrokenPipe("gone"));
    },
  }, false);
  writer.write("error", "lost");
  await writer.flush();
  writer.write("error", "lost too");
  await writer.flush();
  equal(calls, 1);
});

// ---------------------------------------------------------------------------------------------
// JournalWriter

/** A journal stand-in whose sends complete (or fail) only when the test says so. */
class SlowJournal {
  readonly sent: string[] = [];
  readonly #pending: Array<(ok: boolean) => void> = [];
  send = (data: Uint8Array): Promise<void> => {
    this.sent.push(new TextDecoder().decode(data));
    return new Promise((resolve, reject) =>
      this.#pending.push((ok) => ok ? resolve() : reject(new Deno.errors.TimedOut("full")))
    );
  };
  /** Completes the oldest pending send; false if none is pending. */
  complete(ok = true): boolean {
    const next = this.#pending.shift();
    next?.(ok);
    return next !== undefined;
  }
  get waiting(): number {
    return this.#pending.length;
  }
}

Deno.test("JournalWriter: one datagram per line, in the native protocol, one at a time, in order", async () => {
  const journal = new SlowJournal();
  const writer = new JournalWriter(journal.send);
  writer.write("error", "e");
  writer.write("info", "i\nj");
  deepEqual(journal.sent, [journalEntry("error", "e")], "the second waits for the first");
  equal(journal.waiting, 1);
  while (journal.complete()) await settle();
  await writer.flush();
  deepEqual(journal.sent, [journalEntry("error", "e"), journalEntry("info", "i\nj")]);
});

Deno.test("JournalWriter: a bounded queue; the rest counted and sent first when there is room", async () => {
  const journal = new SlowJournal();
  const writer = new JournalWriter(journal.send);
  for (let i = 0; i <= MAX_DATAGRAMS_QUEUED + 10; i++) writer.write("info", `line ${i}`);
  // One in flight, MAX_DATAGRAMS_QUEUED queued, 10 dropped.
  while (journal.complete()) await settle();
  await writer.flush();
  equal(journal.sent.length, MAX_DATAGRAMS_QUEUED + 1);
  writer.write("info", "after");
  while (journal.complete()) await settle();
  await writer.flush();
  deepEqual(journal.sent.slice(-2), [
    journalEntry("warning", "10 log line(s) dropped: the journal did not keep up."),
    journalEntry("info", "after"),
  ]);
});

Deno.test("JournalWriter: a journal that does not take a line is left alone for a while; what was queued and written meanwhile is counted", async () => {
  const journal = new SlowJournal();
  let now = 0;
  const writer = new JournalWriter(journal.send, () => now);
  writer.write("info", "stuck");
  writer.write("info", "queued 1");
  writer.write("info", "queued 2");
  journal.complete(false); // Timed out (or no journal there).
  await writer.flush();
  equal(journal.sent.length, 1, "the queued ones were not sent after the failure");
  now += JOURNAL_PAUSE_MS - 1;
  writer.write("info", "during the pause");
  equal(journal.sent.length, 1, "nothing is sent during the pause");
  now += 1;
  writer.write("info", "after the pause");
  while (journal.complete()) await settle();
  await writer.flush();
  deepEqual(journal.sent.slice(1), [
    journalEntry("warning", "4 log line(s) dropped: the journal did not keep up."),
    journalEntry("info", "after the pause"),
  ]);
});

/** A datagram socket standing in for the journal's, and a writer to it. */
async function realJournal() {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/journal`;
  const receiver = Deno.listenDatagram({ transport: "unixpacket", path });
  const { DatagramSender } = await import("../../src/service/unixgram.ts");
  const sender = new DatagramSender("test");
  const writer = new JournalWriter((data) => sender.send(path, data, JOURNAL_SEND_TIMEOUT_MS));
  const close = () => {
    sender.close();
    receiver.close();
    Deno.removeSync(dir, { recursive: true });
  };
  return { receiver, writer, close };
}

Deno.test("JournalWriter, for real: a burst of lines all reach the journal's socket, in order", async () => {
  const { receiver, writer, close } = await realJournal();
  // Written back to back, as at the end of an inetd-style connection: the start-up line, the
  // per-connection line, ... (Deno refuses overlapping sends on one socket; they must queue.)
  const count = 50;
  const received: string[] = [];
  const receiving = (async () => {
    while (received.length < count) {
      received.push(new TextDecoder().decode((await receiver.receive())[0]));
    }
  })();
  for (let i = 0; i < count; i++) writer.write("info", `line ${i}`);
  await writer.flush();
  await receiving;
  deepEqual(received, Array.from({ length: count }, (_, i) => journalEntry("info", `line ${i}`)));
  close();
});

Deno.test("JournalWriter, for real: a journal that reads nothing costs a dropped count, never a hang", async () => {
  const { writer, close } = await realJournal();
  // The receiver's queue holds net.unix.max_dgram_qlen datagrams (10 by default); then a send
  // waits, and is given up after JOURNAL_SEND_TIMEOUT_MS.
  for (let i = 0; i < MAX_DATAGRAMS_QUEUED; i++) writer.write("info", `line ${i}`);
  await writer.flush(); // Returns: the stuck send was given up.
  writer.write("info", "during the pause");
  await writer.flush();
  close();
});

// ---------------------------------------------------------------------------------------------
// log(), setLogLevel(), setLogWriter(), writerFor()

/** Collects what log() passes on, at `level`; restores the defaults afterwards. */
function captured(level: Level, fn: () => void): string[] {
  const lines: string[] = [];
  const writer: LogWriter = {
    write: (l, message) => lines.push(`${l}:${message}`),
    flush: () => Promise.resolve(),
  };
  setLogWriter(writer);
  setLogLevel(level);
  try {
    fn();
  } finally {
    setLogWriter(writerFor("stderr"));
    setLogLevel("info");
  }
  return lines;
}

Deno.test("log: every threshold", () => {
  const all: Level[] = ["error", "warning", "info", "debug"];
  for (const [i, level] of all.entries()) {
    const lines = captured(level, () => {
      for (const l of all) log(l, l);
    });
    deepEqual(lines, all.slice(0, i + 1).map((l) => `${l}:${l}`), level);
  }
});

Deno.test("writerFor: a stream writer for stderr, a journal writer otherwise", () => {
  ok(writerFor("stderr") instanceof StreamWriter);
  equal((writerFor("stderr") as StreamWriter).prefixed, false);
  equal((writerFor("journal-stream") as StreamWriter).prefixed, true);
  ok(writerFor("journal-socket") instanceof JournalWriter);
});

// ---------------------------------------------------------------------------------------------
// DeferredWriter

/** A writer that records what it is given, and how often it was flushed. */
function recorder(): LogWriter & { lines: string[]; flushes: number } {
  const lines: string[] = [];
  const writer = {
    lines,
    flushes: 0,
    write: (level: Level, message: string) => lines.push(`${level}:${message}`),
    flush: () => {
      writer.flushes++;
      return Promise.resolve();
    },
  };
  return writer;
}

Deno.test("DeferredWriter: holds lines until settled, then passes them on in order, and later ones straight", async () => {
  const target = recorder();
  let decisions = 0;
  const writer = new DeferredWriter(() => {
    decisions++;
    return Promise.resolve(target);
  });
  writer.write("info", "one");
  writer.write("error", "two");
  deepEqual(target.lines, [], "nothing decided yet");
  equal(decisions, 0, "deciding waits until asked");
  await Promise.all([writer.settle(), writer.settle()]);
  equal(decisions, 1, "decided once");
  deepEqual(target.lines, ["info:one", "error:two"]);
  writer.write("debug", "three");
  deepEqual(target.lines, ["info:one", "error:two", "debug:three"]);
});

Deno.test("DeferredWriter: flush decides if nobody has, then flushes the target", async () => {
  const target = recorder();
  const writer = new DeferredWriter(() => Promise.resolve(target));
  writer.write("info", "at exit");
  await writer.flush();
  deepEqual(target.lines, ["info:at exit"]);
  equal(target.flushes, 1);
});

Deno.test("DeferredWriter: holds a bounded number of lines, and counts the rest", async () => {
  const target = recorder();
  const writer = new DeferredWriter(() => Promise.resolve(target));
  for (let i = 0; i < MAX_HELD_LINES + 5; i++) writer.write("info", `${i}`);
  await writer.settle();
  equal(target.lines.length, MAX_HELD_LINES + 1);
  equal(target.lines.at(-1), "warning:5 log line(s) dropped: start-up did not keep up.");
});

// ---------------------------------------------------------------------------------------------
// ThrottledLog

/** A clock the test moves by hand: timers fire when `advance` passes their time. */
class ManualClock implements Clock {
  time = 0;
  #timers: Array<{ at: number; fn: () => void; live: boolean }> = [];

  now(): number {
    return this.time;
  }

  after(ms: number, fn: () => void): () => void {
    const timer = { at: this.time + ms, fn, live: true };
    this.#timers.push(timer);
    return () => timer.live = false;
  }

  /** Live timers. */
  get pending(): number {
    return this.#timers.filter((t) => t.live).length;
  }

  advance(ms: number): void {
    this.time += ms;
    for (const timer of this.#timers.splice(0)) {
      if (timer.live && timer.at <= this.time) timer.fn();
      else if (timer.live) this.#timers.push(timer);
    }
  }
}

/** A ThrottledLog on a manual clock, with what it logs collected. */
function throttled(intervalMs = 1000) {
  const clock = new ManualClock();
  const lines: string[] = [];
  setLogWriter({
    write: (l, message) => lines.push(`${l}:${message}`),
    flush: () => Promise.resolve(),
  });
  const logger = new ThrottledLog("warning", intervalMs, (held) => `${held} more`, clock);
  return { clock, lines, logger, [Symbol.dispose]: () => setLogWriter(writerFor("stderr")) };
}

Deno.test("ThrottledLog: the first hit is written; the rest of the interval is counted in one line when it ends", () => {
  using t = throttled();
  equal(t.logger.hit(() => "first"), true);
  for (let i = 0; i < 5; i++) {
    t.clock.advance(100);
    equal(t.logger.hit(() => fail("a held line is never built")), false);
  }
  deepEqual(t.lines, ["warning:first"]);
  equal(t.clock.pending, 1, "one timer for the whole interval");
  t.clock.advance(499); // 999 ms after the first line.
  deepEqual(t.lines, ["warning:first"]);
  t.clock.advance(1);
  deepEqual(t.lines, ["warning:first", "warning:5 more"]);
  equal(t.clock.pending, 0);
});

Deno.test("ThrottledLog: the count line starts an interval of its own", () => {
  using t = throttled();
  t.logger.hit(() => "first");
  t.logger.hit(() => "held");
  t.clock.advance(1000);
  deepEqual(t.lines, ["warning:first", "warning:1 more"]);
  t.clock.advance(10);
  equal(t.logger.hit(() => "too soon"), false, "within a second of the count line");
  t.clock.advance(990);
  deepEqual(t.lines, ["warning:first", "warning:1 more", "warning:1 more"]);
  t.clock.advance(1000);
  equal(t.logger.hit(() => "later"), true);
  deepEqual(t.lines.at(-1), "warning:later");
});

Deno.test("ThrottledLog: nothing held, no count line and no timer", () => {
  using t = throttled();
  t.logger.hit(() => "a");
  t.clock.advance(5000);
  t.logger.hit(() => "b");
  t.logger.flush();
  deepEqual(t.lines, ["warning:a", "warning:b"]);
  equal(t.clock.pending, 0);
});

Deno.test("ThrottledLog: flush writes the count at once, and cancels the timer", () => {
  using t = throttled();
  t.logger.hit(() => "a");
  t.logger.hit(() => "b");
  t.logger.hit(() => "c");
  t.logger.flush();
  deepEqual(t.lines, ["warning:a", "warning:2 more"]);
  equal(t.clock.pending, 0);
  t.clock.advance(5000);
  t.logger.flush();
  deepEqual(t.lines, ["warning:a", "warning:2 more"], "counted once");
});

Deno.test("ThrottledLog: a late timer loses nothing: the count comes before the next line", () => {
  using t = throttled();
  const late = new ManualClock();
  const logger = new ThrottledLog("error", 1000, (held) => `${held} more`, {
    now: () => t.clock.now(),
    after: (ms, fn) => late.after(ms, fn), // Never advanced: the timer never fires.
  });
  logger.hit(() => "a");
  logger.hit(() => "b");
  t.clock.advance(2000);
  equal(logger.hit(() => "c"), true);
  deepEqual(t.lines, ["error:a", "error:1 more", "error:c"]);
});

Deno.test("property: ThrottledLog writes at most one line per interval and counts every hit", () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 200 }), (gaps) => {
      using t = throttled();
      let written = 0;
      const at: number[] = [];
      const before = () => t.lines.length;
      for (const gap of gaps) {
        t.clock.advance(gap);
        const n = before();
        if (t.logger.hit(() => "line")) written++;
        for (let i = n; i < t.lines.length; i++) at.push(t.clock.now());
      }
      t.clock.advance(10_000);
      t.logger.flush();
      const counted = t.lines
        .map((line) => /^warning:(\d+) more$/.exec(line)?.[1])
        .reduce((sum, n) => sum + Number(n ?? 0), 0);
      equal(written + counted, gaps.length);
      for (let i = 1; i < at.length; i++) ok(at[i] - at[i - 1] >= 1000 || at[i] === at[i - 1]);
    }),
  );
});

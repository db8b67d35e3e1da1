/**
 * The program's life, step by step: read the command line; plan what to serve; open the
 * sockets; serve until stopped, idle or done; stop. Maps every failure to an exit code.
 * @module
 */
import { ActivationError, takeListenEnv } from "./activation.ts";
import { HELP, type Options, parseCommandLine, UsageError } from "../cli/cli.ts";
import { ConfigError, expandConfig } from "../cli/config.ts";
import { Engine, openEngineLibc } from "../engine/engine.ts";
import { type Libc, nameProcess, openFilesLimit } from "../engine/libc.ts";
import {
  DeferredWriter,
  flushLog,
  log,
  logDestination,
  setLogLevel,
  setLogWriter,
  writerFor,
} from "./log.ts";
import { IdleTimer } from "./idle.ts";
import { after, type Cancel, every } from "./timer.ts";
import { Notifier, parseNotifySocket, watchdogIntervalMs } from "./notify.ts";
import { descriptorBudgetWarning } from "./descriptors.ts";
import { makePlan, type Plan, StartError } from "./plan.ts";
import { Reclaimer, trimStep } from "./reclaim.ts";
import { StopSignals } from "./signals.ts";
import { floorProblem } from "./runtime.ts";
import { describeRelay } from "../engine/datagrams.ts";
import { planProblem } from "../engine/transparent.ts";
import { identify } from "./stdio.ts";
import { formatTarget, type TargetSpec } from "../cli/target.ts";
import { formatTimespan } from "../cli/timespan.ts";
import { PROCESS_NAME, VERSION } from "../cli/version.ts";

export { VERSION };

/** Exit status: success, including `--help`, `--version`, idle exit and a graceful stop. */
export const EXIT_SUCCESS = 0;
/** Exit status: any failure, as systemd-socket-proxyd uses it. */
export const EXIT_FAILURE = 1;

/** STATUS= updates are coalesced to at most one per this many milliseconds. */
const STATUS_INTERVAL_MS = 250;

/** At exit, how long to wait for log lines to be written (stderr may not be read at all). */
const LOG_FLUSH_TIMEOUT_MS = 1000;

/** After start-up, how long to leave the first client to itself before deciding where logs go. */
const LOG_DECISION_DELAY_MS = 200;

/** Where log lines go, by what stderr is (see `log.ts`): found out when first needed. */
const logWriter = new DeferredWriter(async () =>
  writerFor(logDestination(await identify(2, libc), env("JOURNAL_STREAM")))
);

/** libc, once opened (see `serve`): every socket is served through it. */
let libc: Libc | null = null;

/** Reads an environment variable; one Deno's permissions hide counts as unset. */
function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Runs the proxy with `args` (without the program name).
 *
 * @returns the exit status, once serving has ended (or failed to start).
 */
export async function run(args: readonly string[]): Promise<number> {
  // Where log lines may go (under Accept=yes, stderr may be the client) is decided once the
  // first client is served, or at the latest when they must be written out.
  setLogWriter(logWriter);
  try {
    return await runCommand(args);
  } finally {
    await flushLog(LOG_FLUSH_TIMEOUT_MS);
  }
}

async function runCommand(args: readonly string[]): Promise<number> {
  let command;
  try {
    command = parseCommandLine(await expandConfig(args));
  } catch (e) {
    if (e instanceof ConfigError) {
      log("error", e.message);
      return EXIT_FAILURE;
    }
    if (!(e instanceof UsageError)) throw e;
    log("error", `${e.message.replace(/\.?$/, ".")} See --help.`);
    return EXIT_FAILURE;
  }
  switch (command.kind) {
    case "help":
      console.log(HELP);
      return EXIT_SUCCESS;
    case "version":
      console.log(`socket-proxyd ${VERSION} (Deno ${Deno.version.deno})`);
      return EXIT_SUCCESS;
    case "run":
      return await serve(command.options);
  }
}

/** Why serving ended. */
type Ending = "idle" | "done" | "SIGTERM" | "SIGINT";

/** The end of serving, however it comes; a second signal exits at once. */
class End {
  readonly #ending = Promise.withResolvers<Ending>();
  #stopping = false;

  /** Resolves with the first reason to stop. */
  get reason(): Promise<Ending> {
    return this.#ending.promise;
  }

  /** Ends serving (the first call counts). */
  end(why: Ending): void {
    this.#stopping = true;
    this.#ending.resolve(why);
  }

  /**
   * Listens for SIGTERM and SIGINT; copies of the first that arrive with it are ignored (see
   * `signals.ts`). Call first: Deno cannot register a signal handler once file descriptors have
   * run out.
   */
  watchSignals(): void {
    const signals = new StopSignals();
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(signal, () => {
        const action = signals.receive(performance.now());
        if (action === "copy") return;
        if (action === "exit" || this.#stopping) {
          log("warning", `Received ${signal} again, exiting at once.`);
          flushLog(LOG_FLUSH_TIMEOUT_MS).then(() => Deno.exit(EXIT_SUCCESS));
          return;
        }
        this.end(signal);
      });
    }
  }
}

async function serve(options: Options): Promise<number> {
  setLogLevel(options.verbose ? "debug" : "info");
  const end = new End();
  end.watchSignals();
  try {
    const tooOld = floorProblem(Deno.version.deno);
    if (tooOld !== null) throw new StartError(tooOld);
    libc = openEngineLibc();
    nameProcess(libc, PROCESS_NAME);
    const plan = await planFromEnvironment(options, libc);
    const service = new Service(options, plan, end, libc);
    await service.open();
    return await service.stop(await service.serve());
  } catch (e) {
    if (!(e instanceof StartError)) throw e;
    log("error", e.message);
    return EXIT_FAILURE;
  }
}

/**
 * Plans from the command line, the activation variables and standard input, and checks that
 * Deno's permissions let us reach every target, so we fail at start, not later.
 * @throws {StartError}
 */
async function planFromEnvironment(options: Options, libc: Libc): Promise<Plan> {
  let plan: Plan;
  try {
    const passed = takeListenEnv();
    // Only when nothing else is to be served does it matter whether stdin is a connection.
    const stdin = passed.length === 0 && options.listen.length === 0
      ? (await identify(0, libc))?.socket ?? false
      : false;
    plan = makePlan(options, passed, stdin);
  } catch (e) {
    if (!(e instanceof ActivationError)) throw e;
    throw new StartError(`Invalid socket activation environment: ${e.message}`);
  }
  const transparency = options.transparent ? planProblem(plan.targets, plan.listen) : null;
  if (transparency !== null) throw new StartError(transparency);
  for (const target of plan.targets) {
    const problem = permissionProblem(target);
    if (problem !== null) throw new StartError(problem);
  }
  for (const warning of plan.warnings) log("warning", warning);
  for (const notice of plan.notices) log("info", notice);
  return plan;
}

function permissionProblem(target: TargetSpec): string | null {
  const granted = (descriptor: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(descriptor).state === "granted";
  switch (target.kind) {
    case "unix":
      return granted({ name: "read", path: target.path }) &&
          granted({ name: "write", path: target.path })
        ? null
        : `Deno's permissions do not allow connecting to ${target.path}; ` +
          `add --allow-read=${target.path} --allow-write=${target.path} to the deno flags.`;
    case "abstract":
    case "vsock":
      return granted({ name: "net" })
        ? null
        : `Deno's permissions do not allow ${target.kind} sockets; add --allow-net.`;
    case "tcp":
      return granted({ name: "net", host: `${target.host}:${target.port}` })
        ? null
        : `Deno's permissions do not allow connecting to ${formatTarget(target)}; ` +
          `add --allow-net=${formatTarget(target)}.`;
    case "same-port":
      return granted({ name: "net", host: target.host })
        ? null
        : `Deno's permissions do not allow connecting to every port of ${target.host}; ` +
          `add --allow-net=${target.host}.`;
  }
}

/**
 * Memory back after load: a trim once the proxy rests (`reclaim.ts`), that is once `atRest`
 * says no connection and no datagram session is open.
 */
function reclaimer(atRest: () => boolean): Reclaimer {
  return new Reclaimer({ steps: [trimStep()], atRest });
}

/** The proxy serving a plan: its engine, notifications to the service manager, and its end. */
class Service {
  readonly #options: Options;
  readonly #plan: Plan;
  readonly #end: End;
  readonly #notifier: Notifier;
  #engine: Engine | null = null;
  /** `--exit-idle-time`: armed while no connection and no datagram session is open. */
  readonly #idle: IdleTimer;
  /** Cancels the STATUS= update coming, or null when none is. */
  #statusTimer: Cancel | null = null;
  /** Shared by the connections and the datagram sessions. */
  readonly #reclaimer: Reclaimer;

  constructor(options: Options, plan: Plan, end: End, readonly libc: Libc) {
    this.#options = options;
    this.#plan = plan;
    this.#end = end;
    this.#notifier = new Notifier(parseNotifySocket(env("NOTIFY_SOCKET")));
    this.#reclaimer = reclaimer(() => this.#openCount() === 0);
    this.#idle = new IdleTimer(options.exitIdleTimeUsec, () => end.end("idle"));
  }

  get #engineOpen(): Engine {
    return this.#engine!;
  }

  /** Connections and datagram sessions open now. */
  #openCount(): number {
    const engine = this.#engineOpen;
    return engine.streams.active + (engine.datagrams?.active ?? 0);
  }

  /**
   * Opens the engine: the passed sockets, or our own `--listen` ones.
   * @throws {StartError} naming what could not be served.
   */
  async open(): Promise<void> {
    const options = this.#options;
    const changed = () => this.#changed();
    this.#engine = await Engine.open(this.libc, this.#plan, {
      proxyProtocol: options.proxyProtocol,
      transparent: options.transparent,
      streams: {
        connectionsMax: options.connectionsMax,
        whenFull: options.whenFull,
        connectionsPerSource: options.connectionsPerSource,
        proxyProtocol: options.proxyProtocol,
        connectTimeoutMs: options.connectTimeoutUsec / 1000,
        idleTimeoutMs: options.idleTimeoutUsec / 1000,
        keepalive: options.keepalive,
        onChange: changed,
        reclaimer: this.#reclaimer,
      },
      datagrams: {
        sessionsMax: options.connectionsMax,
        sessionsPerSource: options.connectionsPerSource,
        idleTimeoutMs: options.sessionIdleTimeoutUsec / 1000,
        repliesPerDatagram: options.repliesPerDatagram,
        onChange: changed,
        onCounts: changed,
        reclaimer: this.#reclaimer,
      },
    });
    const short = descriptorBudgetWarning(openFilesLimit(this.libc), {
      connectionsMax: options.connectionsMax,
      streams: this.#engine.servesStreams,
      datagrams: this.#engine.datagrams !== null,
    });
    if (short !== null) log("warning", short);
  }

  /**
   * Says what is being forwarded, tells the service manager it is ready, and serves until the
   * end: a signal, `--exit-idle-time`, or (inetd style) the passed connections being done.
   */
  async serve(): Promise<Ending> {
    const options = this.#options;
    const engine = this.#engineOpen;
    const limits = [
      ...(engine.servesStreams ? [`${options.connectionsMax} connections`] : []),
      ...(engine.datagrams !== null ? [`${options.connectionsMax} sessions`] : []),
    ];
    log(
      "info",
      `Forwarding ${engine.descriptions.join(", ")}; at most ${limits.join(" and ")}` +
        (options.whenFull === "wait" && engine.servesStreams
          ? ", more waiting in arrival order"
          : "") +
        (options.connectionsPerSource === null
          ? ""
          : `, ${options.connectionsPerSource} per source`) +
        (options.exitIdleTimeUsec === Infinity
          ? "."
          : `, exiting after ${formatTimespan(options.exitIdleTimeUsec)} idle.`),
    );
    engine.start();
    if (!engine.onlyConnections) this.#idle.arm();
    this.#notifier.send(`READY=1\nSTATUS=${this.#status()}`);
    after(LOG_DECISION_DELAY_MS, () => logWriter.settle());
    const watchdogMs = watchdogIntervalMs(env("WATCHDOG_USEC"), env("WATCHDOG_PID"), Deno.pid);
    const watchdog = watchdogMs === null || !this.#notifier.enabled
      ? undefined
      : every(watchdogMs, () => this.#notifier.send("WATCHDOG=1"));
    const why = await this.#end.reason;
    watchdog?.();
    return why;
  }

  /**
   * Stops accepting and, after a signal, lets open connections finish for up to
   * `--drain-timeout`.
   * @returns the exit status.
   */
  async stop(why: Ending): Promise<number> {
    const engine = this.#engineOpen;
    engine.stopAccepting();
    this.#idle.disarm();
    this.#statusTimer?.();
    engine.streams.flushLogs();
    await this.#notifier.send(`STOPPING=1\nSTATUS=Stopping: ${this.#counts()}`);
    let exitStatus = EXIT_SUCCESS;
    if (why === "idle") {
      log(
        "info",
        `Exiting after ${formatTimespan(this.#options.exitIdleTimeUsec)} without connections` +
          `${this.#refusedClause()}.`,
      );
    } else if (why === "done") {
      if (engine.streams.failed > 0) exitStatus = EXIT_FAILURE;
    } else {
      await this.#drain(why);
    }
    // Idle or done: no connection or session is open, and nothing waits.
    await Promise.all([engine.streams.drain(0), engine.datagrams?.drain(0)]);
    await engine.close();
    this.#notifier.close();
    return exitStatus;
  }

  /** "; 12 refused (...)", or "" when none was refused. */
  #refusedClause(): string {
    const refused = this.#engineOpen.streams.refused;
    return refused === "" ? "" : `; ${refused}`;
  }

  async #drain(signal: Ending): Promise<void> {
    const { streams, datagrams } = this.#engineOpen;
    const timeoutUsec = this.#options.drainTimeoutUsec;
    log(
      "info",
      `Received ${signal}, stopping: no longer accepting; ${streams.active} connection(s) open` +
        (streams.waiting > 0 ? ` and ${streams.waiting} waiting` : "") +
        `, waiting up to ${formatTimespan(timeoutUsec)} for them to finish.`,
    );
    const [cut, cutSessions] = await Promise.all([
      streams.drain(timeoutUsec / 1000),
      datagrams?.drain(timeoutUsec / 1000) ?? 0,
    ]);
    streams.flushLogs();
    const closed = [
      ...(cut.open > 0 ? [`${cut.open} still open`] : []),
      ...(cut.waiting > 0 ? [`${cut.waiting} still waiting`] : []),
    ];
    log(
      "info",
      `Stopped: ${streams.served} connection(s) served, ` +
        (closed.length > 0
          ? `${closed.join(" and ")} after the drain timeout closed`
          : "none cut off") +
        `${this.#failedClause()}${this.#refusedClause()}` +
        (datagrams === null ? "." : `; ${this.#sessionCounts()}, ` +
          (cutSessions > 0 ? `${cutSessions} cut off by the drain timeout.` : "none cut off.")),
    );
  }

  /** ", 3 failed to reach the target", or "" when none failed. */
  #failedClause(): string {
    const failed = this.#engineOpen.streams.failed;
    return failed === 0 ? "" : `, ${failed} failed to reach the target`;
  }

  /**
   * "3 active, 2 waiting, 10 served, 1 failed, 4 refused (...)" (waiting only with
   * --when-full=wait, failed and refused once there are some), and with datagram sockets their
   * sessions and datagrams, for STATUS= lines.
   */
  #counts(): string {
    const { streams, datagrams } = this.#engineOpen;
    const counts = [
      `${streams.active} active`,
      ...(this.#options.whenFull === "wait" ? [`${streams.waiting} waiting`] : []),
      `${streams.served} served`,
      ...(streams.failed === 0 ? [] : [`${streams.failed} failed`]),
      ...(streams.refused === "" ? [] : [streams.refused]),
    ].join(", ");
    return datagrams === null ? counts : `${counts}; ${this.#sessionCounts()}`;
  }

  #sessionCounts(): string {
    return describeRelay(this.#engineOpen.datagrams!);
  }

  #status(): string {
    const forwardsTo = this.#plan.targets.map(formatTarget).join(", ");
    return `Forwarding to ${forwardsTo}: ${this.#counts()}`;
  }

  /**
   * Connections or sessions came or went: the idle span starts again when none is left (and,
   * inetd style, serving is done); a STATUS= update soon.
   */
  #changed(): void {
    const engine = this.#engine;
    if (engine === null) return;
    if (this.#openCount() > 0 || engine.streams.waiting > 0) this.#idle.disarm();
    else if (engine.onlyConnections) this.#end.end("done");
    else this.#idle.arm();
    if (!this.#notifier.enabled || this.#statusTimer !== null) return;
    this.#statusTimer = after(STATUS_INTERVAL_MS, () => {
      this.#statusTimer = null;
      this.#notifier.send(`STATUS=${this.#status()}`);
    });
  }
}

/**
 * The program's life, step by step: read the command line; plan what to serve; open the
 * sockets; serve until stopped, idle or done; stop. Maps every failure to an exit code.
 * @module
 */
import { ActivationError, CONNECTION_NAME, takeListenEnv } from "./activation.ts";
import type { Socket } from "node:net";
import { adopt, AdoptionError, type Listener, selfTest } from "../adopt.ts";
import { HELP, type Options, parseCommandLine, UsageError } from "../cli/cli.ts";
import { connClient, type DataPath, socketClient } from "../client.ts";
import { ConfigError, expandConfig } from "../cli/config.ts";
import { formatListenAddress } from "../cli/address.ts";
import { listenOn } from "../listen.ts";
import {
  DeferredWriter,
  flushLog,
  log,
  logDestination,
  setLogLevel,
  setLogWriter,
  writerFor,
} from "./log.ts";
import { Notifier, parseNotifySocket, watchdogIntervalMs } from "./notify.ts";
import { makePlan, type Plan, type PlannedSocket, StartError } from "./plan.ts";
import { Proxy } from "../proxy.ts";
import { exposeGc, Reclaimer, trimStep } from "./reclaim.ts";
import { StopSignals } from "./signals.ts";
import type { Relay } from "../engine/datagrams.ts";
import { sortSockets } from "../engine/sockets.ts";
import { planProblem } from "../engine/transparent.ts";
import { floorProblem, missingNotice } from "./runtime.ts";
import { identify } from "./stdio.ts";
import { atPort, formatTarget, type Target, type TargetSpec } from "../cli/target.ts";
import { formatTimespan } from "../cli/timespan.ts";
import { VERSION } from "../cli/version.ts";

export { VERSION };

/** Exit status: success, including `--help`, `--version`, idle exit and a graceful stop. */
export const EXIT_SUCCESS = 0;
/** Exit status: any failure, as systemd-socket-proxyd uses it. */
export const EXIT_FAILURE = 1;

/** Environment variable that selects the client data path: "fast" (default) or "portable". */
export const DATA_PATH_VARIABLE = "SOCKET_PROXYD_DATA_PATH";

/** STATUS= updates are coalesced to at most one per this many milliseconds. */
const STATUS_INTERVAL_MS = 250;

/** At exit, how long to wait for log lines to be written (stderr may not be read at all). */
const LOG_FLUSH_TIMEOUT_MS = 1000;

/** After start-up, how long to leave the first client to itself before deciding where logs go. */
const LOG_DECISION_DELAY_MS = 200;

/** Where log lines go, by what stderr is (see `log.ts`): found out when first needed. */
const logWriter = new DeferredWriter(async () =>
  writerFor(logDestination(await identify(2), env("JOURNAL_STREAM")))
);

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
    const plan = await planFromEnvironment(options);
    const service = new Service(options, plan, end);
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
async function planFromEnvironment(options: Options): Promise<Plan> {
  let plan: Plan;
  try {
    const passed = takeListenEnv();
    // Only when nothing else is to be served does it matter whether stdin is a connection.
    const stdin = passed.length === 0 && options.listen.length === 0
      ? (await identify(0))?.socket ?? false
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
 * The target for a listener on `port` (see `atPort`).
 * @throws {StartError} for "HOST:*" and a listener without a port, naming it.
 */
function targetAt(spec: TargetSpec, port: number | null, listener: string): Target {
  try {
    return atPort(spec, port);
  } catch (e) {
    throw new StartError(`Cannot serve ${listener}: ${(e as Error).message}.`);
  }
}

/**
 * Memory back after load: a full GC and a trim once the proxy rests (`reclaim.ts`), that is
 * once `atRest` says no connection and no datagram session is open.
 */
function reclaimer(atRest: () => boolean): Reclaimer {
  const gc = exposeGc();
  return new Reclaimer({ steps: [...gc === null ? [] : [gc], trimStep()], atRest });
}

/** The proxy serving a plan: its sockets, notifications to the service manager, and its end. */
class Service {
  readonly #options: Options;
  readonly #plan: Plan;
  readonly #end: End;
  readonly #dataPath: DataPath;
  readonly #notifier: Notifier;
  readonly #proxy: Proxy;
  /** Serves the datagram sockets passed in, if any. */
  #relay: Relay | null = null;
  /** Stop accepting, one per listener. */
  readonly #closers: Array<() => void> = [];
  /** What is forwarded where, for the start-up line. */
  readonly #descriptions: string[] = [];
  /** Connections passed in (Accept=yes, inetd), to serve once everything is open. */
  readonly #connections: Array<{ socket: Socket; target: Target }> = [];
  /** Serving only passed connections, no listener: serving ends when they are done. */
  #onlyConnections = false;
  #statusTimer: ReturnType<typeof setTimeout> | undefined;
  /** Shared by the connections and the datagram sessions. */
  readonly #reclaimer: Reclaimer;

  constructor(options: Options, plan: Plan, end: End) {
    this.#options = options;
    this.#plan = plan;
    this.#end = end;
    this.#dataPath = env(DATA_PATH_VARIABLE) === "portable" ? "portable" : "fast";
    this.#notifier = new Notifier(parseNotifySocket(env("NOTIFY_SOCKET")));
    this.#reclaimer = reclaimer(() => this.#proxy.active === 0 && (this.#relay?.active ?? 0) === 0);
    this.#proxy = new Proxy({
      dataPath: this.#dataPath,
      connectionsMax: options.connectionsMax,
      whenFull: options.whenFull,
      connectionsPerSource: options.connectionsPerSource,
      exitIdleTimeUsec: options.exitIdleTimeUsec,
      proxyProtocol: options.proxyProtocol,
      connectTimeoutMs: options.connectTimeoutUsec / 1000,
      idleTimeoutMs: options.idleTimeoutUsec / 1000,
      keepalive: options.keepalive,
      // Idle means no connection and no datagram session either.
      onIdle: () => (this.#relay?.active ?? 0) === 0 && end.end("idle"),
      onChange: () => this.#changed(),
      reclaimer: this.#reclaimer,
    });
  }

  /**
   * Adopts the passed sockets, or listens on the `--listen` addresses.
   * @throws {StartError} naming what could not be served.
   */
  async open(): Promise<void> {
    const sorted = await sortSockets(this.#plan.sockets, {
      proxyProtocol: this.#options.proxyProtocol,
      transparent: this.#options.transparent,
      sessionsMax: this.#options.connectionsMax,
      sessionsPerSource: this.#options.connectionsPerSource,
      idleTimeoutMs: this.#options.sessionIdleTimeoutUsec / 1000,
      onChange: () => this.#sessionsChanged(),
      reclaimer: this.#reclaimer,
    });
    this.#relay = sorted.relay;
    this.#descriptions.push(...sorted.descriptions);
    await this.#testAdoption(sorted.streams);
    const listeners: Listener[] = [];
    try {
      await this.#adoptPassed(sorted.streams, listeners);
      await this.#listenOwn();
    } catch (e) {
      for (const close of this.#closers) close();
      if (e instanceof StartError) throw e;
      if (e instanceof AdoptionError) throw new StartError(e.message);
      throw new StartError(`Cannot listen: ${(e as Error).message}`);
    }
    const notice = missingNotice(Deno.version.deno, {
      fastPath: this.#dataPath === "fast" ? listeners.flatMap((l) => l.fastPathMissing ?? []) : [],
      recovery: listeners.flatMap((l) => l.recoveryMissing ?? []),
    });
    if (notice !== null) log("warning", notice);
  }

  /** Before listening sockets are adopted: does this Deno serve an adopted socket at all? */
  async #testAdoption(streams: readonly PlannedSocket[]): Promise<void> {
    if (streams.every(({ socket }) => socket.name === CONNECTION_NAME)) return;
    const failure = await selfTest();
    if (failure === null) return;
    throw new StartError(
      `This Deno (${Deno.version.deno}) cannot serve the sockets passed in: its self-test ` +
        `says ${failure}. Use another Deno release (see the README's table), or the ` +
        "socket-proxyd package, which brings the one it is tested with.",
    );
  }

  async #adoptPassed(streams: readonly PlannedSocket[], listeners: Listener[]): Promise<void> {
    for (const { socket, target } of streams) {
      // For "HOST:*", the port is the listener's: known once it is adopted, before any client.
      let to: Target | null = target.kind === "same-port" ? null : target;
      const adopted = await adopt(
        socket,
        (client, listener) =>
          this.#proxy.admit(
            socketClient(client, this.#dataPath),
            to ??= atPort(target, listener.port),
          ),
      );
      const where = `fd ${socket.fd} ("${socket.name}")`;
      if (adopted.kind === "listener") {
        const { listener } = adopted;
        listeners.push(listener);
        this.#closers.push(listener.close);
        to = targetAt(target, listener.port, `the socket on ${where}`);
        const described = `${listener.address} (fd ${socket.fd}, "${socket.name}")`;
        this.#descriptions.push(`${described} to ${formatTarget(to)}`);
      } else {
        to = targetAt(target, adopted.socket.localPort ?? null, `the connection on ${where}`);
        this.#connections.push({ socket: adopted.socket, target: to });
        this.#descriptions.push(`connection on fd ${socket.fd} to ${formatTarget(to)}`);
      }
    }
  }

  async #listenOwn(): Promise<void> {
    const spec = this.#plan.listenTarget;
    if (spec === null) return;
    for (const address of this.#plan.listen) {
      const port = address.kind === "tcp" ? address.port : null;
      const target = targetAt(spec, port, `--listen=${formatListenAddress(address)}`);
      const own = await listenOn(address, (conn) => this.#proxy.admit(connClient(conn), target));
      this.#closers.push(own.close);
      this.#descriptions.push(`${own.address} to ${formatTarget(target)}`);
    }
  }

  /**
   * Says what is being forwarded, tells the service manager it is ready, and serves until the
   * end: a signal, `--exit-idle-time`, or (inetd style) the passed connections being done.
   */
  async serve(): Promise<Ending> {
    const options = this.#options;
    log(
      "info",
      `Forwarding ${this.#descriptions.join(", ")}; at most ${options.connectionsMax} ` +
        "connections" +
        (options.whenFull === "wait" ? ", more waiting in arrival order" : "") +
        (options.connectionsPerSource === null
          ? ""
          : `, ${options.connectionsPerSource} per source`) +
        (options.exitIdleTimeUsec === Infinity
          ? "."
          : `, exiting after ${formatTimespan(options.exitIdleTimeUsec)} idle.`),
    );
    this.#onlyConnections = this.#closers.length === 0 && this.#relay === null;
    // A passed connection is already being read by node:net, so it stays on the portable path.
    for (const c of this.#connections) {
      this.#proxy.admit(socketClient(c.socket, "portable"), c.target);
    }
    if (!this.#onlyConnections) this.#proxy.start();
    this.#relay?.start();
    this.#notifier.send(`READY=1\nSTATUS=${this.#status()}`);
    Deno.unrefTimer(setTimeout(() => logWriter.settle(), LOG_DECISION_DELAY_MS));
    const watchdogMs = watchdogIntervalMs(env("WATCHDOG_USEC"), env("WATCHDOG_PID"), Deno.pid);
    const watchdog = watchdogMs === null || !this.#notifier.enabled
      ? undefined
      : setInterval(() => this.#notifier.send("WATCHDOG=1"), watchdogMs);
    const why = await this.#end.reason;
    clearInterval(watchdog);
    return why;
  }

  /**
   * Stops accepting and, after a signal, lets open connections finish for up to
   * `--drain-timeout`.
   * @returns the exit status.
   */
  async stop(why: Ending): Promise<number> {
    for (const close of this.#closers) close();
    this.#relay?.stopReading();
    clearTimeout(this.#statusTimer);
    const proxy = this.#proxy;
    proxy.flushLogs();
    await this.#notifier.send(`STOPPING=1\nSTATUS=Stopping: ${this.#counts()}`);
    let exitStatus = EXIT_SUCCESS;
    if (why === "idle") {
      log(
        "info",
        `Exiting after ${formatTimespan(this.#options.exitIdleTimeUsec)} without connections` +
          `${this.#refusedClause()}.`,
      );
    } else if (why === "done") {
      if (proxy.failed > 0) exitStatus = EXIT_FAILURE;
    } else {
      await this.#drain(why);
    }
    // Idle or done: no session is open, and nothing waits on the relay.
    await this.#relay?.drain(0);
    this.#notifier.close();
    return exitStatus;
  }

  /** "; 12 refused (...)", or "" when none was refused. */
  #refusedClause(): string {
    const refused = this.#proxy.refused;
    return refused === "" ? "" : `; ${refused}`;
  }

  async #drain(signal: Ending): Promise<void> {
    const proxy = this.#proxy;
    const timeoutUsec = this.#options.drainTimeoutUsec;
    log(
      "info",
      `Received ${signal}, stopping: no longer accepting; ${proxy.active} connection(s) open` +
        (proxy.waiting > 0 ? ` and ${proxy.waiting} waiting` : "") +
        `, waiting up to ${formatTimespan(timeoutUsec)} for them to finish.`,
    );
    const relay = this.#relay;
    const [cut, cutSessions] = await Promise.all([
      proxy.drain(timeoutUsec / 1000),
      relay?.drain(timeoutUsec / 1000) ?? 0,
    ]);
    proxy.flushLogs();
    const closed = [
      ...(cut.open > 0 ? [`${cut.open} still open`] : []),
      ...(cut.waiting > 0 ? [`${cut.waiting} still waiting`] : []),
    ];
    log(
      "info",
      `Stopped: ${proxy.served} connection(s) served, ` +
        (closed.length > 0
          ? `${closed.join(" and ")} after the drain timeout closed`
          : "none cut off") +
        `${this.#refusedClause()}` +
        (relay === null ? "." : `; ${this.#sessionCounts()}, ` +
          (cutSessions > 0 ? `${cutSessions} cut off by the drain timeout.` : "none cut off.")),
    );
  }

  /**
   * "3 active, 2 waiting, 10 served, 4 refused (...)" (waiting only with --when-full=wait),
   * and with datagram sockets their sessions and datagrams, for STATUS= lines.
   */
  #counts(): string {
    const proxy = this.#proxy;
    const streams = [
      `${proxy.active} active`,
      ...(this.#options.whenFull === "wait" ? [`${proxy.waiting} waiting`] : []),
      `${proxy.served} served`,
      ...(proxy.refused === "" ? [] : [proxy.refused]),
    ].join(", ");
    return this.#relay === null ? streams : `${streams}; ${this.#sessionCounts()}`;
  }

  #sessionCounts(): string {
    const relay = this.#relay!;
    const { sessions, forwarded, returned, dropped, refused } = relay.counts;
    const reasons = [
      ...(refused.full > 0 ? [`${refused.full} over --connections-max`] : []),
      ...(refused.source > 0 ? [`${refused.source} over --connections-per-source`] : []),
    ];
    return `${relay.active} session(s) open, ${sessions} served, datagrams ${forwarded} ` +
      `forwarded, ${returned} returned, ${dropped} dropped` +
      (reasons.length > 0 ? ` (${reasons.join(", ")})` : "");
  }

  /** Datagram sessions came or went: when none is left, the idle span starts again. */
  #sessionsChanged(): void {
    if (this.#relay?.active === 0 && this.#proxy.active === 0) this.#proxy.start();
    this.#changed();
  }

  #status(): string {
    const forwardsTo = this.#plan.targets.map(formatTarget).join(", ");
    return `Forwarding to ${forwardsTo}: ${this.#counts()}`;
  }

  /** The number of open connections changed: maybe done; a STATUS= update soon. */
  #changed(): void {
    if (this.#onlyConnections && this.#proxy.active === 0) this.#end.end("done");
    if (!this.#notifier.enabled || this.#statusTimer !== undefined) return;
    this.#statusTimer = setTimeout(() => {
      this.#statusTimer = undefined;
      this.#notifier.send(`STATUS=${this.#status()}`);
    }, STATUS_INTERVAL_MS);
  }
}

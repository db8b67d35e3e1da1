/**
 * The program: command line, activation, listeners, notification, signals and shutdown; maps
 * every failure to an exit code.
 * @module
 */
import { ActivationError, type PassedSocket, takeListenEnv } from "./activation.ts";
import type { Socket } from "node:net";
import { adopt, AdoptionError } from "./adopt.ts";
import { type Command, HELP, type Options, parseCommandLine, UsageError } from "./cli.ts";
import { connClient, type DataPath, socketClient } from "./client.ts";
import { listenOn } from "./listen.ts";
import { configureLog, log } from "./log.ts";
import { Notifier, parseNotifySocket, watchdogIntervalMs } from "./notify.ts";
import { Proxy } from "./proxy.ts";
import { formatTarget, type Target } from "./target.ts";
import { formatTimespan } from "./timespan.ts";
import denoJson from "../deno.json" with { type: "json" };

/** Exit status: success, including `--help`, `--version`, idle exit and a graceful stop. */
export const EXIT_SUCCESS = 0;
/** Exit status: any failure, as systemd-socket-proxyd uses it. */
export const EXIT_FAILURE = 1;

/** The package version, from deno.json. */
export const VERSION: string = denoJson.version;

/** Environment variable that selects the client data path: "fast" (default) or "portable". */
export const DATA_PATH_VARIABLE = "SOCKET_PROXYD_DATA_PATH";

/** STATUS= updates are coalesced to at most one per this many milliseconds. */
const STATUS_INTERVAL_MS = 250;

/** Reads an environment variable; one Deno's permissions hide counts as unset. */
function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** Checks that Deno's permission flags let us reach the target, so we fail at start, not later. */
function permissionProblem(target: Target): string | null {
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
  }
}

/** Why serving ended. */
type Ending = "idle" | "done" | "SIGTERM" | "SIGINT";

/**
 * Runs the proxy with `args` (without the program name).
 *
 * @returns the exit status, once serving has ended (or failed to start).
 */
export async function run(args: readonly string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommandLine(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    log("error", `${e.message.replace(/\.?$/, ".")} See --help.`);
    return EXIT_FAILURE;
  }
  if (command.kind === "help") {
    console.log(HELP);
    return EXIT_SUCCESS;
  }
  if (command.kind === "version") {
    console.log(`socket-proxyd ${VERSION} (Deno ${Deno.version.deno})`);
    return EXIT_SUCCESS;
  }
  return await serve(command.options);
}

async function serve(options: Options): Promise<number> {
  configureLog(options.verbose ? "debug" : "info", env("JOURNAL_STREAM") !== undefined);
  const ending = Promise.withResolvers<Ending>();
  // Signal handlers first: Deno cannot register one later if file descriptors have run out.
  let stopping = false;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      if (stopping) {
        log("warning", `Received ${signal} again, exiting at once.`);
        Deno.exit(EXIT_SUCCESS);
      }
      stopping = true;
      ending.resolve(signal);
    });
  }

  let passed: PassedSocket[];
  try {
    passed = takeListenEnv();
  } catch (e) {
    if (!(e instanceof ActivationError)) throw e;
    log("error", `Invalid socket activation environment: ${e.message}`);
    return EXIT_FAILURE;
  }
  if (passed.length === 0 && options.listen.length === 0) {
    log(
      "error",
      "Didn't get any sockets passed in; start me from a .socket unit, with " +
        "systemd-socket-activate --listen=ADDR, or give --listen=ADDR.",
    );
    return EXIT_FAILURE;
  }
  // Every socket needs a target: its own by name, or the positional default.
  const targetFor = new Map<PassedSocket, Target>();
  for (const socket of passed) {
    const target = options.targets.get(socket.name) ?? options.target;
    if (target === null) {
      log(
        "error",
        `No target for the socket named "${socket.name}" (fd ${socket.fd}); give ` +
          `--target=${socket.name}=TARGET or a default TARGET.`,
      );
      return EXIT_FAILURE;
    }
    targetFor.set(socket, target);
  }
  if (passed.length === 0 && options.target === null) {
    log("error", "--listen needs a TARGET argument (--target= applies to passed sockets).");
    return EXIT_FAILURE;
  }
  for (const name of options.targets.keys()) {
    if (passed.length > 0 && !passed.some((socket) => socket.name === name)) {
      log("warning", `No passed socket is named "${name}"; --target=${name}=... is unused.`);
    }
  }
  const used = passed.length > 0 ? [...targetFor.values()] : [options.target!];
  for (const target of used) {
    const problem = permissionProblem(target);
    if (problem !== null) {
      log("error", problem);
      return EXIT_FAILURE;
    }
  }

  const notifier = new Notifier(parseNotifySocket(env("NOTIFY_SOCKET")));
  const forwardsTo = [...new Set(used.map(formatTarget))].join(", ");
  let statusTimer: ReturnType<typeof setTimeout> | undefined;
  const status = () =>
    `Forwarding to ${forwardsTo}: ${proxy.active} active, ${proxy.served} served`;
  const dataPath: DataPath = env(DATA_PATH_VARIABLE) === "portable" ? "portable" : "fast";
  const proxy: Proxy = new Proxy({
    dataPath,
    connectionsMax: options.connectionsMax,
    exitIdleTimeUsec: options.exitIdleTimeUsec,
    proxyProtocol: options.proxyProtocol,
    connectTimeoutMs: options.connectTimeoutUsec / 1000,
    idleTimeoutMs: options.idleTimeoutUsec / 1000,
    keepalive: options.keepalive,
    onIdle: () => ending.resolve("idle"),
    onChange() {
      if (onlyConnections && proxy.active === 0) ending.resolve("done");
      if (!notifier.enabled || statusTimer !== undefined) return;
      statusTimer = setTimeout(() => {
        statusTimer = undefined;
        notifier.send(`STATUS=${status()}`);
      }, STATUS_INTERVAL_MS);
    },
  });

  const closers: Array<() => void> = [];
  const descriptions: string[] = [];
  const connections: Array<{ socket: Socket; target: Target }> = [];
  let onlyConnections = false;
  try {
    for (const socket of passed) {
      const target = targetFor.get(socket)!;
      const to = formatTarget(target);
      const adopted = await adopt(
        socket,
        (client) => proxy.admit(socketClient(client, dataPath), target),
      );
      if (adopted.kind === "listener") {
        const { listener } = adopted;
        closers.push(listener.close);
        descriptions.push(`${listener.address} (fd ${socket.fd}, "${socket.name}") to ${to}`);
      } else {
        connections.push({ socket: adopted.socket, target });
        descriptions.push(`connection on fd ${socket.fd} to ${to}`);
      }
    }
    if (passed.length === 0) {
      const target = options.target!;
      for (const address of options.listen) {
        const own = await listenOn(address, (conn) => proxy.admit(connClient(conn), target));
        closers.push(own.close);
        descriptions.push(`${own.address} to ${formatTarget(target)}`);
      }
    } else if (options.listen.length > 0) {
      log("info", "Sockets were passed in, so --listen is ignored.");
    }
  } catch (e) {
    for (const close of closers) close();
    if (e instanceof AdoptionError) log("error", e.message);
    else log("error", `Cannot listen: ${(e as Error).message}`);
    return EXIT_FAILURE;
  }

  log(
    "info",
    `Forwarding ${descriptions.join(", ")}; at most ` +
      `${options.connectionsMax} connections` +
      (options.exitIdleTimeUsec === Infinity
        ? "."
        : `, exiting after ${formatTimespan(options.exitIdleTimeUsec)} idle.`),
  );
  // With Accept=yes there is no listener: serve the connection(s), then exit.
  onlyConnections = closers.length === 0;
  // A passed connection is already being read by node:net, so it must stay on the portable path.
  for (const c of connections) proxy.admit(socketClient(c.socket, "portable"), c.target);
  if (!onlyConnections) proxy.start();
  notifier.send(`READY=1\nSTATUS=${status()}`);
  const watchdogMs = watchdogIntervalMs(env("WATCHDOG_USEC"), env("WATCHDOG_PID"), Deno.pid);
  const watchdog = watchdogMs === null || !notifier.enabled
    ? undefined
    : setInterval(() => notifier.send("WATCHDOG=1"), watchdogMs);

  const why = await ending.promise;
  stopping = true;
  for (const close of closers) close();
  clearInterval(watchdog);
  clearTimeout(statusTimer);
  const stoppingStatus =
    `STOPPING=1\nSTATUS=Stopping: ${proxy.active} active, ${proxy.served} served`;
  await notifier.send(stoppingStatus);
  let exitStatus = EXIT_SUCCESS;
  if (why === "idle") {
    log("info", `Exiting after ${formatTimespan(options.exitIdleTimeUsec)} without connections.`);
  } else if (why === "done") {
    if (proxy.failed > 0) exitStatus = EXIT_FAILURE;
  } else {
    const open = proxy.active;
    log(
      "info",
      `Received ${why}, stopping: no longer accepting; ${open} connection(s) open, waiting up ` +
        `to ${formatTimespan(options.drainTimeoutUsec)} for them to finish.`,
    );
    const cut = await proxy.drain(options.drainTimeoutUsec / 1000);
    log(
      "info",
      `Stopped: ${proxy.served} connection(s) served, ` +
        (cut > 0 ? `${cut} still open after the drain timeout closed.` : "none cut off."),
    );
  }
  notifier.close();
  return exitStatus;
}

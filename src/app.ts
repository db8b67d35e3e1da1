/**
 * The program: command line, activation, adoption, serving; maps every failure to an exit code.
 * @module
 */
import { ActivationError, takeListenEnv } from "./activation.ts";
import { adopt, AdoptionError, type Listener } from "./adopt.ts";
import { type Command, HELP, parseCommandLine, UsageError } from "./cli.ts";
import { log } from "./log.ts";
import { type DataPath, Proxy } from "./proxy.ts";
import { formatTarget, type Target } from "./target.ts";
import { formatTimespan } from "./timespan.ts";
import denoJson from "../deno.json" with { type: "json" };

/** Exit status: success, including `--help`, `--version` and exit after `--exit-idle-time`. */
export const EXIT_SUCCESS = 0;
/** Exit status: any failure, as systemd-socket-proxyd uses it. */
export const EXIT_FAILURE = 1;

/** The package version, from deno.json. */
export const VERSION: string = denoJson.version;

/** Environment variable that selects the client data path: "fast" (default) or "portable". */
export const DATA_PATH_VARIABLE = "SOCKET_PROXYD_DATA_PATH";

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
      return granted({ name: "net" })
        ? null
        : "Deno's permissions do not allow abstract Unix sockets; add --allow-net.";
    case "tcp":
      return granted({ name: "net", host: `${target.host}:${target.port}` })
        ? null
        : `Deno's permissions do not allow connecting to ${formatTarget(target)}; ` +
          `add --allow-net=${formatTarget(target)}.`;
  }
}

function dataPath(): DataPath {
  try {
    return Deno.env.get(DATA_PATH_VARIABLE) === "portable" ? "portable" : "fast";
  } catch {
    return "fast"; // Not allowed to read it: the default.
  }
}

/**
 * Runs the proxy with `args` (without the program name).
 *
 * @returns the exit status; resolves only on failure or once `--exit-idle-time` has passed.
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
  const { options } = command;
  let passed;
  try {
    passed = takeListenEnv();
  } catch (e) {
    if (!(e instanceof ActivationError)) throw e;
    log("error", `Invalid socket activation environment: ${e.message}`);
    return EXIT_FAILURE;
  }
  if (passed.length === 0) {
    log(
      "error",
      "Didn't get any sockets passed in; start me from a .socket unit, or for a test with " +
        "systemd-socket-activate --listen=PORT.",
    );
    return EXIT_FAILURE;
  }
  const problem = permissionProblem(options.target);
  if (problem !== null) {
    log("error", problem);
    return EXIT_FAILURE;
  }

  const idle = Promise.withResolvers<number>();
  const proxy = new Proxy(options, () => idle.resolve(EXIT_SUCCESS), dataPath());
  let listeners: Listener[];
  try {
    listeners = await Promise.all(passed.map((p) => adopt(p, proxy.admit)));
  } catch (e) {
    if (!(e instanceof AdoptionError)) throw e;
    log("error", e.message);
    return EXIT_FAILURE;
  }
  proxy.start();
  const on = listeners.map((l) => `${l.address} (fd ${l.passed.fd}, "${l.passed.name}")`);
  log(
    "info",
    `Forwarding ${on.join(", ")} to ${formatTarget(options.target)}; ` +
      `at most ${options.connectionsMax} connections` +
      (options.exitIdleTimeUsec === Infinity
        ? "."
        : `, exiting after ${formatTimespan(options.exitIdleTimeUsec)} idle.`),
  );
  const status = await idle.promise;
  log("info", `Exiting after ${formatTimespan(options.exitIdleTimeUsec)} without connections.`);
  return status;
}

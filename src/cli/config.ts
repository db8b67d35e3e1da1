/**
 * `--config=FILE`: the arguments of a template instance, from the file its unit names
 * (`/etc/socket-proxyd/INSTANCE.conf`), in systemd's environment file syntax: `TARGET=`, where
 * clients go, and `OPTIONS=`, more options, split into words as systemd splits `$OPTIONS`.
 *
 * The program reads the file, not systemd (`EnvironmentFile=`), because systemd takes that
 * setting's path for a glob: the escaped instance names of IPv6 and path instances
 * (`\x5b::1\x5d:8093`, `-run-app.sock`) hold backslashes, so no such file is ever found.
 *
 * {@link configArguments} is pure; {@link expandConfig} reads the file.
 * @module
 */
import { parseCommandLine, UsageError } from "./cli.ts";
import { EnvFileError, parseEnvironmentFile, splitWords } from "./envfile.ts";

/** The option, always written with `=`, that names a configuration file. */
export const CONFIG_OPTION = "--config=";

/** The variables a configuration file may set. */
export const CONFIG_VARIABLES = ["TARGET", "OPTIONS"] as const;

/** The configuration file cannot be read or is invalid; the message names it and the fix. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

const SPAN_HINT = "OPTIONS= is split into words at blanks, so quote a value with blanks, " +
  `e.g. OPTIONS="--exit-idle-time='5min 20s'"`;

/**
 * The arguments that the configuration `text` (read from `path`) stands for: the words of
 * OPTIONS, then TARGET.
 *
 * @throws {ConfigError} for a syntax error, an unknown variable, a missing TARGET, or
 * arguments that are not a valid command line.
 */
export function configArguments(path: string, text: string): string[] {
  let variables: Map<string, string>;
  let words: string[];
  try {
    variables = parseEnvironmentFile(text);
    words = splitWords(variables.get("OPTIONS") ?? "");
  } catch (e) {
    if (!(e instanceof EnvFileError)) throw e;
    throw new ConfigError(`${path}, ${e.message}.`);
  }
  const unknown = [...variables.keys()].filter((name) =>
    !(CONFIG_VARIABLES as readonly string[]).includes(name)
  );
  if (unknown.length > 0) {
    throw new ConfigError(`${path}: unknown variable ${unknown[0]}=; only TARGET= and OPTIONS=.`);
  }
  const target = variables.get("TARGET") ?? "";
  if (target === "") {
    throw new ConfigError(
      `${path} sets no TARGET=; add a line with where clients go, e.g. TARGET=127.0.0.1:3000.`,
    );
  }
  const args = [...words, target];
  try {
    parseCommandLine(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    const hint = e.message.startsWith("Too many parameters") ? ` ${SPAN_HINT}.` : "";
    throw new ConfigError(`${path}: ${e.message.replace(/\.?$/, ".")}${hint}`);
  }
  return args;
}

function readProblem(e: unknown, path: string): string {
  if (e instanceof Deno.errors.NotFound) return "it does not exist";
  if (e instanceof Deno.errors.PermissionDenied) {
    return "permission denied (the service's user must be able to read it)";
  }
  if (e instanceof Deno.errors.NotCapable) {
    return `Deno's permissions do not allow reading it; add --allow-read=${path}`;
  }
  return (e as Error).message;
}

/**
 * The one file the proxy reads, and only when Deno's permissions allow it (the wrapper grants
 * the path of `--config=` for reading, nothing else).
 */
function readConfigFile(path: string): Promise<string> {
  return Deno.readTextFile(path);
}

/**
 * Replaces `--config=FILE` in `args` (before any `--`) by the arguments of FILE.
 *
 * @param read reads a file's text.
 * @throws {ConfigError} when FILE cannot be read or is invalid, or is given twice.
 */
export async function expandConfig(
  args: readonly string[],
  read: (path: string) => Promise<string> = readConfigFile,
): Promise<string[]> {
  const end = args.indexOf("--") < 0 ? args.length : args.indexOf("--");
  const at = args.findIndex((arg, i) => i < end && arg.startsWith(CONFIG_OPTION));
  if (at < 0) return [...args];
  if (args.slice(at + 1, end).some((arg) => arg.startsWith(CONFIG_OPTION))) {
    throw new ConfigError("--config= is given twice; give one file.");
  }
  const path = args[at].slice(CONFIG_OPTION.length);
  let text: string;
  try {
    text = await read(path);
  } catch (e) {
    throw new ConfigError(
      `Cannot read the configuration file ${path}: ${readProblem(e, path)}. It sets ` +
        "TARGET= (where clients go) and OPTIONS=; see socket-proxyd(8).",
    );
  }
  return [...args.slice(0, at), ...configArguments(path, text), ...args.slice(at + 1)];
}

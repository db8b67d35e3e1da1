/**
 * Command-line arguments split into options and positionals, as `node:util`'s `parseArgs` does
 * in strict mode with positionals allowed: the same syntax (`--name=value`, `--name value`,
 * `-n value`, `-nvalue`, grouped booleans `-hv`, `--` ending the options) and the same error
 * messages. Importing `node:util` loads Deno's whole Node compatibility layer, which cost
 * start-up 65-120 ms and 4 MiB here, before the first client is served. Pure.
 * @module
 */

/** How an option is given. */
export interface OptionSpec {
  readonly type: "boolean" | "string";
  /** Its one-letter form, without the dash. */
  readonly short?: string;
  /** Whether it may be given more than once (its values are collected). */
  readonly multiple?: boolean;
}

/** What {@link parseArgs} takes. */
export interface ParseConfig<O extends Readonly<Record<string, OptionSpec>>> {
  readonly args: readonly string[];
  readonly options: O;
}

/** The value of an option given as `S` says. */
type ValueOf<S extends OptionSpec> = S["type"] extends "boolean" ? boolean
  : S["multiple"] extends true ? string[]
  : string;

/** The options given (booleans as true, strings as given, multiple ones as lists). */
export type Values<O extends Readonly<Record<string, OptionSpec>>> = {
  -readonly [K in keyof O]?: ValueOf<O[K]>;
};

type Options = Readonly<Record<string, OptionSpec>>;

/** An option or a positional, in order. */
type Token =
  | {
    readonly kind: "option";
    readonly name: string;
    readonly rawName: string;
    readonly value: string | undefined;
    readonly inline: boolean;
  }
  | { readonly kind: "positional"; readonly value: string };

/** Arguments that do not fit the options; the message is `parseArgs`'s. */
export class ArgumentError extends TypeError {
  override name = "ArgumentError";
}

/**
 * Splits `args` by `options`.
 * @throws {ArgumentError} for an unknown option, a missing or unexpected value, or a value that
 * looks like an option (`-c -1`).
 */
export function parseArgs<const O extends Options>(
  config: ParseConfig<O>,
): { values: Values<O>; positionals: string[] } {
  const values: Record<string, unknown> = {};
  const positionals: string[] = [];
  for (const token of tokenize(config.args, config.options)) {
    if (token.kind === "positional") {
      positionals.push(token.value);
      continue;
    }
    check(token, config.options);
    const spec = config.options[token.name];
    const value = token.value ?? true;
    if (spec.multiple) {
      ((values[token.name] ??= []) as unknown[]).push(value);
    } else {
      values[token.name] = value;
    }
  }
  return { values: values as Values<O>, positionals };
}

/** The long name of the short option `short`, or `short` itself when none has it. */
function longName(short: string, options: Options): string {
  return Object.keys(options).find((name) => options[name].short === short) ?? short;
}

function typeOf(name: string, options: Options): string | undefined {
  return Object.hasOwn(options, name) ? options[name].type : undefined;
}

function tokenize(args: readonly string[], options: Options): Token[] {
  const tokens: Token[] = [];
  const rest = [...args];
  while (rest.length > 0) {
    const arg = rest.shift()!;
    if (arg === "--") {
      tokens.push(...rest.splice(0).map((value) => ({ kind: "positional", value }) as const));
      break;
    }
    const short = arg.length >= 2 && arg[0] === "-" && arg[1] !== "-";
    const long = arg.length > 2 && arg.startsWith("--");
    if (short && arg.length === 2) {
      const name = longName(arg[1], options);
      const value = typeOf(name, options) === "string" ? rest.shift() : undefined;
      tokens.push({ kind: "option", name, rawName: arg, value, inline: false });
    } else if (short && typeOf(longName(arg[1], options), options) !== "string") {
      rest.unshift(...expandGroup(arg, options));
    } else if (short) {
      const name = longName(arg[1], options);
      tokens.push({
        kind: "option",
        name,
        rawName: `-${arg[1]}`,
        value: arg.slice(2),
        inline: true,
      });
    } else if (long && !arg.includes("=", 3)) {
      const name = arg.slice(2);
      const value = typeOf(name, options) === "string" ? rest.shift() : undefined;
      tokens.push({ kind: "option", name, rawName: arg, value, inline: false });
    } else if (long) {
      const name = arg.slice(2, arg.indexOf("="));
      const value = arg.slice(arg.indexOf("=") + 1);
      tokens.push({ kind: "option", name, rawName: `--${name}`, value, inline: true });
    } else {
      tokens.push({ kind: "positional", value: arg });
    }
  }
  return tokens;
}

/** `-abc` as `-a -b -c`; a string option in the middle takes the rest: `-abfFILE`. */
function expandGroup(arg: string, options: Options): string[] {
  const expanded: string[] = [];
  for (let i = 1; i < arg.length; i++) {
    if (typeOf(longName(arg[i], options), options) !== "string" || i === arg.length - 1) {
      expanded.push(`-${arg[i]}`);
    } else {
      expanded.push(`-${arg.slice(i)}`);
      break;
    }
  }
  return expanded;
}

/** The strict checks, in `parseArgs`'s order and words. */
function check(token: Token & { kind: "option" }, options: Options): void {
  if (!Object.hasOwn(options, token.name)) {
    throw new ArgumentError(
      `Unknown option '${token.rawName}'. To specify a positional argument starting with a ` +
        `'-', place it at the end of the command after '--', as in '-- ` +
        `${JSON.stringify(token.rawName)}`,
    );
  }
  const spec = options[token.name];
  const shortForm = spec.short === undefined ? "" : `-${spec.short}, `;
  if (spec.type === "string" && token.value === undefined) {
    throw new ArgumentError(`Option '${shortForm}--${token.name} <value>' argument missing`);
  }
  if (spec.type === "boolean" && token.value !== undefined) {
    throw new ArgumentError(`Option '${shortForm}--${token.name}' does not take an argument`);
  }
  if (
    !token.inline && token.value !== undefined && token.value.length > 1 &&
    token.value[0] === "-"
  ) {
    const example = token.rawName.startsWith("--")
      ? `'--${token.name}=-XYZ'`
      : `'--${token.name}=-XYZ' or '${token.rawName}-XYZ'`;
    throw new ArgumentError(
      `Option '${token.rawName}' argument is ambiguous.\nDid you forget to specify the option ` +
        `argument for '${token.rawName}'?\nTo specify an option argument starting with a dash ` +
        `use ${example}.`,
    );
  }
}

import { deepEqual, equal, throws } from "node:assert/strict";
import { parseArgs as nodeParseArgs } from "node:util";
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import { ArgumentError, parseArgs } from "../../src/cli/args.ts";

const OPTIONS = {
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
  "connections-max": { type: "string", short: "c" },
  "exit-idle-time": { type: "string" },
  listen: { type: "string", multiple: true },
  target: { type: "string", multiple: true },
  "no-keepalive": { type: "boolean" },
} as const;

/** node:util's verdict: the values and positionals, or the error's message. */
function node(args: string[]): unknown {
  try {
    const { values, positionals } = nodeParseArgs({
      args,
      options: OPTIONS,
      strict: true,
      allowPositionals: true,
    });
    return { values: { ...values }, positionals };
  } catch (e) {
    return (e as Error).message;
  }
}

/** Ours, in the same shape. */
function ours(args: string[]): unknown {
  try {
    const { values, positionals } = parseArgs({ args, options: OPTIONS });
    return { values: { ...values }, positionals };
  } catch (e) {
    equal((e as Error).name, "ArgumentError");
    return (e as Error).message;
  }
}

Deno.test("parseArgs: what the program's command lines look like", () => {
  deepEqual(
    ours(["-c", "5", "--listen=a", "--listen", "b", "-hv", "127.0.0.1:80"]),
    {
      values: { "connections-max": "5", listen: ["a", "b"], help: true, verbose: true },
      positionals: ["127.0.0.1:80"],
    },
  );
  deepEqual(ours(["-c5", "--", "--help", "-"]), {
    values: { "connections-max": "5" },
    positionals: ["--help", "-"],
  });
  deepEqual(ours(["-vc7"]), { values: { verbose: true, "connections-max": "7" }, positionals: [] });
});

Deno.test("parseArgs: node:util's errors, word for word", () => {
  const message = (args: string[]) => (ours(args) as string).split("\n")[0];
  equal(
    message(["--foo"]),
    "Unknown option '--foo'. To specify a positional argument starting with a '-', place it at " +
      `the end of the command after '--', as in '-- "--foo"`,
  );
  equal(message(["-c"]), "Option '-c, --connections-max <value>' argument missing");
  equal(message(["--exit-idle-time"]), "Option '--exit-idle-time <value>' argument missing");
  equal(message(["--help=1"]), "Option '-h, --help' does not take an argument");
  equal(message(["-c", "-1"]), "Option '-c' argument is ambiguous.");
  throws(() => parseArgs({ args: ["-x"], options: OPTIONS }), ArgumentError);
});

Deno.test("property: parseArgs agrees with node:util's (strict, positionals allowed) on any arguments", () => {
  const piece = fc.oneof(
    fc.constantFrom(
      "-h",
      "-v",
      "-c",
      "-hv",
      "-vh",
      "-c5",
      "-vc5",
      "-hc",
      "-x",
      "-1",
      "-",
      "--",
      "--help",
      "--help=",
      "--help=1",
      "--verbose",
      "--connections-max",
      "--connections-max=",
      "--connections-max=-3",
      "--exit-idle-time",
      "--exit-idle-time=5s",
      "--listen",
      "--listen=a",
      "--target=x=1",
      "--no-keepalive",
      "--nope",
      "--=x",
      "127.0.0.1:80",
      "h",
      "5",
      "",
    ),
    fc.string({ maxLength: 6 }),
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 8 }), (args) => {
      deepEqual(ours(args), node(args), JSON.stringify(args));
    }),
    { numRuns: 3000 },
  );
});

/**
 * Builds the one-file program, `dist/socket-proxyd.js` (`deno task bundle`; the packages run it
 * the same way, packaging/deno.sh):
 *
 *   deno run --allow-read --allow-write --allow-run packaging/bundle.ts OUT
 *
 * `deno bundle` makes one JavaScript file of the program (packaging/program.ts and what it
 * imports); this writes OUT as that text in a string, which OUT compiles and runs when it starts.
 *
 * Why a string: before it runs a module, Deno parses all of it to find its imports (swc, on a
 * worker thread), and keeps what it found in DENO_DIR's cache, which the deployed program has
 * none of (systemd/socket-proxyd). For the program's 180 KB that parse was the largest cost of
 * every start above Deno's own: 20-25 ms, and 2.5 MiB of anonymous memory that the worker's
 * malloc arena kept (docs/startup.md). A string is one token to parse; V8 compiles the program
 * from it as it would compile the module, lazily. The program has no import of its own, and the
 * `import()`s of Node's modules that it makes on rare paths work from a compiled function as
 * from a module. Error traces name `socket-proxyd-program.js`, at the bundle's line numbers plus
 * three: the function's head and "use strict" (`deno bundle packaging/program.ts` prints the
 * bundle).
 *
 * One JSON string on one line: the same text as a template literal, or as a string continued
 * over the bundle's lines, started 3-6 ms later and kept 0.6-1.2 MiB more (A/B, same rounds); so
 * did, by 0.8 MiB, "use strict" on the bundle's first line rather than a line of its own.
 * @module
 */

const AsyncFunction = (async () => {}).constructor as new (body: string) => () => Promise<void>;

/** The name V8 gives the program's code in stack traces (`//# sourceURL=`). */
export const PROGRAM_NAME = "socket-proxyd-program.js";

/**
 * The one-file program: `bundle` (the output of `deno bundle`, an ES module that imports and
 * exports nothing) in a string, compiled as the body of an async function (strict, as a module
 * is) and run.
 * @throws {SyntaxError} when `bundle` cannot be such a body (a static `import`, `import.meta`).
 */
export function oneFile(bundle: string): string {
  const end = bundle.endsWith("\n") ? "" : "\n";
  const body = `"use strict";\n${bundle}${end}//# sourceURL=${PROGRAM_NAME}\n`;
  new AsyncFunction(body); // Compiles without running: fails the build, not the first start.
  return [
    "// socket-proxyd: the program (bundled by `deno task bundle`, packaging/bundle.ts) is the",
    "// text of PROGRAM, compiled and run when this file runs: as a string, Deno need not parse it",
    "// at every start to look for imports (it has none).",
    `const PROGRAM = ${JSON.stringify(body)};`,
    "await new (async () => {}).constructor(PROGRAM)();",
    "",
  ].join("\n");
}

/**
 * Bundles from the checkout's root whatever the caller's working directory: `deno bundle` names
 * each module in the output by its path from there, so the bytes depend on it.
 */
async function main(out: string): Promise<number> {
  const root = decodeURIComponent(new URL("..", import.meta.url).pathname);
  const dir = await Deno.makeTempDir({ prefix: "socket-proxyd-bundle-" });
  try {
    const bundle = `${dir}/program.js`;
    const { code } = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "-q", "--platform=deno", "-o", bundle, "packaging/program.ts"],
      cwd: root,
    }).spawn().status;
    if (code !== 0) return code;
    const program = oneFile(await Deno.readTextFile(bundle));
    try {
      // As `deno bundle -o` did: a fresh checkout has no dist/ yet.
      const parent = out.slice(0, out.lastIndexOf("/"));
      if (parent !== "") await Deno.mkdir(parent, { recursive: true });
      await Deno.writeTextFile(out, program);
    } catch (e) {
      console.error(`bundle: cannot write ${out}: ${(e as Error).message}`);
      return 1;
    }
    return 0;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  if (Deno.args.length !== 1) {
    console.error("usage: deno run --allow-read --allow-write --allow-run packaging/bundle.ts OUT");
    Deno.exit(2);
  }
  Deno.exit(await main(Deno.args[0]));
}

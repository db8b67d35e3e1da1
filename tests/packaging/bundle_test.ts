/**
 * The one-file build (packaging/bundle.ts): the program as a string the file compiles and runs,
 * with a module's strictness and top-level await, and `import()` of Node's modules; a bundle that
 * could not run so fails the build; and dist/socket-proxyd.js is this checkout's program so built.
 */
import { equal, ok, throws } from "node:assert/strict";
import { oneFile, PROGRAM_NAME } from "../../packaging/bundle.ts";
import { ROOT } from "../integration/harness.ts";

async function runFile(text: string): Promise<{ code: number; out: string; err: string }> {
  const path = await Deno.makeTempFile({ suffix: ".js" });
  try {
    await Deno.writeTextFile(path, text);
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "--no-config", path],
      env: { NO_COLOR: "1" },
    }).output();
    const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
    return { code: result.code, out: decode(result.stdout), err: decode(result.stderr) };
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("the one file runs the program: top-level await, import() of node:, strict", async () => {
  const bundle = [
    'const { lookup } = await import("node:dns/promises");',
    "console.log(typeof lookup, `${'a'}\\\\b\\n`.length, this === undefined);",
    "try { undeclared = 1; } catch (e) { console.log(e.name); }",
    "Deno.exit(3);",
    "",
  ].join("\n");
  const { code, out } = await runFile(oneFile(bundle));
  equal(out, "function 4 true\nReferenceError\n");
  equal(code, 3);
});

Deno.test("the one file's errors name the program, with the bundle's line numbers", async () => {
  const { code, err } = await runFile(oneFile("\n\nthrow new Error('boom');\n"));
  equal(code, 1);
  // Three lines above the bundle's: the function's head (two) and "use strict".
  ok(err.includes(`${PROGRAM_NAME}, <anonymous>:6:`), err);
});

Deno.test("a bundle that cannot be a function's body fails the build", () => {
  throws(() => oneFile('import { x } from "./x.js";\nx();\n'), SyntaxError);
  throws(() => oneFile("if (import.meta.main) Deno.exit(0);\n"), SyntaxError);
});

Deno.test("dist/socket-proxyd.js is this checkout's program, as deno task bundle builds it", async () => {
  const dir = await Deno.makeTempDir();
  const elsewhere = await Deno.makeTempDir(); // The caller's directory changes nothing.
  try {
    const out = `${dir}/dist/socket-proxyd.js`; // A directory yet to be made, as in a fresh clone.
    const built = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "--allow-read",
        "--allow-write",
        "--allow-run",
        `${ROOT}packaging/bundle.ts`,
        out,
      ],
      cwd: elsewhere,
    }).output();
    equal(built.code, 0, new TextDecoder().decode(built.stderr));
    const dist = `${ROOT}dist/socket-proxyd.js`;
    ok(existsSync(dist), `${dist} is missing: run deno task bundle first`);
    equal(Deno.readTextFileSync(dist), Deno.readTextFileSync(out));
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(elsewhere, { recursive: true });
  }
});

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

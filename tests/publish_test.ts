/**
 * What `deno publish` would send to JSR: exactly what runs (main.ts and src/), with the README,
 * the licence, deno.json, the man page and the template units; no tests, benchmarks, packaging or
 * build output. The dry run works offline (it type-checks and lists, and asks JSR for nothing:
 * it passes here, where JSR cannot be reached), so this runs it and compares its list with the
 * files on disk.
 */
import { deepEqual, ok } from "node:assert/strict";
import { ROOT } from "./integration/harness.ts";

/** The files under `dir` (relative to the checkout), in every folder. */
function filesUnder(dir: string): string[] {
  return [...Deno.readDirSync(`${ROOT}${dir}`)].flatMap((entry) =>
    entry.isDirectory ? filesUnder(`${dir}/${entry.name}`) : [`${dir}/${entry.name}`]
  );
}

Deno.test("deno publish --dry-run sends what runs, the docs that ship and the units, nothing else", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    // --allow-dirty: the list is the point, not whether the checkout is committed.
    args: ["publish", "--dry-run", "--allow-dirty", `--config=${ROOT}deno.json`],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  ok(out.code === 0 && text.includes("Dry run complete"), text);
  const listed = [...text.matchAll(/^\s+file:\/\/(\S+) \([\d.]+K?B\)$/gm)]
    .map((m) => m[1].slice(ROOT.length)).sort();
  const expected = [
    "LICENSE",
    "README.md",
    "deno.json",
    "main.ts",
    "systemd/socket-proxyd.8",
    ...filesUnder("src"),
    ...filesUnder("systemd/units"),
  ].sort();
  deepEqual(listed, expected);
  for (const unit of ["system", "user"]) {
    ok(listed.includes(`systemd/units/${unit}/socket-proxyd@.service`), unit);
  }
});

/**
 * Facts the README (and the pages it links) state must be what the program and the build really
 * do: the options, the line for running from a URL, the Deno floor and the pinned Deno, the
 * version in the package's file name.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { HELP } from "../src/cli.ts";
import { DENO_FLOOR } from "../src/runtime.ts";
import { VERSION } from "../src/version.ts";
import { DEPLOYMENT_ENV, DEPLOYMENT_FLAGS } from "./integration/harness.ts";

const root = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFileSync(new URL(path, root));
const readme = read("README.md");
/** The README's prose with line breaks as spaces, so that reflowing it breaks no test. */
const prose = readme.replace(/\s+/g, " ");
const config = JSON.parse(read("deno.json"));

/** The fenced block that follows `<!-- NAME -->`. */
function block(text: string, name: string): string {
  const at = text.indexOf(`<!-- ${name} -->`);
  ok(at >= 0, `no <!-- ${name} --> marker`);
  return /```\w*\n([^]*?)```/.exec(text.slice(at))![1];
}

Deno.test("every option in --help is documented in the README", () => {
  const options = [...HELP.matchAll(/--([a-z-]+)/g)].map((m) => m[1]);
  ok(options.length >= 10);
  for (const option of new Set(options)) ok(readme.includes(`--${option}`), option);
});

Deno.test("the README's line for running from a URL grants exactly the deployment permission set", () => {
  const words = block(readme, "run-from-url").replaceAll("\\\n", " ").trim().split(/\s+/);
  deepEqual(words.slice(0, 4), [...DEPLOYMENT_ENV, "deno", "run", "-q"], "the environment too");
  deepEqual(words.slice(4, -2), DEPLOYMENT_FLAGS, "the flags the URL tests run with");
  match(words.at(-2)!, /^https:\/\/.*\/socket-proxyd\.js$/);
  equal(words.at(-1), "TARGET");
  const set = config.permissions.proxy;
  ok(DEPLOYMENT_FLAGS.includes(`--allow-env=${set.env.join(",")}`));
  ok(DEPLOYMENT_FLAGS.includes(`--allow-write=${set.write.join(",")}`));
});

Deno.test("the README states the Deno floor the program enforces", () => {
  ok(prose.includes(`Your Deno must be ${DENO_FLOOR} or later.`));
  match(readme, new RegExp(`^\\| ${DENO_FLOOR.replaceAll(".", "\\.")} +\\|.*\\| floor +\\|$`, "m"));
});

Deno.test("the pinned Deno is one: .ci/run, the package's runtime, the README", () => {
  const pinned = /^pinned=(\d+\.\d+\.\d+)$/m.exec(read(".ci/run"))![1];
  match(read("packaging/deb/deno.pin"), new RegExp(`^@deno/linux-x64-glibc ${pinned} `, "m"));
  ok(prose.includes(`with the Deno the project is tested with (${pinned},`), "README");
  match(readme, new RegExp(`^\\| ${pinned.replaceAll(".", "\\.")} +\\|.*\\| pinned +\\|$`, "m"));
});

Deno.test("one version: deno.json, the program, the package's changelog, the file names in the READMEs", () => {
  equal(VERSION, config.version);
  match(read("packaging/deb/debian/changelog"), new RegExp(`^socket-proxyd \\(${VERSION}\\) `));
  for (const page of ["README.md", "systemd/README.md"]) {
    const names = [...read(page).matchAll(/socket-proxyd_([\d.]+)_amd64\.deb/g)].map((m) => m[1]);
    ok(names.length > 0, page);
    for (const name of names) equal(name, VERSION, page);
  }
});

Deno.test("deno.json's tasks that start the program set the deployment environment", () => {
  for (const task of ["start", "socket-activate"]) {
    const command: string = config.tasks[task];
    for (const setting of DEPLOYMENT_ENV) ok(command.includes(setting), `${task}: ${setting}`);
  }
});

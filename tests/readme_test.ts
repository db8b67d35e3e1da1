/**
 * Facts the README (and the pages it links) state must be what the program and the build really
 * do: the options, the line for running from a URL, the Deno floor and the pinned Deno, the
 * version in the package's file name.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { HELP } from "../src/cli/cli.ts";
import { DENO_FLOOR } from "../src/service/runtime.ts";
import { VERSION } from "../src/cli/version.ts";
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
  // The set's --allow-write=, with the notification socket NOTIFY_SOCKET names in front of it
  // when a shell finds it set (tests/systemd/notify_grant_test.ts runs the line).
  const write = `--allow-write=${config.permissions.proxy.write.join(",")}`;
  const notify = `"--allow-write=\${NOTIFY_SOCKET:+$NOTIFY_SOCKET,}${
    write.slice("--allow-write=".length)
  }"`;
  deepEqual(
    words.slice(4, -2).map((word) => word === notify ? write : word),
    DEPLOYMENT_FLAGS,
    "the flags the URL tests run with",
  );
  ok(words.includes(notify), notify);
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

/** The README's section that starts with the heading `title`, up to the next heading as deep. */
function section(title: string): string {
  const start = readme.indexOf(`\n${title}\n`);
  ok(start >= 0, `no heading ${title}`);
  const level = title.split(" ")[0];
  const next = readme.slice(start + title.length + 2).search(
    new RegExp(`^#{1,${level.length}} `, "m"),
  );
  return readme.slice(start, next < 0 ? undefined : start + title.length + 2 + next);
}

Deno.test("the README opens with the two commands, the first listening on loopback only", () => {
  const pinned = /^pinned=(\d+\.\d+\.\d+)$/m.exec(read(".ci/run"))![1];
  const headings = [...readme.matchAll(/^##+ .*$/gm)].map((m) => m[0]);
  deepEqual(headings.slice(0, 3), [
    "## Two commands on a fresh machine",
    "## Install",
    "### Get the package: build it",
  ]);
  equal(
    block(readme, "first-command").trim(),
    `LISTEN=127.0.0.1:8080 npx -y deno@${pinned} task socket-activate 127.0.0.1:8000`,
  );
  match(config.tasks["socket-activate"], /^systemd-socket-activate (-E \S+ )*--listen=\$LISTEN /);
  equal(block(readme, "test-command").trim(), `npx -y deno@${pinned} task test`);
  equal(block(readme, "build-package").trim(), `npx -y deno@${pinned} task deb`);
});

Deno.test("the README names every tool tests/setup.sh checks for, and its Debian package", () => {
  const tools = /^tools=\(([^)]*)\)$/m.exec(read("tests/setup.sh"))![1].trim().split(/\s+/);
  ok(tools.length >= 5);
  const text = section("## Two commands on a fresh machine").replace(/\s+/g, " ");
  for (const entry of tools) {
    const [tool, pkg] = entry.split(":");
    ok(text.includes(`\`${tool}\``), tool);
    ok(text.includes(`\`${pkg}\``), pkg);
  }
  ok(!/pkill|killall/.test(read("tests/setup.sh")), "setup.sh kills nothing by name");
});

Deno.test("the package and the archive: where the files appear, by the names the builds give", () => {
  const install = section("## Install").replace(/\s+/g, " ");
  match(install, new RegExp(`writes \`dist/socket-proxyd_${VERSION}_amd64\\.deb\``));
  match(install, new RegExp(`apt install \\./dist/socket-proxyd_${VERSION}_amd64\\.deb`));
  match(read("packaging/archive/build.sh"), / name=socket-proxyd-\$version-linux-\$2 /);
  equal(config.tasks.archive, "bash packaging/archive/build.sh");
  const archive = `socket-proxyd-${VERSION}-linux-x86_64`;
  match(install, new RegExp(`writes \`dist/${archive}\\.tar\\.gz\``));
  const unpack = block(readme.replace("<!-- e2e: unpack-archive -->", "<!-- unpack -->"), "unpack");
  ok(unpack.includes(`tar -xzf ${archive}.tar.gz -C /opt`), unpack);
  ok(unpack.includes(`ln -s /opt/${archive}/bin/socket-proxyd /usr/local/bin/socket-proxyd`));
  for (const page of ["README.md", "systemd/README.md"]) {
    const names = [...read(page).matchAll(/socket-proxyd-([\d.]+)-linux-/g)].map((m) => m[1]);
    ok(names.length > 0, page);
    for (const name of names) equal(name, VERSION, page);
  }
});

Deno.test("removal and purge, as the README says them: the administrator's confs stay", () => {
  ok(!prose.includes("leaves nothing"));
  ok(prose.includes("your `/etc/socket-proxyd/*.conf` files stay"));
  // The package's only file in /etc is its conffile; the purge test checks an admin's conf stays.
  equal(read("packaging/deb/debian/socket-proxyd.install").match(/ etc\//g)?.length, 1);
  match(
    read("tests/systemd/package.sh"),
    /\[ "\$\(ct ls -A \/etc\/socket-proxyd\)" = 8081\.conf \]/,
  );
});

Deno.test("running from a URL needs no --allow-import, and the URL test adds none", () => {
  ok(!readme.includes("--allow-import="), "the README asks for no --allow-import=HOST");
  ok(!read("tests/integration/url_test.ts").includes("--allow-import="));
});

Deno.test("the licence is MIT, copyright the socket-proxyd authors, everywhere it is stated", () => {
  const licence = read("LICENSE");
  match(licence, /^MIT License\n\nCopyright \d{4} the socket-proxyd authors\n/);
  equal(config.license, "MIT");
  const copyright = read("packaging/deb/debian/copyright");
  match(copyright, /^Files: \*\nCopyright: \d{4} the socket-proxyd authors\nLicense: Expat\n/m);
  ok(!copyright.includes("no-licence-granted"));
  // The Expat text there is the LICENSE's, reflowed.
  const words = (text: string) => text.replace(/^ \.$/gm, "").replace(/\s+/g, " ").trim();
  const expat = /^License: Expat\n((?: .*\n)+)/m.exec(copyright)![1];
  equal(words(expat), words(licence.slice(licence.indexOf("Permission"))));
  ok(prose.includes("free software under the [MIT licence](LICENSE)"));
});
Deno.test("deno.json's tasks that start the program set the deployment environment", () => {
  for (const task of ["start", "socket-activate"]) {
    const command: string = config.tasks[task];
    for (const setting of DEPLOYMENT_ENV) ok(command.includes(setting), `${task}: ${setting}`);
  }
});

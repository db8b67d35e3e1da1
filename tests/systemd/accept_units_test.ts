/**
 * The Accept=yes example (systemd/accept/): statically clean and locked down. Its behaviour, one
 * instance per connection, is proven through systemd-socket-activate --accept in
 * tests/integration/service_test.ts.
 */
import { equal, match, ok } from "node:assert/strict";

const dir = new URL("../../systemd/accept/", import.meta.url);
const units = ["proxy-accept.socket", "proxy-accept@.service"];

/** A root directory with the host's unit library, the example units and a stand-in binary. */
function fakeRoot(): string {
  const root = Deno.makeTempDirSync({ prefix: "socket-proxyd-units-" });
  Deno.mkdirSync(`${root}/etc/systemd/system`, { recursive: true });
  Deno.mkdirSync(`${root}/usr/local/bin`, { recursive: true });
  Deno.mkdirSync(`${root}/usr/lib/systemd`, { recursive: true });
  Deno.symlinkSync("/lib/systemd/system", `${root}/usr/lib/systemd/system`);
  for (const unit of units) {
    Deno.copyFileSync(new URL(unit, dir), `${root}/etc/systemd/system/${unit}`);
  }
  Deno.writeTextFileSync(`${root}/usr/local/bin/socket-proxyd`, "#!/bin/sh\n", { mode: 0o755 });
  return root;
}

async function analyze(args: string[]): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command("systemd-analyze", {
    args,
    env: { SYSTEMD_COLORS: "0" },
  }).output();
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

Deno.test("systemd-analyze verify prints nothing for the Accept=yes units", async () => {
  const root = fakeRoot();
  const { code, output } = await analyze([
    "verify",
    "--man=no",
    `--root=${root}`,
    ...units.map((u) => `/etc/systemd/system/${u}`),
  ]);
  Deno.removeSync(root, { recursive: true });
  equal(output, "");
  equal(code, 0);
});

Deno.test("the Accept=yes service is SAFE (exposure at most 1.0) and uses Type=notify", async () => {
  const root = fakeRoot();
  const { output } = await analyze([
    "security",
    "--offline=true",
    `--root=${root}`,
    "proxy-accept@.service",
  ]);
  Deno.removeSync(root, { recursive: true });
  const level = Number(
    output.match(/Overall exposure level for proxy-accept@i\.service: ([\d.]+)/)?.[1],
  );
  ok(level <= 1.0, output.split("\n").at(-2));
  const service = Deno.readTextFileSync(new URL("proxy-accept@.service", dir));
  match(service, /^Type=notify$/m);
  match(service, /^ExecStart=\/usr\/local\/bin\/socket-proxyd /m);
  match(Deno.readTextFileSync(new URL("proxy-accept.socket", dir)), /^Accept=yes$/m);
});

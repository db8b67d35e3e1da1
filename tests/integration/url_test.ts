/**
 * Running from a URL with the README's one line of flags, as a user with their own Deno does:
 * `main.ts` from a code host's raw URL (served as text/plain, as raw.githubusercontent.com
 * serves it) and the one-file build from a release URL (application/javascript), each started
 * by systemd-socket-activate with an empty Deno cache and forwarding for real.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  DEPLOYMENT_ENV,
  DEPLOYMENT_FLAGS,
  echoBackend,
  freePort,
  Process,
  pseudoRandomBytes,
  readAll,
  ROOT,
  TEST_DENO,
  writeAll,
} from "./harness.ts";

/** The one-file build, as `deno task bundle` writes it (the CI runs that first). */
const BUNDLE = `${ROOT}dist/socket-proxyd.js`;

/** Serves the checkout at /raw/ as text/plain and the bundle at /release/, logging requests. */
function codeHost(): { server: Deno.HttpServer<Deno.NetAddr>; base: string; requests: string[] } {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    requests.push(path);
    try {
      if (path === "/release/socket-proxyd.js") {
        return new Response(Deno.readFileSync(BUNDLE), {
          headers: { "content-type": "application/javascript" },
        });
      }
      if (path.startsWith("/raw/") && !path.includes("..")) {
        return new Response(Deno.readFileSync(`${ROOT}${path.slice("/raw/".length)}`), {
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      }
    } catch {
      // Not found below.
    }
    return new Response("not found", { status: 404 });
  });
  return { server, base: `http://127.0.0.1:${server.addr.port}`, requests };
}

/**
 * Starts `deno run -q FLAGS URL TARGET`, the README's line, through systemd-socket-activate on a
 * fresh port.
 */
async function runFromUrl(url: string, target: string) {
  const port = freePort();
  const denoDir = Deno.makeTempDirSync({ prefix: "socket-proxyd-url-cache-" });
  const activator = new Process("systemd-socket-activate", [
    `--listen=127.0.0.1:${port}`,
    `--setenv=DENO_DIR=${denoDir}`,
    "--",
    "env",
    ...DEPLOYMENT_ENV,
    TEST_DENO ?? Deno.execPath(),
    "run",
    "-q",
    ...DEPLOYMENT_FLAGS,
    url,
    target,
  ]);
  await activator.waitForLog(/Listening on .* as \d+\./);
  return { activator, port, denoDir };
}

for (const kind of ["raw main.ts", "release bundle"] as const) {
  Deno.test(`run from a URL (${kind}): forwards both ways with half-close`, async () => {
    const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
    const target = `127.0.0.1:${(backend.listener.addr as Deno.NetAddr).port}`;
    const host = codeHost();
    // No --allow-import, though this host is not on Deno's default list of hosts imports may
    // come from: Deno loads the module named on the command line and its static imports
    // without it. The bundle imports nothing.
    const url = kind === "raw main.ts"
      ? `${host.base}/raw/main.ts`
      : `${host.base}/release/socket-proxyd.js`;
    const { activator, port, denoDir } = await runFromUrl(url, target);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const payload = pseudoRandomBytes(1_000_000, 17);
      const [, back] = await Promise.all([
        writeAll(conn, payload).then(() => conn.closeWrite()),
        readAll(conn),
      ]);
      conn.close();
      equal(back.length, payload.length);
      deepEqual(back, payload);
      await activator.waitForLog(/Forwarding 127\.0\.0\.1:\d+ \(fd 3, "unknown"\) to /);
      if (kind === "release bundle") {
        deepEqual(host.requests, ["/release/socket-proxyd.js"], "one file, nothing else");
      } else {
        ok(host.requests.includes("/raw/src/service/app.ts"), host.requests.join(" "));
        ok(host.requests.every((r) => r.endsWith(".ts")), `only modules: ${host.requests}`);
      }
    } finally {
      await activator.stop();
      await host.server.shutdown();
      await backend.close();
      Deno.removeSync(denoDir, { recursive: true });
    }
  });
}

Deno.test("run from a URL: the bundle's --version names the program and the running Deno", async () => {
  const host = codeHost();
  const child = await new Deno.Command(TEST_DENO ?? Deno.execPath(), {
    args: ["run", "-q", ...DEPLOYMENT_FLAGS, `${host.base}/release/socket-proxyd.js`, "--version"],
    env: { DENO_DIR: Deno.makeTempDirSync() },
    stdin: "null",
  }).output();
  await host.server.shutdown();
  equal(child.code, 0, new TextDecoder().decode(child.stderr));
  match(
    new TextDecoder().decode(child.stdout),
    /^socket-proxyd \d+\.\d+\.\d+ \(Deno 2\.\d+\.\d+\)\n$/,
  );
});

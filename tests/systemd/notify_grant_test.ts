/**
 * The notification socket in every form the program runs in: the wrapper systemd/socket-proxyd
 * as the source, the package and the release archive install it (packaging/layout.sh makes the
 * latter two), `deno task start` and `deno task socket-activate`, and the README's line for
 * running from a URL. Each lets Deno write exactly the socket NOTIFY_SOCKET names (a user
 * manager's, say, /run/user/UID/systemd/notify) and the journal's, and nothing else: READY=1
 * arrives from the real program, and a probe run by the wrapper in the program's place
 * (grant_probe.js) shows what else is writable. The same on a booted systemd, in a user unit:
 * tests/systemd/user.sh.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  DEPLOYMENT_ENV,
  freePort,
  NotifyReceiver,
  Process,
  ROOT,
  tempSocketPath,
} from "../integration/harness.ts";

const BUNDLE = `${ROOT}dist/socket-proxyd.js`;
const PROBE = `${ROOT}tests/systemd/grant_probe.js`;
const JOURNAL = "/run/systemd/journal/socket";
const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
const decoder = new TextDecoder();

/** A program that serves an abstract socket of its own and exits once idle, sending READY=1. */
function idleArgs(): string[] {
  return [
    `--listen=@socket-proxyd-grant-test-${crypto.randomUUID()}`,
    "--exit-idle-time=300ms",
    "127.0.0.1:1",
  ];
}

/** The wrapper as the package or the archive installs it (packaging/layout.sh), or the source's. */
async function wrapperFor(form: "source" | "package" | "archive", dir: string): Promise<string> {
  if (form === "source") return `${ROOT}systemd/socket-proxyd`;
  const out = await new Deno.Command("bash", {
    args: ["-c", `die() { echo "$*" >&2; exit 1; }; source packaging/layout.sh; ${form}_wrapper`],
    cwd: ROOT,
  }).output();
  equal(out.code, 0, decoder.decode(out.stderr));
  // The archive's wrapper finds Deno and the program from its own place: bin/../lib/socket-proxyd.
  Deno.mkdirSync(`${dir}/bin`);
  Deno.mkdirSync(`${dir}/lib/socket-proxyd`, { recursive: true });
  Deno.symlinkSync(Deno.execPath(), `${dir}/lib/socket-proxyd/deno`);
  Deno.symlinkSync(BUNDLE, `${dir}/lib/socket-proxyd/socket-proxyd.js`);
  Deno.writeFileSync(`${dir}/bin/socket-proxyd`, out.stdout, { mode: 0o755 });
  return `${dir}/bin/socket-proxyd`;
}

/** Runs WRAPPER with ARGS in an environment of ENV only (the package's paths overridden). */
async function runWrapper(
  wrapper: string,
  form: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  const paths: Record<string, string> = form === "archive"
    ? {}
    : { SOCKET_PROXYD_DENO: Deno.execPath(), SOCKET_PROXYD_PROGRAM: BUNDLE };
  const out = await new Deno.Command("sh", {
    args: [wrapper, ...args],
    env: { ...paths, ...env },
    clearEnv: true,
    stdin: "null",
  }).output();
  return { code: out.code, stderr: decoder.decode(out.stderr) };
}

/** The probe's report: PATH -> "write=STATE read=STATE". */
function grants(stderr: string): Map<string, string> {
  return new Map(
    [...stderr.matchAll(/^grant (\S+): (write=\w+ read=\w+)$/gm)].map((m) => [m[1], m[2]]),
  );
}

/** A directory for one test, removed afterwards. */
async function inTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-grant-" });
  try {
    await body(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

for (const form of ["source", "package", "archive"] as const) {
  Deno.test(`the ${form}'s wrapper: READY=1 reaches the socket NOTIFY_SOCKET names`, async () => {
    await inTempDir(async (dir) => {
      const wrapper = await wrapperFor(form, dir);
      const path = `${dir}/user-1000-systemd-notify`;
      const receiver = new NotifyReceiver(path);
      try {
        const { code, stderr } = await runWrapper(wrapper, form, idleArgs(), {
          NOTIFY_SOCKET: path,
        });
        equal(code, 0, stderr);
        ok(!stderr.includes("Cannot notify"), stderr);
        await receiver.waitFor((m) => m.READY === "1");
      } finally {
        await receiver.close();
      }
    });
  });

  Deno.test(`the ${form}'s wrapper lets Deno write that socket and the journal's, nothing else`, async () => {
    await inTempDir(async (dir) => {
      const wrapper = await wrapperFor(form, dir);
      const path = `${dir}/systemd/notify`;
      Deno.mkdirSync(`${dir}/systemd`);
      const receiver = new NotifyReceiver(path);
      try {
        const { code, stderr } = await runWrapper(wrapper, form, [], {
          NOTIFY_SOCKET: path,
          SOCKET_PROXYD_PROGRAM: PROBE,
        });
        equal(code, 0, stderr);
        deepEqual(
          grants(stderr),
          new Map([
            ["/run/systemd/notify", "write=prompt read=prompt"],
            [JOURNAL, "write=granted read=prompt"],
            ["/tmp", "write=prompt read=prompt"],
            ["/", "write=prompt read=prompt"],
            ["/run/systemd/journal", "write=prompt read=prompt"],
            [path, "write=granted read=prompt"],
            [`${path}-sibling`, "write=prompt read=prompt"],
            [`${dir}/systemd`, "write=prompt read=prompt"],
            [dir, "write=prompt read=prompt"],
          ]),
        );
      } finally {
        await receiver.close();
      }
    });
  });
}

/** The write state the source's wrapper gives the probe for PATH, with NOTIFY_SOCKET=VALUE. */
async function probeWrite(notify: string | undefined, path: string): Promise<string | undefined> {
  const env: Record<string, string> = { SOCKET_PROXYD_PROGRAM: PROBE };
  if (notify !== undefined) env.NOTIFY_SOCKET = notify;
  const { code, stderr } = await runWrapper(`${ROOT}systemd/socket-proxyd`, "source", [], env);
  equal(code, 0, stderr);
  const found = grants(stderr);
  equal(found.get(JOURNAL), "write=granted read=prompt", "the journal's socket, always");
  // Nothing but the journal's socket and NOTIFY_SOCKET (when granted) is writable.
  for (const [where, state] of found) {
    if (where !== JOURNAL && where !== path) equal(state, "write=prompt read=prompt", where);
  }
  return found.get(path);
}

Deno.test("the wrapper grants no notification socket without NOTIFY_SOCKET, nor for an abstract one", async () => {
  equal(await probeWrite(undefined, "/run/systemd/notify"), "write=prompt read=prompt");
  equal(
    await probeWrite("@socket-proxyd-abstract", "/run/systemd/notify"),
    "write=prompt read=prompt",
  );
});

Deno.test("the wrapper grants NOTIFY_SOCKET only when it names a socket: not a directory, a file, a missing or relative path", async () => {
  await inTempDir(async (dir) => {
    // A directory would grant everything below it.
    equal(await probeWrite(dir, dir), "write=prompt read=prompt");
    equal(await probeWrite(`${dir}/missing`, `${dir}/missing`), "write=prompt read=prompt");
    Deno.writeTextFileSync(`${dir}/file`, "");
    equal(await probeWrite(`${dir}/file`, `${dir}/file`), "write=prompt read=prompt");
  });
  equal(await probeWrite("run/systemd/notify", "/run/systemd/notify"), "write=prompt read=prompt");
});

Deno.test("the wrapper refuses a NOTIFY_SOCKET with a comma, which Deno would split into two paths", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/a,b`;
    const receiver = new NotifyReceiver(path);
    try {
      const { code, stderr } = await runWrapper(`${ROOT}systemd/socket-proxyd`, "source", [], {
        NOTIFY_SOCKET: path,
      });
      equal(code, 1);
      match(stderr, /a path with a comma cannot be passed to Deno's permission flags: .*a,b/);
    } finally {
      await receiver.close();
    }
  });
});

/** The `$(sh -c '...')` of `deno task start`, which prints the notification socket's grant. */
const START_GRANT = /\$\(sh -c '([^']*)'\)/.exec(config.tasks.start)?.[1] ?? "";

async function startGrant(env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command("sh", { args: ["-c", START_GRANT], env, clearEnv: true })
    .output();
  equal(out.code === 0 || out.code === 1, true, decoder.decode(out.stderr));
  return decoder.decode(out.stdout);
}

Deno.test("deno task start: the same rule as the wrapper's", async () => {
  equal(
    config.tasks.start,
    `DENO_USR2_MEMORY_TRIM=1 deno run -q -P=proxy --allow-write=$(sh -c '${START_GRANT}')${JOURNAL} main.ts`,
  );
  await inTempDir(async (dir) => {
    const path = `${dir}/notify`;
    const receiver = new NotifyReceiver(path);
    try {
      equal(await startGrant({ NOTIFY_SOCKET: path }), `${path},`);
      equal(await startGrant({}), "");
      equal(await startGrant({ NOTIFY_SOCKET: "@abstract" }), "");
      equal(await startGrant({ NOTIFY_SOCKET: dir }), "", "a directory");
      equal(await startGrant({ NOTIFY_SOCKET: `${dir}/missing` }), "");
    } finally {
      await receiver.close();
    }
    const comma = `${dir}/a,b`;
    const receiver2 = new NotifyReceiver(comma);
    try {
      equal(await startGrant({ NOTIFY_SOCKET: comma }), "", "a comma: no grant");
    } finally {
      await receiver2.close();
    }
  });
});

Deno.test("deno task start: READY=1 reaches the socket NOTIFY_SOCKET names", async () => {
  await inTempDir(async (dir) => {
    const path = `${dir}/notify`;
    const receiver = new NotifyReceiver(path);
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["task", "-q", `--config=${ROOT}deno.json`, "start", ...idleArgs()],
        env: { NOTIFY_SOCKET: path },
        stdin: "null",
      }).output();
      equal(out.code, 0, decoder.decode(out.stderr));
      await receiver.waitFor((m) => m.READY === "1");
    } finally {
      await receiver.close();
    }
  });
});

Deno.test("deno task socket-activate and compile: no grant from the environment", async () => {
  // systemd-socket-activate gives the program no NOTIFY_SOCKET, so that task grants none.
  ok(!config.tasks["socket-activate"].includes("--allow-write"));
  const port = freePort();
  const activator = new Process(
    "systemd-socket-activate",
    [`--listen=127.0.0.1:${port}`, "env"],
    { NOTIFY_SOCKET: "/run/systemd/notify", PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" },
  );
  try {
    await activator.waitForLog(/Listening on .* as \d+\./);
    // The connection only starts `env`, which prints and exits at once: the listener it closes
    // may reset the connection before Deno's connect has returned.
    await Deno.connect({ hostname: "127.0.0.1", port }).then(
      (conn) => conn.close(),
      (e) => {
        if (!(e instanceof Deno.errors.ConnectionReset)) throw e;
      },
    );
    const { stdout } = await activator.exit();
    match(stdout, /^LISTEN_FDS=1$/m);
    ok(!stdout.includes("NOTIFY_SOCKET"), stdout);
  } finally {
    await activator.stop();
  }
  // A compiled binary cannot follow the environment: the system manager's socket, written out.
  match(
    config.tasks.compile,
    / -P=proxy --allow-write=\/run\/systemd\/notify,\/run\/systemd\/journal\/socket /,
  );
});

/** The README's line for running from a URL, as a shell runs it, with URL and arguments given. */
function readmeLine(url: string, args: string[]): string {
  const readme = Deno.readTextFileSync(`${ROOT}README.md`);
  const at = readme.indexOf("<!-- run-from-url -->");
  const line = /```sh\n([^]*?)```/.exec(readme.slice(at))![1].replaceAll("\\\n", " ").trim();
  ok(
    line.includes('"--allow-write=${NOTIFY_SOCKET:+$NOTIFY_SOCKET,}/run/systemd/journal/socket"'),
    line,
  );
  return line.replace(/https:\/\/…\/socket-proxyd\.js TARGET$/, `${url} ${args.join(" ")}`);
}

Deno.test("the README's line for running from a URL: READY=1 with NOTIFY_SOCKET, and runs without", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(Deno.readFileSync(BUNDLE), {
        headers: { "content-type": "application/javascript" },
      }),
  );
  try {
    await inTempDir(async (dir) => {
      const line = readmeLine(`http://127.0.0.1:${server.addr.port}/socket-proxyd.js`, idleArgs());
      ok(line.startsWith(`${DEPLOYMENT_ENV.join(" ")} deno run `), line);
      const path = tempSocketPath("notify");
      const receiver = new NotifyReceiver(path);
      try {
        for (const env of [{ NOTIFY_SOCKET: path }, {}] as Record<string, string>[]) {
          const out = await new Deno.Command("sh", {
            args: ["-c", line],
            env: {
              ...env,
              DENO_DIR: `${dir}/deno`,
              PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:/usr/bin:/bin`,
            },
            clearEnv: true,
            stdin: "null",
          }).output();
          equal(out.code, 0, decoder.decode(out.stderr));
        }
        await receiver.waitFor((m) => m.READY === "1");
        equal(receiver.messages.filter((m) => m.READY === "1").length, 1, "from the run with it");
      } finally {
        await receiver.close();
      }
    });
  } finally {
    await server.shutdown();
  }
});

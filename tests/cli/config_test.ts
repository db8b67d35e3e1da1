import { deepEqual, equal, rejects, throws } from "node:assert/strict";
import { CONFIG_OPTION, configArguments, ConfigError, expandConfig } from "../../src/cli/config.ts";

const PATH = "/etc/socket-proxyd/\\x5b::1\\x5d:8093.conf";

function refuses(text: string, message: string): void {
  throws(() => configArguments(PATH, text), (e: unknown) => {
    if (!(e instanceof ConfigError)) return false;
    equal(e.message, message);
    return true;
  });
}

Deno.test("configArguments: the words of OPTIONS, then TARGET", () => {
  equal(CONFIG_OPTION, "--config=");
  deepEqual(configArguments(PATH, "TARGET=127.0.0.1:3000\n"), ["127.0.0.1:3000"]);
  deepEqual(configArguments(PATH, "# c\nTARGET=[::1]:80\nOPTIONS=-c 5 -v\n"), [
    "-c",
    "5",
    "-v",
    "[::1]:80",
  ]);
  deepEqual(configArguments(PATH, "OPTIONS=\nTARGET=/run/app.sock"), ["/run/app.sock"]);
  deepEqual(
    configArguments(PATH, `TARGET=localhost:80\nOPTIONS="--exit-idle-time='5min 20s' -v"\n`),
    ["--exit-idle-time=5min 20s", "-v", "localhost:80"],
  );
  deepEqual(
    configArguments(PATH, `TARGET=localhost:80\nOPTIONS='--exit-idle-time="5min 20s"'\n`),
    ["--exit-idle-time=5min 20s", "localhost:80"],
  );
  deepEqual(
    configArguments(PATH, "TARGET=localhost:80\nOPTIONS=--exit-idle-time=5min20s"),
    ["--exit-idle-time=5min20s", "localhost:80"],
  );
});

Deno.test("configArguments: what is wrong, with the file's name", () => {
  refuses(
    "",
    `${PATH} sets no TARGET=; add a line with where clients go, e.g. TARGET=127.0.0.1:3000.`,
  );
  refuses(
    "TARGET=\nOPTIONS=-v",
    `${PATH} sets no TARGET=; add a line with where clients go, e.g. TARGET=127.0.0.1:3000.`,
  );
  refuses(
    "TARGET=x:1\nTAGRET=y:2",
    `${PATH}: unknown variable TAGRET=; only TARGET= and OPTIONS=.`,
  );
  refuses("TARGET=x:1\nnonsense", `${PATH}, line 2: expected NAME=VALUE, got "nonsense".`);
  refuses(`TARGET="x:1`, `${PATH}, line 1: a " quote is not closed.`);
  refuses(
    `TARGET=x:1\nOPTIONS="--exit-idle-time='5min"`,
    `${PATH}, a ' quote is not closed in "--exit-idle-time='5min".`,
  );
  refuses(
    "TARGET=127.0.0.1:3000\nOPTIONS=--exit-idle-time=5min 20s",
    `${PATH}: Too many parameters: exactly one target expected, got 20s 127.0.0.1:3000. ` +
      `OPTIONS= is split into words at blanks, so quote a value with blanks, e.g. ` +
      `OPTIONS="--exit-idle-time='5min 20s'".`,
  );
  refuses(
    "TARGET=garbage:port",
    `${PATH}: Invalid target "garbage:port": port "port" is not a number from 1 to 65535.`,
  );
  refuses("TARGET=x:1\nOPTIONS=--bogus", `${PATH}: Unknown option '--bogus'.`);
  refuses("TARGET=x:1\nOPTIONS=-c 0", `${PATH}: Connection limit is too low.`);
});

const files = (map: Record<string, string>) => (path: string) =>
  path in map ? Promise.resolve(map[path]) : Promise.reject(new Deno.errors.NotFound(path));

Deno.test("expandConfig: --config=FILE is replaced by the file's arguments, in its place", async () => {
  const read = files({ "/c.conf": "TARGET=127.0.0.1:1\nOPTIONS=-c 3" });
  deepEqual(await expandConfig(["127.0.0.1:2"], read), ["127.0.0.1:2"]);
  deepEqual(await expandConfig(["--config=/c.conf"], read), ["-c", "3", "127.0.0.1:1"]);
  deepEqual(await expandConfig(["-v", "--config=/c.conf", "--listen=1"], read), [
    "-v",
    "-c",
    "3",
    "127.0.0.1:1",
    "--listen=1",
  ]);
  // After "--" it is an argument, not the option.
  deepEqual(await expandConfig(["--", "--config=/c.conf"], read), ["--", "--config=/c.conf"]);
});

Deno.test("expandConfig: a file that cannot be read, or two", async () => {
  const message = (problem: string, path = "/etc/socket-proxyd/8080.conf") =>
    `Cannot read the configuration file ${path}: ${problem}. It sets TARGET= (where clients ` +
    "go) and OPTIONS=; see socket-proxyd(8).";
  const fails = (error: Error) => () => Promise.reject(error);
  await rejects(expandConfig(["--config=/etc/socket-proxyd/8080.conf"], files({})), {
    name: "ConfigError",
    message: message("it does not exist"),
  });
  await rejects(
    expandConfig(
      ["--config=/etc/socket-proxyd/8080.conf"],
      fails(new Deno.errors.PermissionDenied("x")),
    ),
    { message: message("permission denied (the service's user must be able to read it)") },
  );
  await rejects(
    expandConfig(["--config=/etc/socket-proxyd/8080.conf"], fails(new Deno.errors.NotCapable("x"))),
    {
      message: message(
        "Deno's permissions do not allow reading it; add --allow-read=/etc/socket-proxyd/8080.conf",
      ),
    },
  );
  await rejects(
    expandConfig(
      ["--config=/etc/socket-proxyd/8080.conf"],
      fails(new Deno.errors.IsADirectory("is a dir")),
    ),
    { message: message("is a dir") },
  );
  await rejects(expandConfig(["--config=/a", "--config=/b"], files({ "/a": "TARGET=x:1" })), {
    name: "ConfigError",
    message: "--config= is given twice; give one file.",
  });
});

Deno.test("expandConfig: reads a real file by default", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/-run-spx\\x2da.sock.conf`;
    await Deno.writeTextFile(path, "TARGET=/run/backend.sock\nOPTIONS=--no-keepalive\n");
    deepEqual(await expandConfig([`--config=${path}`]), [
      "--no-keepalive",
      "/run/backend.sock",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

import { deepEqual, equal, fail, ok, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  ActivationError,
  LISTEN_FDS_START,
  LISTEN_VARIABLES,
  type ListenEnv,
  MAX_LISTEN_FDS,
  parseListenEnv,
  type PassedSocket,
  takeListenEnv,
} from "../../src/service/activation.ts";

const PID = 4242;

/** Asserts that `fn` throws an ActivationError with exactly `message`. */
function throwsActivation(fn: () => unknown, message: string): void {
  throws(fn, (e: unknown) => {
    ok(e instanceof ActivationError, `expected an ActivationError, got ${e}`);
    ok(e instanceof Error);
    equal(e.name, "ActivationError");
    equal(e.message, message);
    return true;
  });
}

const sockets = (...names: string[]): PassedSocket[] =>
  names.map((name, i) => ({ fd: 3 + i, name }));

Deno.test("constants", () => {
  equal(LISTEN_FDS_START, 3);
  equal(MAX_LISTEN_FDS, 65536);
  deepEqual([...LISTEN_VARIABLES], [
    "LISTEN_PID",
    "LISTEN_PIDFDID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
  ]);
});

Deno.test("ActivationError is an Error named ActivationError", () => {
  const e = new ActivationError("x");
  ok(e instanceof Error);
  equal(e.name, "ActivationError");
  equal(e.message, "x");
  equal(String(e), "ActivationError: x");
});

// ---------------------------------------------------------------------------------------------
// LISTEN_PID

Deno.test("parseListenEnv: no LISTEN_PID means nothing was passed, whatever else is set", () => {
  deepEqual(parseListenEnv({}, PID), []);
  deepEqual(parseListenEnv({ LISTEN_FDS: "2" }, PID), []);
  deepEqual(parseListenEnv({ LISTEN_FDS: "garbage", LISTEN_FDNAMES: "a:b:c" }, PID), []);
});

Deno.test("parseListenEnv: LISTEN_PID of another process means nothing was passed", () => {
  deepEqual(parseListenEnv({ LISTEN_PID: String(PID + 1), LISTEN_FDS: "1" }, PID), []);
  deepEqual(parseListenEnv({ LISTEN_PID: "1", LISTEN_FDS: "1" }, PID), []);
  // Even a malformed LISTEN_FDS does not matter when the variables are not for us.
  deepEqual(parseListenEnv({ LISTEN_PID: "1", LISTEN_FDS: "x", LISTEN_FDNAMES: "a:b" }, PID), []);
});

Deno.test("parseListenEnv: LISTEN_PID that is not a decimal number is an error", () => {
  const bad = (value: string) =>
    throwsActivation(
      () => parseListenEnv({ LISTEN_PID: value, LISTEN_FDS: "1" }, PID),
      `LISTEN_PID="${value}" is not a decimal number`,
    );
  bad("");
  bad("abc");
  bad("-1");
  bad(`-${PID}`);
  bad("+4242");
  bad(" 4242");
  bad("4242 ");
  bad("4242\n");
  bad("42.42");
  bad("0x1092");
  bad("4e3");
  bad("99999999999"); // eleven digits
  bad("99999999999999999999999999999");
  bad("\u0664\u0662\u0664\u0662"); // Arabic-Indic digits
});

Deno.test("parseListenEnv: LISTEN_PID with leading zeros is still our pid", () => {
  deepEqual(parseListenEnv({ LISTEN_PID: `000${PID}`, LISTEN_FDS: "1" }, PID), sockets("unknown"));
});

// ---------------------------------------------------------------------------------------------
// LISTEN_FDS

Deno.test("parseListenEnv: LISTEN_PID for us without LISTEN_FDS means nothing was passed", () => {
  deepEqual(parseListenEnv({ LISTEN_PID: String(PID) }, PID), []);
});

Deno.test("parseListenEnv: fds start at 3 and names default to unknown", () => {
  deepEqual(parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "1" }, PID), [
    { fd: 3, name: "unknown" },
  ]);
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "3" }, PID),
    sockets("unknown", "unknown", "unknown"),
  );
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "02" }, PID),
    sockets("unknown", "unknown"),
  );
});

Deno.test("parseListenEnv: LISTEN_FDS=0 is an error", () => {
  throwsActivation(
    () => parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "0" }, PID),
    "LISTEN_FDS=0 is out of range 1..65536",
  );
  throwsActivation(
    () => parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "000" }, PID),
    "LISTEN_FDS=000 is out of range 1..65536",
  );
});

Deno.test("parseListenEnv: LISTEN_FDS that is not a decimal number is an error", () => {
  const bad = (value: string) =>
    throwsActivation(
      () => parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: value }, PID),
      `LISTEN_FDS="${value}" is not a decimal number`,
    );
  bad("");
  bad("x");
  bad("-1");
  bad("1.0");
  bad(" 1");
  bad("1x");
  bad("0x2");
  bad("1e3");
  bad("99999999999");
});

Deno.test("parseListenEnv: absurdly large LISTEN_FDS is an error, not a huge allocation", () => {
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: String(MAX_LISTEN_FDS) }, PID).length,
    MAX_LISTEN_FDS,
  );
  throwsActivation(
    () => parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "65537" }, PID),
    "LISTEN_FDS=65537 is out of range 1..65536",
  );
  throwsActivation(
    () => parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "4294967295" }, PID),
    "LISTEN_FDS=4294967295 is out of range 1..65536",
  );
  throwsActivation(
    () => parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "9999999999" }, PID),
    "LISTEN_FDS=9999999999 is out of range 1..65536",
  );
});

// ---------------------------------------------------------------------------------------------
// LISTEN_FDNAMES

Deno.test("parseListenEnv: names are taken in order", () => {
  deepEqual(
    parseListenEnv(
      { LISTEN_PID: String(PID), LISTEN_FDS: "3", LISTEN_FDNAMES: "http:https:dns" },
      PID,
    ),
    sockets("http", "https", "dns"),
  );
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "1", LISTEN_FDNAMES: "connection" }, PID),
    sockets("connection"),
  );
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "1", LISTEN_FDNAMES: "a b=c" }, PID),
    sockets("a b=c"),
  );
});

Deno.test("parseListenEnv: empty name fields are allowed", () => {
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "1", LISTEN_FDNAMES: "" }, PID),
    sockets(""),
  );
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "2", LISTEN_FDNAMES: ":" }, PID),
    sockets("", ""),
  );
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "3", LISTEN_FDNAMES: "a::c" }, PID),
    sockets("a", "", "c"),
  );
  deepEqual(
    parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: "2", LISTEN_FDNAMES: "a:" }, PID),
    sockets("a", ""),
  );
});

/** The sockets of a LISTEN_FDNAMES whose names were ignored, with the reason given. */
const ignored = (count: number, names: string, parts: number): PassedSocket[] =>
  Array.from({ length: count }, (_, i) => ({
    fd: 3 + i,
    name: "unknown",
    namesIgnored: `LISTEN_FDNAMES=${
      JSON.stringify(names)
    } splits at ':' into ${parts} names for ${count} socket(s)`,
  }));

Deno.test("parseListenEnv: a name count other than LISTEN_FDS leaves every socket unknown, with the reason", () => {
  const mismatch = (fds: string, names: string, count: number, parts: number) =>
    deepEqual(
      parseListenEnv({ LISTEN_PID: String(PID), LISTEN_FDS: fds, LISTEN_FDNAMES: names }, PID),
      ignored(count, names, parts),
    );
  mismatch("2", "a", 2, 1);
  mismatch("2", "", 2, 1);
  mismatch("1", "a:b", 1, 2);
  mismatch("1", ":", 1, 2);
  mismatch("3", "a:b:c:d", 3, 4);
  mismatch("02", "a:b:c", 2, 3);
  // systemd's default name for the socket of a template instance: the unit's name, with ':'.
  mismatch("1", "socket-proxyd@127.0.0.1:8092.socket", 1, 2);
  mismatch("1", "socket-proxyd@\\x5b::1\\x5d:8093.socket", 1, 4);
  mismatch("2", "web.socket:socket-proxyd@0.0.0.0:80.socket", 2, 3);
  // Control characters are shown escaped.
  mismatch("1", "a\n:b", 1, 2);
});

Deno.test("parseListenEnv: the reason in namesIgnored", () => {
  const [socket] = parseListenEnv(
    {
      LISTEN_PID: String(PID),
      LISTEN_FDS: "1",
      LISTEN_FDNAMES: "socket-proxyd@127.0.0.1:8092.socket",
    },
    PID,
  );
  equal(
    socket.namesIgnored,
    `LISTEN_FDNAMES="socket-proxyd@127.0.0.1:8092.socket" splits at ':' into 2 names for 1 socket(s)`,
  );
});

Deno.test("parseListenEnv: LISTEN_PIDFDID is ignored, whatever its value", () => {
  for (const id of ["", "12345", "garbage", "-1"]) {
    deepEqual(
      parseListenEnv({ LISTEN_PID: String(PID), LISTEN_PIDFDID: id, LISTEN_FDS: "1" }, PID),
      sockets("unknown"),
    );
  }
});

// ---------------------------------------------------------------------------------------------
// takeListenEnv

/** Runs `fn` with the LISTEN_* variables set to `env`, restoring them afterwards. */
function withListenEnv<T>(env: ListenEnv, fn: () => T): T {
  const saved = LISTEN_VARIABLES.map((v) => [v, Deno.env.get(v)] as const);
  try {
    for (const v of LISTEN_VARIABLES) {
      const value = env[v];
      if (value === undefined) Deno.env.delete(v);
      else Deno.env.set(v, value);
    }
    return fn();
  } finally {
    for (const [v, value] of saved) {
      if (value === undefined) Deno.env.delete(v);
      else Deno.env.set(v, value);
    }
  }
}

const listenVariablesLeft = () => LISTEN_VARIABLES.filter((v) => Deno.env.get(v) !== undefined);

Deno.test("takeListenEnv: reads this process's sockets and unsets all four variables", () => {
  withListenEnv({
    LISTEN_PID: String(Deno.pid),
    LISTEN_PIDFDID: "777",
    LISTEN_FDS: "2",
    LISTEN_FDNAMES: "web:admin",
  }, () => {
    deepEqual(takeListenEnv(), sockets("web", "admin"));
    deepEqual(listenVariablesLeft(), []);
    // A second call finds nothing.
    deepEqual(takeListenEnv(), []);
  });
});

Deno.test("takeListenEnv: unsets the variables even when they are malformed", () => {
  withListenEnv({
    LISTEN_PID: String(Deno.pid),
    LISTEN_PIDFDID: "1",
    LISTEN_FDS: "2",
    LISTEN_FDNAMES: "only-one",
  }, () => {
    deepEqual(takeListenEnv(), ignored(2, "only-one", 1));
    deepEqual(listenVariablesLeft(), []);
  });
  withListenEnv({ LISTEN_PID: String(Deno.pid), LISTEN_FDS: "0", LISTEN_FDNAMES: "a" }, () => {
    throwsActivation(() => takeListenEnv(), "LISTEN_FDS=0 is out of range 1..65536");
    deepEqual(listenVariablesLeft(), []);
  });
  withListenEnv({ LISTEN_PID: "not-a-pid", LISTEN_FDS: "1" }, () => {
    throwsActivation(() => takeListenEnv(), 'LISTEN_PID="not-a-pid" is not a decimal number');
    deepEqual(listenVariablesLeft(), []);
  });
});

Deno.test("takeListenEnv: unsets the variables when they are meant for another process", () => {
  withListenEnv({ LISTEN_PID: String(Deno.pid + 1), LISTEN_FDS: "1" }, () => {
    deepEqual(takeListenEnv(), []);
    deepEqual(listenVariablesLeft(), []);
  });
});

Deno.test("takeListenEnv: nothing set, nothing passed", () => {
  withListenEnv({}, () => {
    deepEqual(takeListenEnv(), []);
    deepEqual(listenVariablesLeft(), []);
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

Deno.test("property: any environment gives valid sockets or an ActivationError naming LISTEN_PID or LISTEN_FDS", () => {
  const value = fc.oneof(
    fc.constant(undefined),
    fc.constantFrom(
      String(PID),
      "0",
      "1",
      "2",
      "3",
      "-1",
      "",
      "x",
      "65536",
      "65537",
      "99999999999",
    ),
    fc.nat({ max: 70000 }).map(String),
    fc.string({ unit: "binary", maxLength: 12 }),
  );
  const names = fc.oneof(
    fc.constant(undefined),
    fc.array(fc.constantFrom("", "a", "web", "connection", "x y"), { maxLength: 5 }).map((a) =>
      a.join(":")
    ),
    fc.string({ unit: "binary", maxLength: 12 }),
  );
  fc.assert(
    fc.property(
      fc.record({
        LISTEN_PID: value,
        LISTEN_PIDFDID: value,
        LISTEN_FDS: value,
        LISTEN_FDNAMES: names,
      }),
      fc.boolean(),
      (raw, forUs) => {
        const env: ListenEnv = { ...raw };
        if (forUs) env.LISTEN_PID = String(PID);
        for (const key of Object.keys(env) as (keyof ListenEnv)[]) {
          if (env[key] === undefined) delete env[key];
        }
        let result: PassedSocket[];
        try {
          result = parseListenEnv(env, PID);
        } catch (e) {
          if (!(e instanceof ActivationError)) fail(`${JSON.stringify(env)} threw ${e}`);
          const pidBad = env.LISTEN_PID !== undefined && !/^\d{1,10}$/.test(env.LISTEN_PID);
          if (pidBad) {
            equal(e.message, `LISTEN_PID="${env.LISTEN_PID}" is not a decimal number`);
          } else {
            ok(
              e.message.includes(`LISTEN_FDS="${env.LISTEN_FDS}"`) ||
                e.message.includes(`LISTEN_FDS=${env.LISTEN_FDS} `),
              e.message,
            );
          }
          return;
        }
        if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== PID) {
          deepEqual(result, []);
          return;
        }
        if (env.LISTEN_FDS === undefined) {
          deepEqual(result, []);
          return;
        }
        const n = Number(env.LISTEN_FDS);
        equal(result.length, n);
        ok(n >= 1 && n <= MAX_LISTEN_FDS);
        const split = env.LISTEN_FDNAMES?.split(":");
        if (split === undefined || split.length === n) {
          const expectedNames = split ?? Array(n).fill("unknown");
          deepEqual(result, expectedNames.map((name, i) => ({ fd: 3 + i, name })));
        } else {
          deepEqual(result, ignored(n, env.LISTEN_FDNAMES!, split.length));
        }
      },
    ),
    { numRuns: 3000 },
  );
});

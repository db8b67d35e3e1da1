import { deepEqual, equal, throws } from "node:assert/strict";
import type { PassedSocket } from "../../src/service/activation.ts";
import { parseCommandLine } from "../../src/cli/cli.ts";
import { makePlan, type Plan, StartError, STDIN_CONNECTION } from "../../src/service/plan.ts";
import { formatTarget } from "../../src/cli/target.ts";

function options(...args: string[]) {
  const command = parseCommandLine(args);
  if (command.kind !== "run") throw new Error(`not a run: ${args}`);
  return command.options;
}

const http: PassedSocket = { fd: 3, name: "http" };
const admin: PassedSocket = { fd: 4, name: "admin" };

/** The plan in a form that is easy to compare: "fd name -> target" and the rest. */
function summary(plan: Plan) {
  return {
    sockets: plan.sockets.map((s) =>
      `${s.socket.fd} ${s.socket.name} -> ${formatTarget(s.target)}`
    ),
    listen: plan.listen.length,
    listenTarget: plan.listenTarget && formatTarget(plan.listenTarget),
    targets: plan.targets.map(formatTarget),
    warnings: plan.warnings,
    notices: plan.notices,
  };
}

function refuses(fn: () => unknown, message: RegExp): void {
  throws(fn, (e: unknown) => e instanceof StartError && message.test(e.message));
}

Deno.test("makePlan: passed sockets go to the positional target", () => {
  deepEqual(summary(makePlan(options("127.0.0.1:8080"), [http, admin], false)), {
    sockets: ["3 http -> 127.0.0.1:8080", "4 admin -> 127.0.0.1:8080"],
    listen: 0,
    listenTarget: null,
    targets: ["127.0.0.1:8080"],
    warnings: [],
    notices: [],
  });
});

Deno.test("makePlan: --target by name wins over the default; each target once", () => {
  const plan = makePlan(
    options("--target=admin=/run/admin.sock", "[::1]:80"),
    [http, admin],
    false,
  );
  deepEqual(summary(plan).sockets, ["3 http -> [::1]:80", "4 admin -> /run/admin.sock"]);
  deepEqual(summary(plan).targets, ["[::1]:80", "/run/admin.sock"]);
  const same = makePlan(options("--target=admin=[::1]:80", "[::1]:80"), [http, admin], false);
  deepEqual(summary(same).targets, ["[::1]:80"]);
});

Deno.test("makePlan: a passed socket without a target is refused, naming it and the fix", () => {
  refuses(
    () => makePlan(options("--target=http=127.0.0.1:1"), [http, admin], false),
    /^No target for the socket named "admin" \(fd 4\); give --target=admin=TARGET or a default TARGET\.$/,
  );
});

Deno.test("makePlan: a --target that names no passed socket is warned about", () => {
  deepEqual(
    summary(makePlan(options("--target=nope=127.0.0.1:1", "127.0.0.1:2"), [http], false)).warnings,
    [
      'No passed socket is named "nope"; --target=nope=... is unused.',
    ],
  );
});

Deno.test("makePlan: passed sockets win over --listen, with a notice, and over stdin", () => {
  const plan = makePlan(options("--listen=8080", "127.0.0.1:1"), [http], true);
  deepEqual(summary(plan).sockets, ["3 http -> 127.0.0.1:1"]);
  equal(plan.listen.length, 0);
  deepEqual(plan.notices, ["Sockets were passed in, so --listen is ignored."]);
});

Deno.test("makePlan: --listen without passed sockets, even with a socket on stdin", () => {
  for (const stdin of [false, true]) {
    const plan = makePlan(
      options("--listen=8080", "--listen=/run/x.sock", "127.0.0.1:1"),
      [],
      stdin,
    );
    deepEqual(summary(plan), {
      sockets: [],
      listen: 2,
      listenTarget: "127.0.0.1:1",
      targets: ["127.0.0.1:1"],
      warnings: [],
      notices: [],
    });
  }
  refuses(
    () => makePlan(options("--listen=8080", "--target=a=127.0.0.1:1"), [], false),
    /^--listen needs a TARGET argument/,
  );
});

Deno.test("makePlan: inetd style, the connection on stdin, when nothing else is given", () => {
  const plan = makePlan(options("/run/app.sock"), [], true);
  deepEqual(plan.sockets, [{ socket: STDIN_CONNECTION, target: plan.targets[0] }]);
  deepEqual(STDIN_CONNECTION, { fd: 0, name: "connection" });
  deepEqual(summary(plan).targets, ["/run/app.sock"]);
  // Named like an Accept=yes socket, so --target=connection=... applies to it too.
  deepEqual(
    summary(makePlan(options("--target=connection=127.0.0.1:9", "127.0.0.1:1"), [], true)).sockets,
    ["0 connection -> 127.0.0.1:9"],
  );
});

Deno.test("makePlan: nothing to serve is refused with what to do", () => {
  refuses(
    () => makePlan(options("127.0.0.1:1"), [], false),
    /^Didn't get any sockets passed in; start me from a \.socket unit, with systemd-socket-activate --listen=ADDR, with a connection as standard input \(Accept=yes and StandardInput=socket\), or give --listen=ADDR\.$/,
  );
});

Deno.test("makePlan: sockets whose LISTEN_FDNAMES was ignored are served by the default target", () => {
  const why =
    `LISTEN_FDNAMES="socket-proxyd@127.0.0.1:8092.socket" splits at ':' into 2 names for 1 socket(s)`;
  const unnamed: PassedSocket = { fd: 3, name: "unknown", namesIgnored: why };
  deepEqual(summary(makePlan(options("127.0.0.1:80"), [unnamed], false)), {
    sockets: ["3 unknown -> 127.0.0.1:80"],
    listen: 0,
    listenTarget: null,
    targets: ["127.0.0.1:80"],
    warnings: [],
    notices: [],
  });
});

Deno.test("makePlan: --target=NAME= with sockets whose names were ignored is refused, saying why", () => {
  const why = `LISTEN_FDNAMES="a:b:c" splits at ':' into 3 names for 2 socket(s)`;
  const unnamed = [3, 4].map((fd): PassedSocket => ({ fd, name: "unknown", namesIgnored: why }));
  const message = new RegExp(
    "^--target=web=\\.\\.\\. picks a socket by its name, but the passed sockets have no usable " +
      `names: LISTEN_FDNAMES="a:b:c" splits at ':' into 3 names for 2 socket\\(s\\) \\(a name ` +
      "taken from a unit name may hold ':'\\)\\. Give each \\.socket unit " +
      "FileDescriptorName=NAME \\(without ':'\\), or use a default TARGET instead of " +
      "--target=NAME=\\.$",
  );
  refuses(
    () => makePlan(options("--target=web=127.0.0.1:1", "127.0.0.1:2"), unnamed, false),
    message,
  );
  refuses(() => makePlan(options("--target=web=127.0.0.1:1"), unnamed, false), message);
  // "unknown" is no way around it: those names are not names.
  refuses(
    () => makePlan(options("--target=unknown=127.0.0.1:1"), unnamed, false),
    /^--target=unknown=\.\.\. picks a socket by its name, but the passed sockets have no usable names: /,
  );
  // With LISTEN_FDNAMES unset, "unknown" is the name sd_listen_fds(3) gives, and it is usable.
  deepEqual(
    summary(makePlan(options("--target=unknown=127.0.0.1:1"), [{ fd: 3, name: "unknown" }], false))
      .sockets,
    ["3 unknown -> 127.0.0.1:1"],
  );
});

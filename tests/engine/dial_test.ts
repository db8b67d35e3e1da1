import { equal, ok } from "node:assert/strict";
import { Destination } from "../../src/engine/destination.ts";
import { Dial, type Dialled, retryable, tuneListener } from "../../src/engine/dial.ts";
import { ERRNO, SystemError } from "../../src/engine/errno.ts";
import { encodeIP } from "../../src/engine/sockaddr.ts";
import type { Target } from "../../src/cli/target.ts";
import { libc, socketOf } from "./libc_udp.ts";
import { testPoller } from "./tcp.ts";

/** A port nothing listens on (bound by us for a moment, then let go). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** Dials `target` (through `resolve` for names); resolves with the socket or the error. */
async function dial(
  target: Target,
  options: { connectTimeoutMs?: number; resolve?: (host: string) => Promise<string[]> } = {},
): Promise<Dialled | Error> {
  const { poller, close } = testPoller();
  const done = Promise.withResolvers<Dialled | Error>();
  const destination = new Destination(target, options.resolve);
  new Dial(libc, poller, destination, {
    connectTimeoutMs: options.connectTimeoutMs ?? 0,
    keepalive: false,
  }, done.resolve).start();
  try {
    const result = await done.promise;
    if (!(result instanceof Error)) {
      if (result.token !== 0) poller.forget(result.token);
      libc.call.close(result.fd);
    }
    return result;
  } finally {
    await close();
  }
}

Deno.test("Dial: every resolved address is tried in order until one connects", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const asked: string[] = [];
  try {
    const accepted = listener.accept();
    const result = await dial({ kind: "tcp", host: "backend.test", port: listener.addr.port }, {
      resolve: (host) => {
        asked.push(host);
        return Promise.resolve(["::1", "127.0.0.1"]); // Nothing on ::1 at that port.
      },
    });
    ok(!(result instanceof Error), String(result));
    (await accepted).close();
    equal(asked.join(), "backend.test");
  } finally {
    listener.close();
  }
});

Deno.test("Dial: the last address's error when none connects; a failed lookup says so", async () => {
  const refused = await dial({ kind: "tcp", host: "127.0.0.1", port: closedPort() });
  ok(refused instanceof SystemError);
  equal(refused.errno, ERRNO.ECONNREFUSED);
  equal(refused.message, "Connection refused");
  const unresolved = await dial({ kind: "tcp", host: "x.invalid", port: 80 }, {
    resolve: () => Promise.reject(new Error("no such host")),
  });
  ok(unresolved instanceof Error);
  equal(unresolved.message, "cannot resolve x.invalid (no such host)");
  const none = await dial({ kind: "tcp", host: "x.invalid", port: 80 }, {
    resolve: () => Promise.resolve([]),
  });
  equal((none as Error).message, "cannot resolve x.invalid (no addresses)");
});

Deno.test("Dial: Unix paths and abstract names connect at once, without a lookup", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-dial-" });
  const path = `${dir}/backend.sock`;
  const name = `socket-proxyd-dial-${crypto.randomUUID()}`;
  const unix = Deno.listen({ transport: "unix", path });
  const abstract = Deno.listen({ transport: "unix", path: `\0${name}` });
  try {
    for (
      const [target, listener] of [[{ kind: "unix", path }, unix], [
        { kind: "abstract", name },
        abstract,
      ]] as const
    ) {
      const accepted = listener.accept();
      const result = await dial(target as Target, {
        resolve: () => Promise.reject(new Error("looked up")),
      });
      ok(!(result instanceof Error), String(result));
      equal((result as Dialled).token, 0, "connected within connect(2)");
      (await accepted).close();
    }
    const missing = await dial({ kind: "unix", path: `${dir}/none.sock` });
    equal((missing as SystemError).errno, ERRNO.ENOENT);
  } finally {
    unix.close();
    abstract.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("Dial: with a connect timeout, a backend that starts listening late is waited for", async () => {
  const port = closedPort();
  let listener: Deno.Listener | null = null;
  let lookups = 0;
  const result = dial({ kind: "tcp", host: "late.test", port }, {
    connectTimeoutMs: 10_000,
    resolve: () => {
      // The third round finds it listening.
      if (++lookups === 3) listener = Deno.listen({ hostname: "127.0.0.1", port });
      return Promise.resolve(["127.0.0.1"]);
    },
  });
  try {
    ok(!((await result) instanceof Error), String(await result));
    equal(lookups, 3, "looked up again every round");
  } finally {
    (listener as Deno.Listener | null)?.close();
  }
});

Deno.test("Dial: the connect timeout passes with the last error; 0 tries exactly once", async () => {
  const port = closedPort();
  let lookups = 0;
  const resolve = () => (lookups++, Promise.resolve(["127.0.0.1"]));
  const started = performance.now();
  const late = await dial({ kind: "tcp", host: "down.test", port }, {
    connectTimeoutMs: 300,
    resolve,
  });
  ok(performance.now() - started >= 300);
  equal((late as SystemError).errno, ERRNO.ECONNREFUSED);
  ok(lookups >= 3, `${lookups} rounds`);
  lookups = 0;
  await dial({ kind: "tcp", host: "down.test", port }, { resolve });
  equal(lookups, 1);
});

Deno.test("Dial: a connect still under way at the deadline is given up (expire)", async () => {
  // A listener that never accepts, with a backlog of 0: once its queue is full, SYNs are
  // dropped and a connect waits.
  const listener = socketOf(2, 1);
  const any = encodeIP("127.0.0.1", 0);
  equal(libc.call.bind(listener, any, any.length), 0);
  equal(libc.call.listen(listener, 0), 0);
  const name = new Uint8Array(16);
  libc.call.getsockname(listener, name, new Uint8Array([16, 0, 0, 0]));
  const port = (name[2] << 8) | name[3];
  const fillers = [socketOf(2, 1), socketOf(2, 1)];
  for (const fd of fillers) libc.call.connect(fd, name, 16);
  const { poller, close } = testPoller();
  const done = Promise.withResolvers<Dialled | Error>();
  const attempt = new Dial(
    libc,
    poller,
    new Destination({ kind: "tcp", host: "127.0.0.1", port }),
    { connectTimeoutMs: 60_000, keepalive: false },
    done.resolve,
  );
  try {
    attempt.start();
    ok(attempt.connecting, "the connect waits");
    attempt.expire();
    const result = await done.promise;
    ok(result instanceof Deno.errors.TimedOut);
    equal(result.message, "no connection within 60000 ms");
    ok(!attempt.connecting);
  } finally {
    for (const fd of [listener, ...fillers]) libc.call.close(fd);
    await close();
  }
});

Deno.test("retryable: a lack of permission is a configuration error; the rest is waited out", () => {
  equal(retryable(new SystemError(ERRNO.EACCES)), false);
  equal(retryable(new SystemError(ERRNO.EPERM)), false);
  for (const errno of [ERRNO.ECONNREFUSED, ERRNO.ENOENT, ERRNO.EMFILE, ERRNO.EAGAIN]) {
    equal(retryable(new SystemError(errno)), true, `errno ${errno}`);
  }
  equal(retryable(new Error("cannot resolve x (timeout)")), true);
});

Deno.test("tuneListener: clients accepted after it inherit TCP_NODELAY and SO_KEEPALIVE; queued ones do not", () => {
  const option = (fd: number, level: number, name: number) => {
    const value = new Uint8Array(4);
    libc.call.getsockopt(fd, level, name, value, new Uint8Array([4, 0, 0, 0]));
    return value[0];
  };
  const [TCP, NODELAY, SOCKET, KEEPALIVE] = [6, 1, 1, 9];
  const listener = socketOf(2, 1);
  const any = encodeIP("127.0.0.1", 0);
  equal(libc.call.bind(listener, any, any.length), 0);
  equal(libc.call.listen(listener, 8), 0);
  const name = new Uint8Array(16);
  libc.call.getsockname(listener, name, new Uint8Array([16, 0, 0, 0]));
  const clients = [socketOf(2, 1), socketOf(2, 1)];
  try {
    libc.call.connect(clients[0], name, 16); // Queued before the options are set.
    ok(tuneListener(libc, listener, true));
    libc.call.connect(clients[1], name, 16);
    for (const inherits of [false, true]) {
      let fd = -1;
      for (let i = 0; i < 1000 && fd < 0; i++) fd = libc.call.accept4(listener, null, null, 0);
      ok(fd >= 0);
      equal(option(fd, TCP, NODELAY), inherits ? 1 : 0, `TCP_NODELAY, inherits: ${inherits}`);
      equal(option(fd, SOCKET, KEEPALIVE), inherits ? 1 : 0, `SO_KEEPALIVE, inherits: ${inherits}`);
      libc.call.close(fd);
    }
    // Off is set too: a listener a previous run tuned on is tuned off.
    ok(tuneListener(libc, listener, false));
    equal(option(listener, SOCKET, KEEPALIVE), 0);
  } finally {
    for (const fd of [listener, ...clients]) libc.call.close(fd);
  }
});

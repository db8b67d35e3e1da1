/**
 * The private-API remedies of src/rearm.ts on this Deno, and their fallbacks: re-arming a TCP
 * listener in place delivers every client exactly once, however often it is done; a duplicate
 * of a Unix listener serves the same socket; a Deno without those handles is reported as such
 * rather than crashed on. (fds_test.ts proves the recovery itself through the real proxy.)
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import net from "node:net";
import { canDuplicate, duplicate, rearmer, recoveryMissing } from "../../src/rearm.ts";
import { tempSocketPath } from "../integration/harness.ts";

function listening(server: net.Server, options: net.ListenOptions | { fd: number }): Promise<void> {
  return new Promise((resolve) => server.listen(options as net.ListenOptions, resolve));
}

function closed(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Connects `count` clients, each sending its index; resolves with what the server got. */
async function clients(address: net.NetConnectOpts, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, (_, i) =>
    new Promise<void>((resolve, reject) => {
      const socket = net.connect(address, () => socket.end(`${i};`));
      socket.on("error", reject);
      socket.on("close", () => resolve());
      socket.resume();
    })));
}

Deno.test("re-arming a TCP listener, even a thousand times while clients arrive, delivers each client once", async () => {
  const received: string[] = [];
  const server = net.createServer((socket) => {
    let data = "";
    socket.on("data", (chunk) => data += chunk);
    socket.on("end", () => {
      received.push(data);
      socket.end();
    });
  });
  await listening(server, { host: "127.0.0.1", port: 0 });
  const rearm = rearmer(server);
  ok(rearm !== null, "this Deno's TCP handle can be re-armed");
  equal(rearm(), true);
  const timer = setInterval(() => {
    for (let i = 0; i < 50; i++) equal(rearm(), true);
  }, 1);
  const { port } = server.address() as net.AddressInfo;
  await clients({ host: "127.0.0.1", port }, 500);
  clearInterval(timer);
  deepEqual(received.sort(), Array.from({ length: 500 }, (_, i) => `${i};`).sort());
  await closed(server);
  equal(rearm(), false, "a closed server is not re-armed");
});

/** One client's whole reply from a Unix socket. */
function reply(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = "";
    const socket = net.connect({ path });
    socket.on("data", (chunk) => data += chunk);
    socket.on("end", () => resolve(data));
    socket.on("error", reject);
  });
}

Deno.test("a duplicate of a Unix listener serves the same socket once the original is closed", async () => {
  const name = `\0socket-proxyd-test-${crypto.randomUUID()}`; // Abstract: no path to unlink.
  const original = net.createServer((socket) => socket.end("original"));
  await listening(original, { path: name });
  ok(canDuplicate(original), "this Deno's Unix handle can be duplicated");
  const fd = duplicate(original);
  ok(typeof fd === "number" && fd > 2, `a new descriptor: ${fd}`);
  const copy = net.createServer((socket) => socket.end("copy"));
  await listening(copy, { fd: fd as number });
  await closed(original);
  equal(await reply(name), "copy", "the duplicate accepts on the same socket");
  await closed(copy);
});

Deno.test("closing a server on a duplicate never unlinks the socket's path", async () => {
  const path = tempSocketPath("dup.sock");
  const owner = net.createServer((socket) => socket.end("owner")); // The service manager.
  await listening(owner, { path });
  const adopted = net.createServer((socket) => socket.end("adopted"));
  await listening(adopted, { fd: duplicate(owner) as number });
  await closed(adopted);
  ok(Deno.lstatSync(path).isSocket, "the path is still there");
  equal(await reply(path), "owner", "and its owner still serves it");
  await closed(owner);
});

/** A stand-in for an adopted server: its address (null for Unix) and its native handle. */
function fakeServer(handle: unknown, address: unknown = TCP_ADDRESS): net.Server {
  return { address: () => address, _handle: handle } as unknown as net.Server;
}

const TCP_ADDRESS = { address: "127.0.0.1", port: 80, family: "IPv4" };

Deno.test("without the private handles the remedies say so instead of failing", () => {
  for (const handle of [undefined, null, {}, { listen: "no", fdForIpc: 1 }]) {
    for (const address of [TCP_ADDRESS, null]) {
      const server = fakeServer(handle, address);
      equal(rearmer(server), null);
      equal(canDuplicate(server), false);
      equal(duplicate(server), "unsupported");
      equal(
        recoveryMissing(server),
        address === null ? "Unix server handle fdForIpc()" : "TCP server handle listen()",
      );
    }
  }
  const throwing = fakeServer({
    listen() {
      throw new Error("changed");
    },
    fdForIpc() {
      throw new Error("changed");
    },
  });
  equal(rearmer(throwing)?.(), false, "a throwing listen() is a failed re-arm");
  equal(duplicate(throwing), "unsupported");
  const failing = fakeServer({ listen: () => -22, fdForIpc: () => -24 });
  equal(rearmer(failing)?.(), false, "a non-zero status is a failed re-arm");
  equal(duplicate(failing), "failed", "dup(2) failed (e.g. EMFILE): try again later");
});

Deno.test("listen() is never called again on a Unix handle (in Deno 2.8.3 to 2.9.5 that closes the socket); fdForIpc() recovers it", () => {
  let listens = 0;
  const unix = fakeServer({ listen: () => (listens++, 0), fdForIpc: () => 42 }, null);
  equal(rearmer(unix), null);
  equal(listens, 0);
  equal(recoveryMissing(unix), null);
  equal(duplicate(unix), 42);
  equal(recoveryMissing(fakeServer({ fdForIpc: () => 42 })), null, "TCP can be replaced too");
});

Deno.test("adopted listeners, TCP and Unix: serve every client, and stop cleanly", async () => {
  const { adopt } = await import("../../src/adopt.ts");
  const name = `\0socket-proxyd-test-${crypto.randomUUID()}`; // Abstract: closing unlinks nothing.
  for (const options of [{ host: "127.0.0.1", port: 0 }, { path: name }]) {
    // A listening socket passed to us: a copy of one whose first server is gone.
    const owner = net.createServer();
    await listening(owner, options);
    const address = "path" in options
      ? { path: name }
      : { host: "127.0.0.1", port: (owner.address() as net.AddressInfo).port };
    const fd = duplicate(owner);
    ok(typeof fd === "number");
    await closed(owner);
    const served: string[] = [];
    const adopted = await adopt({ fd, name: "test" }, (client) => {
      let data = "";
      client.on("data", (chunk) => data += chunk);
      client.on("end", () => {
        served.push(data);
        client.end();
      });
      client.resume();
    });
    equal(adopted.kind, "listener");
    if (adopted.kind !== "listener") return;
    for (let i = 0; i < 20; i++) {
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(address, () => socket.end(`${i}`));
        socket.on("error", reject);
        socket.on("close", () => resolve());
        socket.resume();
      });
    }
    deepEqual(served, Array.from({ length: 20 }, (_, i) => `${i}`));
    adopted.listener.close();
  }
});

import { deepEqual, equal, ok } from "node:assert/strict";
import { EPOLLERR, EPOLLIN, EPOLLOUT, type Pollable, Poller } from "../../src/engine/poller.ts";
import { encodeIP } from "../../src/engine/sockaddr.ts";
import { libc, MSG_DONTWAIT, recv, udpSocket } from "./libc_udp.ts";

/** Sends one datagram from a throwaway Deno socket to 127.0.0.1:port. */
async function sendTo(port: number, text: string): Promise<void> {
  const socket = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  await socket.send(new TextEncoder().encode(text), {
    transport: "udp",
    hostname: "127.0.0.1",
    port,
  });
  socket.close();
}

/** Reads one datagram without waiting; null when none is queued. */
function recvText(fd: number): string | null {
  const buffer = new Uint8Array(1500);
  const n = Number(recv(fd, buffer, 1500n, MSG_DONTWAIT));
  return n < 0 ? null : new TextDecoder().decode(buffer.subarray(0, n));
}

/** A handler object from a function. */
function on(ready: (events: number) => void): Pollable {
  return { ready };
}

Deno.test("Poller: a datagram makes its socket's handler run, level-triggered until read", async () => {
  const poller = new Poller(libc);
  const { fd, port } = udpSocket();
  try {
    let calls = 0;
    const twice = Promise.withResolvers<number>();
    const token = poller.add(
      fd,
      EPOLLIN,
      on((events) => {
        // Not read the first time: the socket stays ready, and the handler runs again.
        if (++calls === 2) twice.resolve(events);
        if (calls >= 2) recvText(fd);
      }),
    );
    ok(token !== 0);
    equal(poller.size, 1);
    await sendTo(port, "hello");
    equal((await twice.promise) & EPOLLIN, EPOLLIN);
    equal(recvText(fd), null, "read by the handler");
    poller.remove(fd, token);
    equal(poller.size, 0);
  } finally {
    await poller.close();
    libc.call.close(fd);
  }
});

Deno.test("Poller: each socket's events go to its own handler", async () => {
  const poller = new Poller(libc);
  const sockets = Array.from({ length: 10 }, udpSocket);
  try {
    const got = sockets.map(() => Promise.withResolvers<string>());
    sockets.forEach(({ fd }, i) => {
      poller.add(
        fd,
        EPOLLIN,
        on(() => {
          const text = recvText(fd);
          if (text !== null) got[i].resolve(text);
        }),
      );
    });
    equal(poller.size, 10);
    for (let i = sockets.length - 1; i >= 0; i--) await sendTo(sockets[i].port, `to ${i}`);
    deepEqual(
      await Promise.all(got.map((g) => g.promise)),
      sockets.map((_, i) => `to ${i}`),
    );
  } finally {
    await poller.close();
    for (const { fd } of sockets) libc.call.close(fd);
  }
});

for (const first of [2 ** 32 - 3, 2 ** 53 - 12]) {
  Deno.test(`Poller: tokens past ${first} still reach their handlers (no wrap at 2^32)`, async () => {
    const poller = new Poller(libc, { firstToken: first });
    const sockets = Array.from({ length: 8 }, udpSocket);
    try {
      const got = sockets.map(() => Promise.withResolvers<string>());
      const tokens = sockets.map(({ fd }, i) =>
        poller.add(
          fd,
          EPOLLIN,
          on(() => {
            const text = recvText(fd);
            if (text !== null) got[i].resolve(text);
          }),
        )
      );
      deepEqual(tokens, sockets.map((_, i) => first + i), "one token each, counting on");
      for (const [i, { port }] of sockets.entries()) await sendTo(port, `to ${i}`);
      deepEqual(
        await within(Promise.all(got.map((g) => g.promise)), 5000, "each datagram at its handler"),
        sockets.map((_, i) => `to ${i}`),
      );
    } finally {
      await poller.close();
      for (const { fd } of sockets) libc.call.close(fd);
    }
  });
}

/**
 * `promise`, or a failure naming `what` when it has not settled within `ms`: an event that must
 * come and did not (an event sent to a token that matches no handler would wait for ever).
 */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("Poller: modify changes the interest; handOver moves the registration; forget drops it", async () => {
  const poller = new Poller(libc);
  const { fd } = udpSocket();
  try {
    const writable = Promise.withResolvers<string>();
    const token = poller.add(fd, 0, on(() => writable.resolve("first")));
    // A UDP socket is always writable: watched for EPOLLOUT it is ready at once.
    poller.handOver(token, on((events) => writable.resolve(`second ${events & EPOLLOUT}`)));
    poller.modify(fd, token, EPOLLOUT);
    equal(await writable.promise, `second ${EPOLLOUT}`);
    poller.forget(token);
    equal(poller.size, 0);
  } finally {
    await poller.close();
    libc.call.close(fd);
  }
});

Deno.test("Poller: EPOLLERR for a connected UDP socket that meets a closed port", async () => {
  const poller = new Poller(libc);
  const { fd } = udpSocket();
  const closed = udpSocket();
  libc.call.close(closed.fd); // Its port is now closed: ICMP port unreachable.
  try {
    const error = Promise.withResolvers<number>();
    poller.add(
      fd,
      EPOLLIN,
      on((events) => {
        error.resolve(events);
        // Reading takes the error (ECONNREFUSED), which clears it.
        recvText(fd);
      }),
    );
    const to = encodeIP("127.0.0.1", closed.port);
    equal(libc.call.connect(fd, to, to.length), 0);
    equal(Number(libc.call.send(fd, new Uint8Array(1), 1n, MSG_DONTWAIT)), 1);
    equal((await error.promise) & EPOLLERR, EPOLLERR);
  } finally {
    await poller.close();
    libc.call.close(fd);
  }
});

Deno.test("Poller: add refuses what epoll cannot watch; close ends a pending wait", async () => {
  const poller = new Poller(libc);
  const { fd } = udpSocket();
  try {
    equal(poller.add(-1, EPOLLIN, on(() => {})), 0);
    equal(libc.errno(), 9, "EBADF");
    equal(poller.size, 0);
    // A wait is pending on a worker thread now; close() ends it (the test's op sanitizer
    // fails if it were left behind).
    poller.add(fd, EPOLLIN, on(() => {}));
    await poller.close();
    await poller.close(); // Twice is harmless.
  } finally {
    libc.call.close(fd);
  }
});

Deno.test("Poller: put-off work runs without any event, and again when put off again", async () => {
  const poller = new Poller(libc);
  const { fd } = udpSocket();
  try {
    const done = Promise.withResolvers<number>();
    let runs = 0;
    const task = () => {
      if (++runs < 5) poller.defer(task);
      else done.resolve(runs);
    };
    poller.add(fd, EPOLLIN, on(() => {})); // Nothing will ever come.
    poller.defer(task);
    equal(await done.promise, 5);
  } finally {
    await poller.close();
    libc.call.close(fd);
  }
});

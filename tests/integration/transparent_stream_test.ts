/**
 * `--transparent` for stream connections, in the same namespaces as the datagram tests
 * (transparent_test.ts, transparency.ts): TCP over IPv4, IPv6 and a dual-stack listener, its own
 * `--listen=`, with `--proxy-protocol`, the policy-routing recipe, as a DynamicUser= service runs
 * it, and the hint when connects time out because replies do not come back.
 *
 * The engine creates each backend socket itself, and binds it to the client's address before it
 * connects (src/engine/dial.ts, src/engine/transparent.ts).
 */
import { deepEqual, equal, match, notEqual } from "node:assert/strict";
import {
  AS_SERVICE,
  CLIENTS_V4,
  CLIENTS_V6,
  HOST_V4,
  HOST_V6,
  hostOf,
  PackagedCopy,
  POLICY_ROUTES,
  portOf,
  Scenario,
  seen,
} from "./transparency.ts";

const TRANSPARENT = ["--transparent", "--connect-timeout=2s"];

Deno.test("--transparent, TCP over IPv4: the backend sees each client's own address", async () => {
  const scenario = await Scenario.start({
    protocol: "tcp",
    listen: ["0.0.0.0:5300"],
    args: [...TRANSPARENT, "127.0.0.1:5301"],
  });
  try {
    for (const client of CLIENTS_V4) {
      const answer = await scenario.ask(`${HOST_V4}:5300`, client, 4053);
      equal(hostOf(seen(answer)), client);
      notEqual(portOf(seen(answer)), 4053, "a port the kernel picked");
      equal(answer.first, "hello");
    }
    deepEqual(scenario.peersSeen.map(hostOf), [...CLIENTS_V4], "no other peer, ever");
  } finally {
    await scenario.close();
  }
});

Deno.test(
  "--transparent, TCP over IPv6: the backend sees each client's own IPv6 address",
  async () => {
    const scenario = await Scenario.start({
      protocol: "tcp",
      listen: [`[${HOST_V6}]:5300`],
      args: [...TRANSPARENT, "[::1]:5301"],
    });
    try {
      for (const client of CLIENTS_V6) {
        equal(hostOf(seen(await scenario.ask(`[${HOST_V6}]:5300`, client))), client);
      }
      deepEqual(scenario.peersSeen.map(hostOf), [...CLIENTS_V6]);
    } finally {
      await scenario.close();
    }
  },
);

Deno.test(
  "--transparent, TCP on a dual-stack listener: IPv4 clients as IPv4; IPv6 ones to an IPv4 backend closed, not forwarded",
  async () => {
    const scenario = await Scenario.start({
      protocol: "tcp",
      listen: ["5300", `[${HOST_V6}]:5302`],
      fdnames: ["dual", "v6"],
      args: [...TRANSPARENT, "--target=v6=[::1]:5301", "127.0.0.1:5301"],
    });
    try {
      for (const client of CLIENTS_V4) {
        equal(hostOf(seen(await scenario.ask(`${HOST_V4}:5300`, client))), client);
      }
      deepEqual(await scenario.ask(`[${HOST_V6}]:5300`, CLIENTS_V6[0], 0, 10), { closed: true });
      await scenario.proxy.waitForLog(
        /--transparent cannot carry an IPv6 client to an IPv4 backend; give the IPv6 clients' socket an IPv6 target/,
      );
      equal(hostOf(seen(await scenario.ask(`[${HOST_V6}]:5302`, CLIENTS_V6[0]))), CLIENTS_V6[0]);
      deepEqual(scenario.peersSeen.map(hostOf), [...CLIENTS_V4, CLIENTS_V6[0]]);
    } finally {
      await scenario.close();
    }
  },
);

Deno.test(
  "--transparent with --proxy-protocol: the header and the connection name the same client",
  async () => {
    const scenario = await Scenario.start({
      protocol: "tcp",
      listen: ["5300"],
      args: [...TRANSPARENT, "--proxy-protocol=v1", "127.0.0.1:5301"],
    });
    try {
      const answer = await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[1], 4053);
      equal(hostOf(seen(answer)), CLIENTS_V4[1]);
      equal(answer.first, `PROXY TCP4 ${CLIENTS_V4[1]} ${HOST_V4} 4053 5300`);
    } finally {
      await scenario.close();
    }
  },
);

Deno.test(
  "--transparent with its own --listen=, on the host's network with the policy-routing recipe",
  async () => {
    const scenario = await Scenario.start({
      protocol: "tcp",
      listen: [],
      args: [
        ...TRANSPARENT,
        `--listen=${HOST_V4}:5300`,
        `--listen=[${HOST_V6}]:5302`,
        "127.0.0.1:5301",
      ],
      routes: POLICY_ROUTES,
      onHost: true,
    });
    try {
      equal(hostOf(seen(await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[0]))), CLIENTS_V4[0]);
      deepEqual(await scenario.ask(`[${HOST_V6}]:5302`, CLIENTS_V6[0], 0, 10), { closed: true });
      deepEqual(scenario.peersSeen.map(hostOf), [CLIENTS_V4[0]]);
    } finally {
      await scenario.close();
    }
  },
);

Deno.test(
  "--transparent over TCP as a DynamicUser= service runs it: CAP_NET_ADMIN only, the packaged wrapper",
  async () => {
    const packaged = PackagedCopy.create();
    const scenario = await Scenario.start({
      protocol: "tcp",
      listen: ["5300"],
      args: [...TRANSPARENT, "127.0.0.1:5301"],
      prefix: [...AS_SERVICE],
      command: packaged.command,
    }).catch((e) => {
      packaged.close();
      throw e;
    });
    try {
      equal(hostOf(seen(await scenario.ask(`${HOST_V4}:5300`, CLIENTS_V4[0]))), CLIENTS_V4[0]);
      match(
        Deno.readTextFileSync(`/proc/${scenario.proxy.child.pid}/status`),
        /^CapEff:\s+0000000000001000$/m,
      );
    } finally {
      await scenario.close();
      packaged.close();
    }
  },
);

Deno.test(
  "--transparent over TCP without the route back: connects time out, the journal says once which route fixes it",
  async () => {
    const scenario = await Scenario.start({
      protocol: "tcp",
      listen: ["0.0.0.0:5300"],
      args: [...TRANSPARENT, "127.0.0.1:5301"],
      routes: "",
    });
    try {
      for (const client of CLIENTS_V4) {
        deepEqual(await scenario.ask(`${HOST_V4}:5300`, client, 0, 15), { closed: true });
      }
      const hint = await scenario.proxy.waitForLog(/.*Replies do not come back.*/);
      match(hint, /127\.0\.0\.1:5301 sends to clients such as 10\.53\.0\.2:\d+ has no local route/);
      equal(scenario.proxy.stderr.match(/Replies do not come back/g)?.length, 1, "said once");
      deepEqual(scenario.peersSeen, [], "no handshake completed");
    } finally {
      await scenario.close();
    }
  },
);

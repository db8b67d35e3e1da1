/**
 * Detection of the fast path's private APIs, with stand-ins for Deno and for node:net servers
 * and sockets that lack them: what is missing is named, and nothing is taken over.
 */
import { equal, ok } from "node:assert/strict";
import type { Server, Socket } from "node:net";
import {
  CORE_OPS,
  type CoreOps,
  fastPathMissing,
  findCore,
  TAKE_STREAM,
  takeEndpoint,
} from "../src/fastpath.ts";

const ops = {
  read: () => Promise.resolve(0),
  write: () => Promise.resolve(0),
  shutdown: () => Promise.resolve(),
  tryClose: () => {},
};

/** A stand-in `Deno` with `core` (or part of it) behind `Deno[Deno.internal]`. */
function fakeDeno(core: Partial<CoreOps> | undefined): unknown {
  const internal = Symbol("Deno.internal");
  return { internal, [internal]: core === undefined ? {} : { core } };
}

Deno.test("findCore: all four ops, or null", () => {
  equal(findCore(fakeDeno(ops)), ops);
  ok(findCore() !== null, "this Deno has them");
  equal(findCore(fakeDeno(undefined)), null);
  equal(findCore({}), null, "no Deno.internal");
  for (const op of ["read", "write", "shutdown", "tryClose"] as const) {
    const partial: Partial<CoreOps> = { ...ops };
    delete partial[op];
    equal(findCore(fakeDeno(partial)), null, op);
  }
  equal(findCore(fakeDeno({ ...ops, read: 42 } as unknown as CoreOps)), null, "not a function");
});

/** A stand-in for an adopted server: its address, and its native handle. */
function fakeServer(address: unknown, handle: object | null): Server {
  return { address: () => address, _handle: handle } as unknown as Server;
}

const tcp = { address: "127.0.0.1", port: 80, family: "IPv4" };

Deno.test("fastPathMissing: names the core ops or takeStream when missing", () => {
  const takeable = { takeStream: () => 1 };
  equal(fastPathMissing(fakeServer(tcp, takeable), ops as CoreOps), null);
  equal(fastPathMissing(fakeServer(tcp, takeable), null), CORE_OPS);
  equal(fastPathMissing(fakeServer(tcp, {}), ops as CoreOps), TAKE_STREAM);
  equal(fastPathMissing(fakeServer(tcp, null), ops as CoreOps), TAKE_STREAM);
  equal(fastPathMissing(fakeServer(tcp, { takeStream: "no" }), ops as CoreOps), TAKE_STREAM);
});

Deno.test("fastPathMissing: nothing for Unix servers, whose clients always take the portable path", () => {
  equal(fastPathMissing(fakeServer(null, {}), null), null);
  equal(fastPathMissing(fakeServer("/run/x.sock", {}), null), null);
});

Deno.test("takeEndpoint: a socket whose handle cannot be taken over is left alone (the portable fallback)", () => {
  let destroyed = false;
  const socket = { _handle: {}, destroy: () => destroyed = true } as unknown as Socket;
  equal(takeEndpoint(socket), null);
  equal(destroyed, false, "untouched");
});

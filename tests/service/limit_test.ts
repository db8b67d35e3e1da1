import { equal, ok, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import { ConnectionLimit, DEFAULT_CONNECTIONS_MAX } from "../../src/service/limit.ts";

Deno.test("DEFAULT_CONNECTIONS_MAX is systemd-socket-proxyd's 256", () => {
  equal(DEFAULT_CONNECTIONS_MAX, 256);
});

Deno.test("ConnectionLimit: the limit is exact (no off-by-one like the reference)", () => {
  const limit = new ConnectionLimit(2);
  equal(limit.max, 2);
  equal(limit.active, 0);
  equal(limit.tryAcquire(), true);
  equal(limit.active, 1);
  equal(limit.tryAcquire(), true);
  equal(limit.active, 2);
  equal(limit.tryAcquire(), false);
  equal(limit.tryAcquire(), false);
  equal(limit.active, 2);
});

Deno.test("ConnectionLimit: a released slot can be taken again", () => {
  const limit = new ConnectionLimit(1);
  equal(limit.tryAcquire(), true);
  equal(limit.tryAcquire(), false);
  limit.release();
  equal(limit.active, 0);
  equal(limit.tryAcquire(), true);
  equal(limit.active, 1);
  equal(limit.tryAcquire(), false);
});

Deno.test("ConnectionLimit: releasing more often than acquiring throws and changes nothing", () => {
  const limit = new ConnectionLimit(3);
  throws(() => limit.release(), {
    name: "Error",
    message: "ConnectionLimit released more often than acquired",
  });
  equal(limit.active, 0);
  limit.tryAcquire();
  limit.release();
  throws(() => limit.release(), Error);
  equal(limit.active, 0);
  // Still fully usable.
  equal(limit.tryAcquire(), true);
  equal(limit.tryAcquire(), true);
  equal(limit.tryAcquire(), true);
  equal(limit.tryAcquire(), false);
});

Deno.test("ConnectionLimit: a refused acquire takes nothing to release", () => {
  const limit = new ConnectionLimit(1);
  limit.tryAcquire();
  equal(limit.tryAcquire(), false);
  limit.release();
  throws(() => limit.release(), Error);
});

Deno.test("ConnectionLimit: invalid maxima are RangeErrors", () => {
  for (const max of [0, -1, 1.5, 0.5, NaN, Infinity, -Infinity]) {
    throws(() => new ConnectionLimit(max), (e: unknown) => {
      ok(e instanceof RangeError, `${max}: ${e}`);
      equal(e.message, `Invalid connection limit ${max}`);
      return true;
    });
  }
});

Deno.test("ConnectionLimit: large limits", () => {
  const limit = new ConnectionLimit(2 ** 31 - 1);
  for (let i = 0; i < 1000; i++) equal(limit.tryAcquire(), true);
  equal(limit.active, 1000);
});

Deno.test("property: ConnectionLimit behaves like a counter bounded by max", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.array(fc.boolean(), { maxLength: 200 }),
      (max, ops) => {
        const limit = new ConnectionLimit(max);
        let model = 0;
        for (const acquire of ops) {
          if (acquire) {
            const expected = model < max;
            equal(limit.tryAcquire(), expected);
            if (expected) model++;
          } else if (model === 0) {
            throws(() => limit.release(), Error);
          } else {
            limit.release();
            model--;
          }
          equal(limit.active, model);
          ok(limit.active >= 0 && limit.active <= max);
        }
      },
    ),
    { numRuns: 1000 },
  );
});

import { deepEqual, equal, match } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import { DENO_FLOOR, floorProblem, isBelow, parseVersion } from "../../src/service/runtime.ts";

Deno.test("parseVersion: MAJOR.MINOR.PATCH, suffixes ignored, anything else null", () => {
  deepEqual(parseVersion("2.9.6"), [2, 9, 6]);
  deepEqual(parseVersion("2.10.0"), [2, 10, 0]);
  deepEqual(parseVersion("2.9.6-rc.1"), [2, 9, 6]);
  deepEqual(parseVersion("2.9.6+abcdef"), [2, 9, 6]);
  for (const bad of ["", "2", "2.9", "2.9.x", "v2.9.6", "2.9.6.1", " 2.9.6", "canary"]) {
    equal(parseVersion(bad), null, bad);
  }
});

Deno.test("isBelow: the floor itself and everything after it pass", () => {
  equal(DENO_FLOOR, "2.9.0");
  for (const old of ["1.46.3", "2.0.6", "2.7.14", "2.8.0", "2.8.3", "2.9.0-rc.1"]) {
    // (A pre-release of the floor counts as the floor: suffixes are ignored.)
    equal(isBelow(old), old !== "2.9.0-rc.1", old);
  }
  for (const ok of ["2.9.0", "2.9.1", "2.9.6", "2.10.0", "3.0.0", "10.0.0"]) {
    equal(isBelow(ok), false, ok);
  }
  equal(isBelow("something else"), false, "an unknown form is not refused by number");
});

Deno.test("property: isBelow orders versions as tuples", () => {
  const version = fc.tuple(fc.nat(30), fc.nat(30), fc.nat(30));
  fc.assert(fc.property(version, version, (a, b) => {
    const below = a[0] !== b[0] ? a[0] < b[0] : a[1] !== b[1] ? a[1] < b[1] : a[2] < b[2];
    equal(isBelow(a.join("."), b.join(".")), below);
  }));
});

Deno.test("floorProblem: names the floor and the running version, and what to do", () => {
  equal(floorProblem("2.9.6"), null);
  const message = floorProblem("2.7.14")!;
  match(message, /^This is Deno 2\.7\.14; socket-proxyd needs Deno 2\.9\.0 or later/);
  match(message, /Upgrade Deno \(deno upgrade\), or install the socket-proxyd package/);
  equal(message.includes("\n"), false);
});

import { deepEqual, equal, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  Admission,
  type AdmissionLimits,
  type Decision,
  ipv6Groups,
  MAX_WAITING,
  sourceOf,
  WHEN_FULL,
} from "../../src/service/admission.ts";

const limits = (overrides: Partial<AdmissionLimits> = {}): AdmissionLimits => ({
  max: 2,
  perSource: null,
  whenFull: "refuse",
  ...overrides,
});

Deno.test("WHEN_FULL: refuse is the default, as the reference does", () => {
  deepEqual(WHEN_FULL, ["refuse", "wait"]);
});

Deno.test("Admission: refuse: exactly max served, the next refused as full, a freed slot reused", () => {
  const a = new Admission<string>(limits());
  equal(a.request(null, "a"), "admitted");
  equal(a.request(null, "b"), "admitted");
  equal(a.request(null, "c"), "full");
  equal(a.active, 2);
  equal(a.waiting, 0);
  equal(a.release(null), null);
  equal(a.active, 1);
  equal(a.request(null, "d"), "admitted");
  equal(a.request(null, "e"), "full");
});

Deno.test("Admission: wait: clients over max wait, and get freed slots in arrival order", () => {
  const a = new Admission<string>(limits({ whenFull: "wait" }));
  equal(a.request(null, "a"), "admitted");
  equal(a.request(null, "b"), "admitted");
  for (const item of ["c", "d", "e"]) equal(a.request(null, item), "waiting");
  equal(a.waiting, 3);
  equal(a.release(null), "c", "the slot passes to the first that waits");
  equal(a.active, 2, "still at most max served");
  equal(a.release(null), "d");
  equal(a.release(null), "e");
  equal(a.waiting, 0);
  equal(a.release(null), null);
  equal(a.release(null), null);
  equal(a.active, 0);
  throws(() => a.release(null), /released more often than admitted/);
});

Deno.test("Admission: wait: a bounded queue; a client beyond it is refused as full", () => {
  const a = new Admission<number>(limits({ max: 1, whenFull: "wait", maxWaiting: 2 }));
  equal(a.request(null, 1), "admitted");
  equal(a.request(null, 2), "waiting");
  equal(a.request(null, 3), "waiting");
  equal(a.request(null, 4), "full");
  equal(a.limits.maxWaiting, 2);
  equal(new Admission(limits()).limits.maxWaiting, MAX_WAITING);
});

Deno.test("Admission: per source: served and waiting count together; over it refused, never queued", () => {
  const a = new Admission<string>(limits({ max: 1, perSource: 2, whenFull: "wait" }));
  equal(a.request("10.0.0.1", "a1"), "admitted");
  equal(a.request("10.0.0.1", "a2"), "waiting");
  equal(a.request("10.0.0.1", "a3"), "source", "over its source's limit, although others wait");
  equal(a.request("10.0.0.2", "b1"), "waiting", "another source still waits");
  equal(a.fromSource("10.0.0.1"), 2);
  equal(a.fromSource("10.0.0.2"), 1);
  equal(a.request(null, "unix"), "waiting", "Unix clients are not counted per source");
  equal(a.release("10.0.0.1"), "a2");
  equal(a.fromSource("10.0.0.1"), 1);
  equal(a.request("10.0.0.1", "a4"), "waiting");
  equal(a.release("10.0.0.1"), "b1");
  equal(a.release("10.0.0.2"), "unix");
  equal(a.release(null), "a4");
  equal(a.release("10.0.0.1"), null);
  equal(a.fromSource("10.0.0.1"), 0);
  equal(a.fromSource("10.0.0.2"), 0);
});

Deno.test("Admission: per source with refuse: the per-source limit is checked first", () => {
  const a = new Admission<string>(limits({ max: 1, perSource: 1 }));
  equal(a.request("s", "1"), "admitted");
  equal(a.request("s", "2"), "source");
  equal(a.request("t", "3"), "full");
  equal(a.fromSource("t"), 0, "a refused client is not counted");
});

Deno.test("Admission: takeWaiting empties the queue in order and uncounts the sources", () => {
  const a = new Admission<string>(limits({ max: 1, perSource: 5, whenFull: "wait" }));
  a.request("s", "served");
  a.request("s", "w1");
  a.request("t", "w2");
  deepEqual(a.takeWaiting(), ["w1", "w2"]);
  equal(a.waiting, 0);
  equal(a.fromSource("s"), 1);
  equal(a.fromSource("t"), 0);
  equal(a.release("s"), null);
});

Deno.test("Admission: limits are checked", () => {
  throws(() => new Admission(limits({ max: 0 })), /Invalid connection limit 0/);
  throws(() => new Admission(limits({ perSource: 0 })), /Invalid per-source limit 0/);
  throws(() => new Admission(limits({ perSource: 1.5 })), /Invalid per-source limit 1.5/);
});

Deno.test("property: Admission never serves more than max, nor more than perSource from one source; waiting clients are served in arrival order", () => {
  const step = fc.oneof(
    fc.record({
      op: fc.constant("request" as const),
      source: fc.constantFrom("a", "b", "c", null),
    }),
    fc.record({ op: fc.constant("release" as const), index: fc.nat() }),
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 4 }),
      fc.option(fc.integer({ min: 1, max: 3 }), { nil: null }),
      fc.constantFrom(...WHEN_FULL),
      fc.array(step, { maxLength: 300 }),
      (max, perSource, whenFull, steps) => {
        const a = new Admission<number>({ max, perSource, whenFull, maxWaiting: 5 });
        const served: Array<{ id: number; source: string | null }> = [];
        const waiting: Array<{ id: number; source: string | null }> = [];
        let next = 0;
        for (const s of steps) {
          if (s.op === "request") {
            const id = next++;
            const decision: Decision = a.request(s.source, id);
            if (decision === "admitted") served.push({ id, source: s.source });
            if (decision === "waiting") waiting.push({ id, source: s.source });
            if (decision === "source") {
              equal(
                [...served, ...waiting].filter((c) => c.source === s.source).length,
                perSource,
              );
            }
            if (decision === "full") equal(served.length, max);
          } else if (served.length > 0) {
            const [gone] = served.splice(s.index % served.length, 1);
            const admitted = a.release(gone.source);
            if (admitted === null) equal(waiting.length, 0);
            else {
              const first = waiting.shift()!;
              equal(admitted, first.id, "arrival order");
              served.push(first);
            }
          }
          equal(a.active, served.length);
          equal(a.waiting, waiting.length);
          equal(served.length <= max, true);
          if (whenFull === "refuse") equal(waiting.length, 0);
          if (perSource !== null) {
            for (const source of ["a", "b", "c"]) {
              const n = [...served, ...waiting].filter((c) => c.source === source).length;
              equal(n <= perSource, true);
              equal(a.fromSource(source), n);
            }
          }
        }
      },
    ),
  );
});

Deno.test("ipv6Groups: the text forms of RFC 4291", () => {
  deepEqual(ipv6Groups("::"), [0, 0, 0, 0, 0, 0, 0, 0]);
  deepEqual(ipv6Groups("::1"), [0, 0, 0, 0, 0, 0, 0, 1]);
  deepEqual(ipv6Groups("1::"), [1, 0, 0, 0, 0, 0, 0, 0]);
  deepEqual(ipv6Groups("2001:DB8::a:b"), [0x2001, 0xdb8, 0, 0, 0, 0, 0xa, 0xb]);
  deepEqual(ipv6Groups("1:2:3:4:5:6:7:8"), [1, 2, 3, 4, 5, 6, 7, 8]);
  deepEqual(ipv6Groups("1::2:3:4:5:6:7"), [1, 0, 2, 3, 4, 5, 6, 7]);
  deepEqual(ipv6Groups("::ffff:192.0.2.1"), [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]);
  deepEqual(ipv6Groups("1:2:3:4:5:6:1.2.3.4"), [1, 2, 3, 4, 5, 6, 0x0102, 0x0304]);
  for (
    const bad of [
      "",
      ":",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1::2::3",
      "12345::",
      "::g",
      "::1.2.3",
      "::1.2.3.256",
      "1:2:3:4:5:6:7::8",
    ]
  ) {
    equal(ipv6Groups(bad), null, bad);
  }
});

Deno.test("sourceOf: IPv4 as it is, IPv6 by its /64, IPv4-mapped as IPv4, Unix not counted", () => {
  equal(sourceOf(null), null);
  equal(sourceOf("127.0.0.2"), "127.0.0.2");
  equal(sourceOf("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  equal(sourceOf("2001:db8:1:2::1"), sourceOf("2001:DB8:1:2:ffff::9"), "one /64, one source");
  equal(sourceOf("2001:db8:1:3::1") === sourceOf("2001:db8:1:2::1"), false);
  equal(sourceOf("::1"), "0:0:0:0::/64");
  equal(sourceOf("fe80::1%eth0"), "fe80:0:0:0::/64");
  equal(sourceOf("::ffff:127.0.0.3"), "127.0.0.3");
  equal(sourceOf("::ffff:7f00:4"), "127.0.0.4");
  equal(sourceOf("not an address:"), null);
  equal(sourceOf(""), null);
});

import { deepEqual, equal, throws } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  decode,
  encodeIP,
  encodeUnix,
  familyOf,
  formatIPv6,
  formatSocketAddress,
  parseIPv6,
  SOCKADDR_MAX,
} from "../../src/engine/sockaddr.ts";
import { isIPv6 } from "../../src/cli/target.ts";

/** 16 bytes from eight 16-bit groups. */
function bytesOf(groups: number[]): Uint8Array {
  return new Uint8Array(groups.flatMap((g) => [g >> 8, g & 0xff]));
}

Deno.test("parseIPv6 reads every text form, with and without ::", () => {
  const cases: Array<[string, number[]]> = [
    ["::", [0, 0, 0, 0, 0, 0, 0, 0]],
    ["::1", [0, 0, 0, 0, 0, 0, 0, 1]],
    ["1::", [1, 0, 0, 0, 0, 0, 0, 0]],
    ["2001:db8::1", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]],
    ["2001:DB8:0:0:0:0:0:1", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]],
    ["1:2:3:4:5:6:7:8", [1, 2, 3, 4, 5, 6, 7, 8]],
    ["1::8", [1, 0, 0, 0, 0, 0, 0, 8]],
    ["1:2:3:4:5:6:7::", [1, 2, 3, 4, 5, 6, 7, 0]],
    ["::2:3:4:5:6:7:8", [0, 2, 3, 4, 5, 6, 7, 8]],
    ["1:2:3::6:7:8", [1, 2, 3, 0, 0, 6, 7, 8]],
    ["fe80::ffff:ffff", [0xfe80, 0, 0, 0, 0, 0, 0xffff, 0xffff]],
    ["::ffff:192.0.2.1", [0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]],
    ["::192.0.2.1", [0, 0, 0, 0, 0, 0, 0xc000, 0x0201]],
    ["64:ff9b::192.0.2.33", [0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221]],
    ["1:2:3:4:5:6:1.2.3.4", [1, 2, 3, 4, 5, 6, 0x0102, 0x0304]],
    ["1::5:6:255.255.255.255", [1, 0, 0, 0, 5, 6, 0xffff, 0xffff]],
  ];
  for (const [text, groups] of cases) deepEqual(parseIPv6(text), bytesOf(groups), text);
});

Deno.test("formatIPv6 writes RFC 5952 form", () => {
  const cases: Array<[number[], string]> = [
    [[0, 0, 0, 0, 0, 0, 0, 0], "::"],
    [[0, 0, 0, 0, 0, 0, 0, 1], "::1"],
    [[1, 0, 0, 0, 0, 0, 0, 0], "1::"],
    [[0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], "2001:db8::1"],
    // Lower case, no leading zeros.
    [[0x2001, 0x0db8, 0x00ab, 0xcdef, 1, 2, 3, 4], "2001:db8:ab:cdef:1:2:3:4"],
    // A single zero group is not "::" (RFC 5952 4.2.2).
    [[0x2001, 0xdb8, 0, 1, 1, 1, 1, 1], "2001:db8:0:1:1:1:1:1"],
    [[1, 2, 3, 4, 5, 6, 7, 0], "1:2:3:4:5:6:7:0"],
    [[0, 2, 3, 4, 5, 6, 7, 8], "0:2:3:4:5:6:7:8"],
    // The longest run (4.2.3), and the first of equal runs.
    [[1, 0, 0, 2, 0, 0, 0, 3], "1:0:0:2::3"],
    [[1, 0, 0, 2, 0, 0, 3, 4], "1::2:0:0:3:4"],
    [[0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], "2001:db8::1:0:0:1"],
    [[0, 0, 1, 0, 0, 0, 0, 0], "0:0:1::"],
    [[0, 0, 0, 1, 0, 0, 0, 0], "0:0:0:1::"],
    [[0, 0, 0, 0, 1, 0, 0, 0], "::1:0:0:0"],
    [[0xfe80, 0, 0, 0, 0, 0, 0xffff, 0xffff], "fe80::ffff:ffff"],
    // IPv4-compatible and NAT64 forms stay hexadecimal; only IPv4-mapped becomes dotted.
    [[0, 0, 0, 0, 0, 0, 0xc000, 0x0201], "::c000:201"],
    [[0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221], "64:ff9b::c000:221"],
    [[0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201], "192.0.2.1"],
    [[0, 0, 0, 0, 0, 0xffff, 0, 0], "0.0.0.0"],
    [[0, 0, 0, 0, 1, 0xffff, 0xc000, 0x0201], "::1:ffff:c000:201"],
  ];
  for (const [groups, text] of cases) equal(formatIPv6(bytesOf(groups)), text, text);
});

Deno.test("formatIPv6 agrees with the WHATWG URL serializer and round-trips (property)", () => {
  // Zero groups are likely, so that runs of every length and ties are common.
  const group = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
  fc.assert(
    fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
      const bytes = bytesOf(groups);
      const text = formatIPv6(bytes);
      const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
      if (mapped) {
        equal(text, `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`);
        deepEqual(parseIPv6(`::ffff:${text}`), bytes);
        return;
      }
      equal(isIPv6(text), true, text);
      // URL hosts are serialized with the same compression rules as RFC 5952.
      equal(
        `[${text}]`,
        new URL(`http://[${groups.map((g) => g.toString(16)).join(":")}]/`).hostname,
      );
      deepEqual(parseIPv6(text), bytes);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("encodeIP: sockaddr_in for IPv4", () => {
  const address = encodeIP("192.0.2.1", 53);
  equal(address.length, 16);
  deepEqual(Array.from(address), [2, 0, 0, 53, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
  equal(familyOf(address), AF_INET);
  deepEqual(Array.from(encodeIP("255.255.255.255", 65535).subarray(0, 8)), [
    2,
    0,
    255,
    255,
    255,
    255,
    255,
    255,
  ]);
});

Deno.test("encodeIP: sockaddr_in6 for IPv6, flow info and scope zero", () => {
  const address = encodeIP("2001:db8::1", 0x1234);
  equal(address.length, 28);
  equal(familyOf(address), AF_INET6);
  deepEqual(Array.from(address.subarray(0, 8)), [10, 0, 0x12, 0x34, 0, 0, 0, 0]);
  deepEqual(address.subarray(8, 24), bytesOf([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]));
  deepEqual(Array.from(address.subarray(24)), [0, 0, 0, 0]);
});

Deno.test("encodeIP: IPv4 as IPv4-mapped IPv6 for an AF_INET6 socket", () => {
  const address = encodeIP("127.0.0.2", 53, true);
  equal(address.length, 28);
  equal(familyOf(address), AF_INET6);
  deepEqual(address.subarray(8, 24), bytesOf([0, 0, 0, 0, 0, 0xffff, 0x7f00, 0x0002]));
  deepEqual(decode(address), { family: "ipv4", host: "127.0.0.2", port: 53 });
  // An IPv6 address is not changed by the flag.
  deepEqual(encodeIP("::1", 53, true), encodeIP("::1", 53));
});

Deno.test("encodeIP refuses what is not an IP address", () => {
  for (const host of ["localhost", "1.2.3", "::1::", "", "[::1]", "1.2.3.256"]) {
    throws(() => encodeIP(host, 1), new RangeError(`"${host}" is not an IP address`));
  }
});

Deno.test("encodeUnix: a path ends with NUL, an abstract name starts with one", () => {
  const path = encodeUnix("/run/a.sock", false);
  equal(familyOf(path), AF_UNIX);
  deepEqual(Array.from(path), [1, 0, ...new TextEncoder().encode("/run/a.sock"), 0]);
  const abstract = encodeUnix("name", true);
  deepEqual(Array.from(abstract), [1, 0, 0, ...new TextEncoder().encode("name")]);
  // Multi-byte names are counted in bytes.
  equal(encodeUnix("/tmp/é", false).length, 2 + 7 + 1);
});

Deno.test("decode: each family back from what encode wrote", () => {
  deepEqual(decode(encodeIP("10.1.2.3", 8080)), { family: "ipv4", host: "10.1.2.3", port: 8080 });
  deepEqual(decode(encodeIP("fe80::1", 1)), { family: "ipv6", host: "fe80::1", port: 1 });
  deepEqual(decode(encodeIP("::", 0)), { family: "ipv6", host: "::", port: 0 });
  deepEqual(decode(encodeUnix("/run/x", false)), { family: "unix", path: "/run/x" });
  deepEqual(decode(encodeUnix("x", true)), { family: "unix", path: "@x" });
  deepEqual(decode(encodeUnix("", true)), { family: "unix", path: "@" });
});

Deno.test("decode reads only `length` bytes of a kernel-sized buffer", () => {
  const buffer = new Uint8Array(SOCKADDR_MAX).fill(0x41);
  const path = encodeUnix("/run/y.sock", false);
  buffer.set(path);
  // The kernel's length may or may not count the NUL; either way the path ends there.
  deepEqual(decode(buffer, path.length), { family: "unix", path: "/run/y.sock" });
  deepEqual(decode(buffer, path.length - 1), { family: "unix", path: "/run/y.sock" });
  // An abstract name may hold any byte, NUL included: it is `length` long.
  const abstract = encodeUnix("ab", true);
  buffer.fill(0x41).set(abstract);
  deepEqual(decode(buffer, abstract.length), { family: "unix", path: "@ab" });
  deepEqual(decode(buffer, abstract.length + 1), { family: "unix", path: "@abA" });
  // An unnamed (unbound) Unix socket: just the family.
  buffer.fill(0).set([1, 0]);
  deepEqual(decode(buffer, 2), { family: "unix", path: null });
  deepEqual(decode(buffer.subarray(0, 2)), { family: "unix", path: null });
});

Deno.test("decode: a family this program does not use is null", () => {
  deepEqual(decode(new Uint8Array([17, 0, 1, 2])), null);
  equal(familyOf(new Uint8Array([1])), 0);
  equal(decode(new Uint8Array(0)), null);
});

Deno.test("formatSocketAddress for logs", () => {
  equal(formatSocketAddress(decode(encodeIP("192.0.2.1", 53))), "192.0.2.1:53");
  equal(formatSocketAddress(decode(encodeIP("2001:db8::1", 53))), "[2001:db8::1]:53");
  equal(formatSocketAddress(decode(encodeIP("192.0.2.1", 53, true))), "192.0.2.1:53");
  equal(formatSocketAddress(decode(encodeUnix("/run/x", false))), "/run/x");
  equal(formatSocketAddress(decode(encodeUnix("x", true))), "@x");
  equal(formatSocketAddress({ family: "unix", path: null }), "unix");
  equal(formatSocketAddress(null), "unknown");
});

Deno.test("encodeIP and decode round-trip any address and port (property)", () => {
  const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join("."));
  const ipv6 = fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
    minLength: 8,
    maxLength: 8,
  }).map((groups) => formatIPv6(bytesOf(groups)));
  fc.assert(
    fc.property(fc.oneof(ipv4, ipv6), fc.integer({ min: 0, max: 65535 }), fc.boolean(), (
      host,
      port,
      mapped,
    ) => {
      const family = host.includes(":") ? "ipv6" : "ipv4";
      deepEqual(decode(encodeIP(host, port, mapped)), { family, host, port });
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.string({ minLength: 1, maxLength: 100 }), fc.boolean(), (name, abstract) => {
      fc.pre(abstract || !name.includes("\0"));
      deepEqual(decode(encodeUnix(name, abstract)), {
        family: "unix",
        path: abstract ? `@${name}` : name,
      });
    }),
  );
});

import { deepEqual, equal } from "node:assert/strict";
// fast-check is imported inline: deno.json has no import map for test-only dependencies.
// deno-lint-ignore no-import-prefix
import fc from "npm:fast-check@3.23.2";
import {
  ipv6Bytes,
  proxyHeader,
  proxyHeaderV1,
  proxyHeaderV2,
  V2_SIGNATURE,
} from "../../src/engine/proxyprotocol.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

const v4 = {
  remote: { hostname: "192.0.2.1", port: 51234 },
  local: { hostname: "198.51.100.7", port: 443 },
};
const v6 = {
  remote: { hostname: "2001:db8::1", port: 1 },
  local: { hostname: "::1", port: 65535 },
};
const unix = { remote: null, local: null };

Deno.test("v1: TCP4, TCP6 and UNKNOWN lines exactly as the specification", () => {
  equal(text(proxyHeaderV1(v4)), "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n");
  equal(text(proxyHeaderV1(v6)), "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
  equal(text(proxyHeaderV1(unix)), "PROXY UNKNOWN\r\n");
});

Deno.test("v1: mixed families are sent as TCP6 with the IPv4 address mapped", () => {
  const mixed = { remote: { hostname: "192.0.2.1", port: 5 }, local: { hostname: "::", port: 80 } };
  equal(text(proxyHeaderV1(mixed)), "PROXY TCP6 ::ffff:192.0.2.1 :: 5 80\r\n");
});

Deno.test("v2 signature is the 12 bytes of the specification", () => {
  equal(hex(V2_SIGNATURE), "0d0a0d0a000d0a515549540a");
});

Deno.test("v2: TCP over IPv4, byte for byte", () => {
  equal(
    hex(proxyHeaderV2(v4)),
    "0d0a0d0a000d0a515549540a" + // signature
      "21" + // version 2, PROXY
      "11" + // AF_INET, STREAM
      "000c" + // 12 bytes follow
      "c0000201" + "c6336407" + // 192.0.2.1, 198.51.100.7
      "c822" + "01bb", // 51234, 443
  );
});

Deno.test("v2: TCP over IPv6, byte for byte", () => {
  equal(
    hex(proxyHeaderV2(v6)),
    "0d0a0d0a000d0a515549540a" + "21" + "21" + "0024" +
      "20010db8000000000000000000000001" + // 2001:db8::1
      "00000000000000000000000000000001" + // ::1
      "0001" + "ffff",
  );
});

Deno.test("v2: a Unix client is LOCAL with family UNSPEC and no addresses", () => {
  equal(hex(proxyHeaderV2(unix)), "0d0a0d0a000d0a515549540a" + "20" + "00" + "0000");
});

Deno.test("proxyHeader picks the version", () => {
  deepEqual(proxyHeader("v1", v4), proxyHeaderV1(v4));
  deepEqual(proxyHeader("v2", v4), proxyHeaderV2(v4));
});

Deno.test("ipv6Bytes: compressed, full, embedded IPv4", () => {
  equal(hex(ipv6Bytes("::")), "00".repeat(16));
  equal(hex(ipv6Bytes("1::")), "0001" + "00".repeat(14));
  equal(hex(ipv6Bytes("fe80::1:2")), "fe80" + "00".repeat(10) + "00010002");
  equal(hex(ipv6Bytes("1:2:3:4:5:6:7:8")), "00010002000300040005000600070008");
  equal(hex(ipv6Bytes("::ffff:192.0.2.1")), "00".repeat(10) + "ffff" + "c0000201");
});

Deno.test("property: v2 carries any IPv6 pair and ports, and v1 agrees in text", () => {
  fc.assert(
    fc.property(
      fc.ipV6(),
      fc.ipV6(),
      fc.integer({ min: 0, max: 65535 }),
      fc.integer({ min: 0, max: 65535 }),
      (a, b, pa, pb) => {
        const addresses = { remote: { hostname: a, port: pa }, local: { hostname: b, port: pb } };
        const header = proxyHeaderV2(addresses);
        const view = new DataView(header.buffer);
        equal(header.length, 16 + 36);
        deepEqual(header.subarray(16, 32), ipv6Bytes(a));
        deepEqual(header.subarray(32, 48), ipv6Bytes(b));
        equal(view.getUint16(48), pa);
        equal(view.getUint16(50), pb);
        equal(text(proxyHeaderV1(addresses)), `PROXY TCP6 ${a} ${b} ${pa} ${pb}\r\n`);
      },
    ),
  );
});

Deno.test("property: ipv6Bytes round-trips through the URL parser's canonical form", () => {
  fc.assert(
    fc.property(fc.ipV6(), (address) => {
      const bytes = ipv6Bytes(address);
      const groups = Array.from(
        { length: 8 },
        (_, i) => ((bytes[2 * i] << 8) | bytes[2 * i + 1]).toString(16),
      );
      const canonical = new URL(`http://[${address}]/`).hostname;
      equal(new URL(`http://[${groups.join(":")}]/`).hostname, canonical);
    }),
  );
});

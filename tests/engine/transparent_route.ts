/**
 * Run inside a network namespace of a test's own (tests/engine/transparent_test.ts): asks
 * `returnRoute` about a loopback backend's replies to an IPv4 and an IPv6 client, and lets a
 * `Transparent` see two sessions without a reply; prints what came of it as one JSON line.
 * @module
 */
import { libc } from "./libc_udp.ts";
import { returnRoute, Transparent } from "../../src/engine/transparent.ts";
import { encodeIP } from "../../src/engine/sockaddr.ts";

const cases = {
  ipv4: [encodeIP("10.9.0.2", 0), encodeIP("127.0.0.1", 5301)],
  ipv6: [encodeIP("fd09::2", 0), encodeIP("::1", 5301)],
  otherLoopback: [encodeIP("10.9.0.3", 0), encodeIP("127.0.0.2", 5301)],
} as const;
const routes = Object.fromEntries(
  Object.entries(cases).map(([name, [source, backend]]) => [
    name,
    returnRoute(libc, source, backend),
  ]),
);
const told: string[] = [];
const transparent = new Transparent(libc, (line) => told.push(line));
// A client of a dual-stack listener (IPv4-mapped), then an IPv6 one.
transparent.noReply(encodeIP("10.9.0.2", 40000, true), encodeIP("127.0.0.1", 5301));
transparent.noReply(encodeIP("fd09::2", 40001), encodeIP("::1", 5301));
console.log(JSON.stringify({ routes, told }));

/**
 * Name lookups for targets given by host name: the system's resolver (getaddrinfo: /etc/hosts,
 * DNS, ...), shared by the stream and datagram sides of the engine.
 * @module
 */
import { lookup } from "node:dns/promises";

/** Resolves a host name to its addresses, in the order they should be tried. */
export type Resolver = (host: string) => Promise<string[]>;

/** Resolves with the system's resolver. */
export async function systemResolver(host: string): Promise<string[]> {
  return (await lookup(host, { all: true, verbatim: true })).map(({ address }) => address);
}

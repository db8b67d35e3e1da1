/**
 * Name lookups for targets given by host name: the system's resolver (getaddrinfo: /etc/hosts,
 * DNS, ...), shared by the stream and datagram sides of the engine.
 * @module
 */
/** Resolves a host name to its addresses, in the order they should be tried. */
export type Resolver = (host: string) => Promise<string[]>;

/**
 * Resolves with the system's resolver. `node:dns` is loaded at the first lookup: it costs
 * start-up about 1.5 MiB, which a proxy whose targets are all addresses never needs.
 */
export async function systemResolver(host: string): Promise<string[]> {
  const { lookup } = await import("node:dns/promises");
  return (await lookup(host, { all: true, verbatim: true })).map(({ address }) => address);
}

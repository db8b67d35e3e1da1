/**
 * Dialling: opens the backend connection for one client.
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIPAddress, type Target } from "./target.ts";

/** Resolves a host name to its addresses, in the order they should be tried. */
export type Resolver = (host: string) => Promise<string[]>;

/** Resolves with the system's resolver (getaddrinfo: /etc/hosts, DNS, ...). */
export async function systemResolver(host: string): Promise<string[]> {
  return (await lookup(host, { all: true, verbatim: true })).map(({ address }) => address);
}

/**
 * Connects to `target`. A host name is resolved on every call (as the reference does, so DNS
 * changes are honoured) and each of its addresses is tried in order until one connects, so
 * "localhost:8080" reaches a backend on either 127.0.0.1 or ::1.
 *
 * @throws the error of the last address tried, or of the resolution.
 */
export async function dial(
  target: Target,
  resolve: Resolver = systemResolver,
): Promise<Deno.Conn> {
  switch (target.kind) {
    case "unix":
      return await Deno.connect({ transport: "unix", path: target.path });
    case "abstract":
      return await Deno.connect({ transport: "unix", path: `\0${target.name}` });
    case "tcp": {
      const { host, port } = target;
      if (isIPAddress(host)) return await Deno.connect({ hostname: host, port });
      let last: unknown = new Error(`${host} has no addresses`);
      let addresses: string[];
      try {
        addresses = await resolve(host);
      } catch (e) {
        throw new Error(`cannot resolve ${host} (${e instanceof Error ? e.message : e})`);
      }
      for (const address of addresses) {
        try {
          return await Deno.connect({ hostname: address, port });
        } catch (e) {
          last = e;
        }
      }
      throw last;
    }
  }
}

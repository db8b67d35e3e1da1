/**
 * Dialling: opens the backend connection for one client.
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIPAddress, type Target } from "./target.ts";

/**
 * Connects to `target`. A host name is resolved on every call (as the reference does, so DNS
 * changes are honoured) and each of its addresses is tried in order until one connects, so
 * "localhost:8080" reaches a backend on either 127.0.0.1 or ::1.
 *
 * @throws the error of the last address tried, or of the resolution.
 */
export async function dial(target: Target): Promise<Deno.Conn> {
  switch (target.kind) {
    case "unix":
      return await Deno.connect({ transport: "unix", path: target.path });
    case "abstract":
      return await Deno.connect({ transport: "unix", path: `\0${target.name}` });
    case "tcp": {
      const { host, port } = target;
      if (isIPAddress(host)) return await Deno.connect({ hostname: host, port });
      const addresses = await lookup(host, { all: true, verbatim: true });
      let last: unknown = new Error(`${host} has no addresses`);
      for (const { address } of addresses) {
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

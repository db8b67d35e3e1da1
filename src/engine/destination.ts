/**
 * Where a target's connections go, as socket addresses the kernel takes: fixed for an IP
 * address, a Unix socket or vsock; looked up for every connection for a host name, as the
 * reference does, so that DNS changes are honoured. Each address of a name is tried in order
 * until one connects, so "localhost:8080" reaches a backend on either 127.0.0.1 or ::1.
 * @module
 */
import { isIPAddress, type Target } from "../cli/target.ts";
import { type Resolver, systemResolver } from "./resolve.ts";
import { encodeIP, encodeUnix, encodeVsock } from "./sockaddr.ts";

/** A target's socket addresses, in the order they are tried. */
export class Destination {
  readonly #fixed: readonly Uint8Array[] | null;

  /** @param resolve looks up a host name (the system's resolver unless a test gives one). */
  constructor(readonly target: Target, readonly resolve: Resolver = systemResolver) {
    this.#fixed = fixedAddresses(target);
  }

  /** Whether a connection must wait for a name lookup first. */
  get named(): boolean {
    return this.#fixed === null;
  }

  /**
   * The addresses to try: at once for a fixed target, after a lookup for a name.
   * @throws {Error} (the promise rejects) when the name cannot be resolved, saying so.
   */
  addresses(): readonly Uint8Array[] | Promise<readonly Uint8Array[]> {
    if (this.#fixed !== null) return this.#fixed;
    const { host, port } = this.target as { host: string; port: number };
    return this.resolve(host).then(
      (found) => {
        if (found.length === 0) throw new Error(`cannot resolve ${host} (no addresses)`);
        return found.map((address) => encodeIP(address, port));
      },
      (e) => {
        throw new Error(`cannot resolve ${host} (${e instanceof Error ? e.message : e})`);
      },
    );
  }
}

function fixedAddresses(target: Target): readonly Uint8Array[] | null {
  switch (target.kind) {
    case "tcp":
      return isIPAddress(target.host) ? [encodeIP(target.host, target.port)] : null;
    case "unix":
      return [encodeUnix(target.path, false)];
    case "abstract":
      return [encodeUnix(target.name, true)];
    case "vsock":
      return [encodeVsock(target.cid, target.port)];
  }
}

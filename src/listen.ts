/**
 * The proxy's own listeners (`--listen=`), for running without a service manager.
 * @module
 */
import { formatListenAddress, type ListenAddress } from "./cli/address.ts";
import { ThrottledLog } from "./service/log.ts";

/** A socket we listen on ourselves. */
export interface OwnListener {
  /** Where it listens, for logs. */
  readonly address: string;
  /** Stops accepting and closes the socket; a Unix socket path we created is removed. */
  close(): void;
}

/** Pause after a failed accept (say, out of file descriptors) before trying again. */
const ACCEPT_RETRY_MS = 100;

function open(address: ListenAddress): Deno.Listener {
  switch (address.kind) {
    case "tcp":
      if (address.host !== null) return Deno.listen({ hostname: address.host, port: address.port });
      try {
        return Deno.listen({ hostname: "::", port: address.port }); // Dual-stack.
      } catch (e) {
        if (e instanceof Deno.errors.AddrInUse) throw e;
        return Deno.listen({ hostname: "0.0.0.0", port: address.port }); // No IPv6 here.
      }
    case "abstract":
      return Deno.listen({ transport: "unix", path: `\0${address.name}` });
    case "unix":
      return Deno.listen({ transport: "unix", path: address.path });
  }
}

async function isAlive(path: string): Promise<boolean> {
  try {
    (await Deno.connect({ transport: "unix", path })).close();
    return true;
  } catch {
    return false;
  }
}

async function openReplacingStale(address: ListenAddress): Promise<Deno.Listener> {
  try {
    return open(address);
  } catch (e) {
    // A socket file left by an earlier run is replaced, unless someone still listens there.
    if (
      address.kind !== "unix" || !(e instanceof Deno.errors.AddrInUse) ||
      !Deno.lstatSync(address.path).isSocket || await isAlive(address.path)
    ) {
      throw e;
    }
    Deno.removeSync(address.path);
    return open(address);
  }
}

/**
 * Listens on `address` and hands every accepted connection to `onClient`. A failed accept
 * (out of file descriptors, say) is logged, rate-limited, and retried after a short pause.
 *
 * @throws the error of `Deno.listen` (address in use, permission, ...).
 */
export async function listenOn(
  address: ListenAddress,
  onClient: (conn: Deno.Conn) => void,
): Promise<OwnListener> {
  const listener = await openReplacingStale(address);
  const description = formatListenAddress(address);
  let closed = false;
  const failures = new ThrottledLog(
    "error",
    1000,
    (held) => `Failed to accept on ${description}: ${held} more failure(s) since the last message`,
  );
  (async () => {
    while (!closed) {
      try {
        onClient(await listener.accept());
      } catch (e) {
        if (closed) break;
        failures.hit(() => `Failed to accept on ${description}: ${(e as Error).message}; retrying`);
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
      }
    }
  })();
  return {
    address: description,
    close() {
      if (closed) return;
      closed = true;
      failures.flush();
      listener.close();
      if (address.kind === "unix") {
        try {
          Deno.removeSync(address.path);
        } catch {
          // Already gone.
        }
      }
    },
  };
}

/**
 * The fd-adoption layer: serves the listening sockets the service manager passed in.
 *
 * `Deno.listen` cannot adopt an inherited file descriptor (denoland/deno#14006); `node:net` can,
 * for TCP and Unix listeners. This module is the only one that knows that: above it, a listener
 * is something that hands over accepted client sockets.
 * @module
 */
import net from "node:net";
import type { PassedSocket } from "./activation.ts";
import { log } from "./log.ts";

/** A passed socket being served. */
export interface Listener {
  /** The passed socket it serves. */
  readonly passed: PassedSocket;
  /** Where it listens, for logs: "127.0.0.1:80", "[::]:80" or "unix socket". */
  readonly address: string;
}

/** A passed file descriptor could not be served. */
export class AdoptionError extends Error {
  override name = "AdoptionError";
}

function describe(server: net.Server): string {
  const address = server.address();
  if (address === null) return "unix socket";
  if (typeof address === "string") return address;
  return address.family === "IPv6"
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}

/**
 * Starts accepting on a passed listening socket. Accepted clients are handed to `onClient`
 * paused (nothing read yet) and half-open capable; the listening socket itself is never shut
 * down or unlinked.
 *
 * @throws {AdoptionError} naming the fd when it is not a listening stream socket.
 */
export function adopt(
  passed: PassedSocket,
  onClient: (client: net.Socket, listener: Listener) => void,
): Promise<Listener> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  let listening = false;
  return new Promise((resolve, reject) => {
    server.on("error", (error: Error & { code?: string }) => {
      if (listening) return log("error", `Failed to accept on fd ${passed.fd}: ${error.message}`);
      reject(
        new AdoptionError(
          `Passed in socket fd ${passed.fd} (name "${passed.name}") is not a listening stream ` +
            `socket (${error.code ?? error.message}); pass ListenStream= sockets only.`,
        ),
      );
    });
    server.listen({ fd: passed.fd }, () => {
      listening = true;
      const listener: Listener = { passed, address: describe(server) };
      server.on("connection", (client: net.Socket) => {
        client.on("error", () => {}); // Reported where the client is used.
        onClient(client, listener);
      });
      resolve(listener);
    });
  });
}

/**
 * The fd-adoption layer: serves the sockets the service manager passed in.
 *
 * `Deno.listen` cannot adopt an inherited file descriptor (denoland/deno#14006); `node:net` can,
 * for TCP and Unix sockets. This module is the only one that knows that: above it, a passed
 * socket is either a listener that hands over accepted clients, or (with `Accept=yes`) one
 * client connection.
 * @module
 */
import net from "node:net";
import type { PassedSocket } from "./activation.ts";
import { log } from "./log.ts";
import { rearmer } from "./rearm.ts";

/** A passed listening socket being served. */
export interface Listener {
  /** The passed socket it serves. */
  readonly passed: PassedSocket;
  /** Where it listens, for logs: "127.0.0.1:80", "[::]:80" or "unix socket". */
  readonly address: string;
  /** Stops accepting. Closes only our descriptor: the socket stays bound and listening in the
   * service manager, which keeps its own, so clients that arrive meanwhile wait in its queue. */
  close(): void;
}

/** What a passed socket turned out to be. */
export type Adopted =
  | { readonly kind: "listener"; readonly listener: Listener }
  | { readonly kind: "connection"; readonly passed: PassedSocket; readonly socket: net.Socket };

/** A passed file descriptor could not be served. */
export class AdoptionError extends Error {
  override name = "AdoptionError";
}

/** The name systemd gives the socket of an `Accept=yes` service instance. */
export const CONNECTION_NAME = "connection";

/**
 * How often every listener is re-armed in case running out of file descriptors stopped it (see
 * `rearm.ts`): the longest a stopped listener stays stopped once descriptors are free again.
 * A re-arm of a listener that works costs one event-loop wake-up and no system call.
 */
export const REARM_INTERVAL_MS = 500;

const NO_RECOVERY = "if file descriptors run out, accepting may stop until a restart " +
  "(keep LimitNOFILE= above twice --connections-max)";

/** The re-arm functions of the listeners being served (by fd), and the one timer for all. */
const rearmers = new Map<number, () => boolean>();
let rearmTimer: ReturnType<typeof setInterval> | undefined;

function stopRearming(fd: number, why: string | null): void {
  if (!rearmers.delete(fd)) return;
  if (why !== null) log("warning", `Listener on fd ${fd}: ${why}; ${NO_RECOVERY}.`);
  if (rearmers.size === 0) {
    clearInterval(rearmTimer);
    rearmTimer = undefined;
  }
}

/** Re-arms the listener on `fd` every {@link REARM_INTERVAL_MS} until {@link stopRearming}. */
function keepArmed(fd: number, rearm: () => boolean): void {
  rearmers.set(fd, rearm);
  if (rearmTimer !== undefined) return;
  rearmTimer = setInterval(() => {
    for (const [each, again] of rearmers) {
      if (!again()) stopRearming(each, "re-arming it failed");
    }
  }, REARM_INTERVAL_MS);
  Deno.unrefTimer(rearmTimer); // Never what keeps the process alive.
}

function describe(server: net.Server): string {
  const address = server.address();
  if (address === null) return "unix socket";
  if (typeof address === "string") return address;
  return address.family === "IPv6"
    ? `[${address.address}]:${address.port}`
    : `${address.address}:${address.port}`;
}

function notStream(passed: PassedSocket, why: string): AdoptionError {
  return new AdoptionError(
    `Passed in socket fd ${passed.fd} (name "${passed.name}") is not a listening or connected ` +
      `stream socket (${why}); pass ListenStream= sockets only.`,
  );
}

function adoptConnection(passed: PassedSocket, hint = ""): Adopted {
  let socket: net.Socket;
  try {
    socket = new net.Socket({ fd: passed.fd, allowHalfOpen: true, readable: true, writable: true });
  } catch (e) {
    throw notStream(passed, `${(e as Error).message}${hint}`);
  }
  socket.on("error", () => {}); // Reported where the socket is used.
  return { kind: "connection", passed, socket };
}

function adoptListener(
  passed: PassedSocket,
  onClient: (client: net.Socket, listener: Listener) => void,
): Promise<Adopted> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  let listening = false;
  return new Promise((resolve, reject) => {
    server.on("error", (error: Error & { code?: string }) => {
      if (listening) return log("error", `Failed to accept on fd ${passed.fd}: ${error.message}`);
      // A connected socket cannot listen (EINVAL): that is an Accept=yes connection.
      // (Deno closes a Unix fd whose listen() failed, so Unix connections must come named.)
      if (error.code === "EINVAL") {
        const hint = `; an Accept=yes Unix socket must be named "${CONNECTION_NAME}"`;
        try {
          return resolve(adoptConnection(passed, hint));
        } catch (e) {
          return reject(e);
        }
      }
      reject(notStream(passed, error.code ?? error.message));
    });
    server.listen({ fd: passed.fd }, () => {
      listening = true;
      // Recovery from running out of file descriptors, through private API (see rearm.ts).
      const rearm = rearmer(server);
      if (rearm === null) {
        log("warning", `Listener on fd ${passed.fd}: this Deno cannot re-arm it; ${NO_RECOVERY}.`);
      } else {
        keepArmed(passed.fd, rearm);
      }
      const listener: Listener = {
        passed,
        address: describe(server),
        close: () => {
          stopRearming(passed.fd, null);
          server.close();
        },
      };
      server.on("connection", (client: net.Socket) => {
        client.on("error", () => {}); // Reported where the client is used.
        onClient(client, listener);
      });
      resolve({ kind: "listener", listener });
    });
  });
}

/**
 * Serves a passed socket: a listener starts accepting (clients are handed to `onClient` paused
 * and half-open capable), a connected socket (`Accept=yes`) is returned as it is.
 *
 * @throws {AdoptionError} naming the fd when it is neither.
 */
export function adopt(
  passed: PassedSocket,
  onClient: (client: net.Socket, listener: Listener) => void,
): Promise<Adopted> {
  if (passed.name !== CONNECTION_NAME) return adoptListener(passed, onClient);
  try {
    return Promise.resolve(adoptConnection(passed));
  } catch (e) {
    return Promise.reject(e);
  }
}

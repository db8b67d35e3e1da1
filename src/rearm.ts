/**
 * Getting a `node:net` listener going again after running out of file descriptors stopped it.
 *
 * In Deno 2.9 a `node:net` server (adopted fd or not, TCP or Unix) stops accepting for good once
 * an accept() fails with EMFILE or ENFILE: its libuv-compatible layer drops the failed accept
 * without asking the reactor to wake it again, so there is no 'error' event, `listening` stays
 * true, and clients wait in the kernel's accept queue even after descriptors have been freed.
 * Nothing tells us when that happened, so the adoption layer applies one of two remedies on a
 * timer, both measured on Deno 2.9.6:
 *
 * - TCP ({@link rearmer}): calling `listen(backlog)` again on the server's native handle makes
 *   the event loop poll the listener again. It makes no system call on the socket (strace), so
 *   the backlog the service manager chose stays; on a listener that works it changes nothing.
 * - Unix: {@link duplicate} the socket with the handle's `fdForIpc()` (a dup(2)), serve the copy
 *   with a fresh server, and close the stopped one. The accept queue belongs to the socket, not
 *   to the descriptor, so no waiting client is lost, and an adopted socket's path is never
 *   unlinked by the close. Never `listen` again on a Unix handle: in Deno 2.8.3 to 2.9.5 that
 *   closes the adopted socket (2.9.6 answers EINVAL and changes nothing).
 *
 * `_handle`, its `listen` and its `fdForIpc` are private API that a Deno release may change or
 * fix, so this module is the only place that touches them; {@link recoveryMissing} tells at
 * start-up what is missing, and callers then go on without recovery (and say so once).
 * @module
 */
import type { Server } from "node:net";

/** The backlog passed to the re-arming `listen()` (ignored for an adopted socket). */
export const REARM_BACKLOG = 511;

interface NativeHandle {
  listen(backlog: number): number;
  fdForIpc(): number;
}

function handleOf(server: Server): Partial<NativeHandle> | null {
  const handle = (server as unknown as { _handle?: Partial<NativeHandle> | null })._handle;
  return handle ?? null;
}

/** Whether `server` listens on a Unix socket (whose address an adopted server does not know). */
function isUnix(server: Server): boolean {
  const address = server.address();
  return address === null || typeof address === "string";
}

/**
 * Finds the way to re-arm a listening TCP `server` in place.
 *
 * @returns a function that re-arms it and tells whether that worked, or null for a Unix
 * socket (see {@link duplicate}) or when this Deno's handle has no `listen`.
 */
export function rearmer(server: Server): (() => boolean) | null {
  const handle = handleOf(server);
  if (isUnix(server) || handle === null || typeof handle.listen !== "function") return null;
  const listenable = handle as NativeHandle;
  return () => {
    // The handle is gone once the server is closed; nothing to re-arm then.
    if (handleOf(server) !== listenable) return false;
    try {
      return listenable.listen(REARM_BACKLOG) === 0;
    } catch {
      return false;
    }
  };
}

/** Whether this Deno's handle of `server` offers what {@link duplicate} needs. */
export function canDuplicate(server: Server): boolean {
  return typeof handleOf(server)?.fdForIpc === "function";
}

/** Why {@link duplicate} gave no descriptor. */
export type DuplicateFailure = "unsupported" | "failed";

/**
 * Duplicates the listening socket of `server` into a new descriptor (close-on-exec) that a new
 * server can adopt.
 *
 * @returns the new descriptor; "failed" when dup(2) failed (out of descriptors, most likely);
 * "unsupported" when this Deno's handle cannot do it.
 */
export function duplicate(server: Server): number | DuplicateFailure {
  const handle = handleOf(server);
  if (handle === null || typeof handle.fdForIpc !== "function") return "unsupported";
  try {
    const fd = handle.fdForIpc();
    return Number.isInteger(fd) && fd >= 0 ? fd : "failed";
  } catch {
    return "unsupported";
  }
}

/**
 * What recovering `server` after running out of file descriptors needs of this Deno and it
 * lacks, for the start-up notice.
 *
 * @returns the missing private API, or null when recovery is possible.
 */
export function recoveryMissing(server: Server): string | null {
  if (rearmer(server) !== null || canDuplicate(server)) return null;
  return isUnix(server) ? "Unix server handle fdForIpc()" : "TCP server handle listen()";
}

/**
 * Re-arming a `node:net` listener that running out of file descriptors has stopped.
 *
 * In Deno 2.9 a `node:net` server (adopted fd or not, TCP or Unix) stops accepting for good once
 * an accept() fails with EMFILE or ENFILE: its libuv-compatible layer drops the failed accept
 * without asking the reactor to wake it again, so there is no 'error' event, `listening` stays
 * true, and clients wait in the kernel's backlog even after descriptors have been freed.
 *
 * Calling `listen(backlog)` again on the server's native handle (`server._handle`) re-arms it.
 * Measured on Deno 2.9.6 (strace): on an adopted socket it makes no system call on the socket,
 * so the backlog the service manager chose stays; it only makes the event loop poll the
 * listener again, which accepts whatever waits (or, with descriptors still short, fails once
 * more and waits for the next re-arm). On a listener that works it changes nothing: no
 * connection is delivered twice or lost.
 *
 * `_handle` and its `listen` are private API that a Deno release may change or fix, so this
 * module is the only place that touches them, and {@link rearmer} reports `null` when they are
 * missing; callers then go on without recovery (and say so once).
 * @module
 */
import type { Server } from "node:net";

/** The backlog passed to the re-arming `listen()`; node:net uses the same default. */
export const REARM_BACKLOG = 511;

interface ListenableHandle {
  listen(backlog: number): number;
}

/**
 * Finds the way to re-arm `server`, once it is listening.
 *
 * @returns a function that re-arms it and tells whether that worked (a non-zero status or an
 * exception means this Deno does not support it), or null when this Deno lacks the handle.
 */
export function rearmer(server: Server): (() => boolean) | null {
  const handle = (server as unknown as { _handle?: Partial<ListenableHandle> | null })._handle;
  if (handle === null || handle === undefined || typeof handle.listen !== "function") return null;
  const listenable = handle as ListenableHandle;
  return () => {
    // The handle is gone once the server is closed; nothing to re-arm then.
    if ((server as unknown as { _handle?: unknown })._handle !== listenable) return false;
    try {
      return listenable.listen(REARM_BACKLOG) === 0;
    } catch {
      return false;
    }
  };
}

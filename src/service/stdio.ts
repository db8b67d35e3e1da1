/**
 * What the standard file descriptors are: an inetd-style service gets its client's connection
 * as standard input (and often as stdout and stderr too), which decides what to serve and where
 * log lines may go.
 *
 * `node:fs` is imported only when asked: loading it costs Deno about 17 ms, which start-up
 * should not pay before the first client is served.
 * @module
 */
import type { FdIdentity } from "./log.ts";

/** fstat(2) of an open file descriptor (0, 1 or 2); null when it is not open. */
export async function identify(fd: number): Promise<FdIdentity | null> {
  const { fstatSync } = await import("node:fs");
  try {
    const stat = fstatSync(fd);
    return { socket: stat.isSocket(), dev: stat.dev, ino: stat.ino };
  } catch {
    return null;
  }
}

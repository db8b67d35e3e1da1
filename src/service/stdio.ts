/**
 * What the standard file descriptors are: an inetd-style service gets its client's connection
 * as standard input (and often as stdout and stderr too), which decides what to serve and where
 * log lines may go.
 *
 * With libc at hand (the engine's, see `engine/fdstat.ts`) it asks fstat(2) directly. Without it
 * (a usage error, say, before libc is opened, or no FFI grant) `node:fs` is imported, only when
 * asked: loading it costs Deno about 8 MiB and 17 ms, which start-up should not pay.
 * @module
 */
import { fdIdentity } from "../engine/fdstat.ts";
import type { Libc } from "../engine/libc.ts";
import type { FdIdentity } from "./log.ts";

/** fstat(2) of an open file descriptor (0, 1 or 2); null when it is not open. */
export async function identify(fd: number, libc: Libc | null): Promise<FdIdentity | null> {
  if (libc !== null) return fdIdentity(libc, fd);
  const { fstatSync } = await import("node:fs");
  try {
    const stat = fstatSync(fd);
    return { socket: stat.isSocket(), dev: stat.dev, ino: stat.ino };
  } catch {
    return null;
  }
}

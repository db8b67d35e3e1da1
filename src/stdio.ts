/**
 * What the standard file descriptors are: an inetd-style service gets its client's connection
 * as standard input (and often as stdout and stderr too), which decides what to serve and where
 * log lines may go.
 * @module
 */
import { fstatSync } from "node:fs";
import type { FdIdentity } from "./log.ts";

/** fstat(2) of an open file descriptor (0, 1 or 2); null when it is not open. */
export function identify(fd: number): FdIdentity | null {
  try {
    const stat = fstatSync(fd);
    return { socket: stat.isSocket(), dev: stat.dev, ino: stat.ino };
  } catch {
    return null;
  }
}

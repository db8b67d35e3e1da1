/**
 * fstat(2) of the standard descriptors through libc: whether one is a socket, and its device
 * and inode (what `JOURNAL_STREAM` names). Deno's own way is `node:fs`, whose loading costs
 * start-up about 8 MiB of memory and 17 ms.
 * @module
 */
import type { FdIdentity } from "../service/log.ts";
import type { Libc } from "./libc.ts";

/** `sizeof(struct stat)`: 144 bytes on x86_64, 128 on aarch64; room for either. */
const STAT_SIZE = 256;
/** Where `st_mode` is: after st_dev, st_ino and (x86_64 only) a 64-bit st_nlink. */
const MODE_OFFSET = Deno.build.arch === "x86_64" ? 24 : 16;
const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;

/** fstat(2) of `fd`; null when it is not open. */
export function fdIdentity(libc: Libc, fd: number): FdIdentity | null {
  const stat = new Uint8Array(STAT_SIZE);
  if (libc.call.fstat(fd, stat) < 0) return null;
  const view = new DataView(stat.buffer);
  const u64 = (at: number) => view.getUint32(at, true) + view.getUint32(at + 4, true) * 2 ** 32;
  return {
    socket: (view.getUint32(MODE_OFFSET, true) & S_IFMT) === S_IFSOCK,
    dev: u64(0),
    ino: u64(8),
  };
}

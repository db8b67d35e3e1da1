/**
 * The C library, through Deno's FFI: the only module that opens it. The engine serves every
 * socket through libc (Deno adopts no inherited file descriptor, and its own sockets cannot be
 * driven from one event loop with the passed ones).
 *
 * Least privilege: {@link openLibc} opens libc with just the symbols the engine needs, and
 * {@link dropFfi} then gives up Deno's FFI permission for good: the loaded symbols keep
 * working, but no other library can be opened and no pointer made or read from JavaScript. The
 * few addresses the engine needs (of its own buffers, for `recvmmsg`/`sendmmsg`) come from libc
 * itself ({@link Libc.addressOf}), so no pointer API is ever needed, and a path-scoped
 * `--allow-ffi=/PATH/libc.so.6` is enough.
 *
 * Calls on the main thread never block: every socket the engine reads or writes is
 * non-blocking. Byte counts are returned as `i32` (every buffer is far below 2 GiB), which
 * saves a BigInt per call.
 * @module
 */

/** Where distributions keep glibc's `libc.so.6`; the first one Deno lets us open is used. */
export const LIBC_CANDIDATES: readonly string[] = [
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/lib/aarch64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib64/libc.so.6",
  "/usr/lib/libc.so.6",
  "/lib/libc.so.6",
  "libc.so.6",
];

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  /** fcntl(fd, cmd, arg): only F_GETFL and F_SETFL, with an int argument. */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "usize"], result: "i32" },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  /** Waits on a worker thread: the event loop goes on meanwhile. */
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
  /** The same call, to look without waiting (timeout 0) on the main thread. */
  epoll_poll: { name: "epoll_wait", parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "usize" },
  /** memmove(p, p, 0) returns p: the address of a buffer of ours, without a pointer API. */
  address_of: { name: "memmove", parameters: ["buffer", "buffer", "usize"], result: "usize" },
  /** memmove(ours, address, n): reads n bytes at an address libc gave us (errno). */
  read_at: { name: "memmove", parameters: ["buffer", "usize", "usize"], result: "usize" },
  /** The user a reply to a Unix client may be refused to (Deno.uid() needs --allow-sys). */
  geteuid: { parameters: [], result: "u32" },
  /** The limit on open files, for the descriptor budget (`service/descriptors.ts`). */
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbols. */
export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** libc, opened. */
export interface Libc {
  /** The path it was opened from. */
  readonly path: string;
  /** The C functions. */
  readonly call: LibcSymbols;
  /** errno of the last failed call made on this thread. */
  errno(): number;
  /** The address of `buffer`'s first byte (stable: array buffers do not move). */
  addressOf(buffer: Uint8Array): bigint;
}

/** Why libc could not be opened. */
export type LibcProblem = { readonly kind: "no-permission" } | {
  readonly kind: "failed";
  readonly path: string;
  readonly message: string;
};

/**
 * The candidates worth trying on a machine of `arch`: a multiarch directory of another
 * architecture (`/lib/x86_64-linux-gnu/` on aarch64) never holds a libc this process can load,
 * even where the permission set grants it, and is left out.
 */
export function libcCandidates(
  arch: string = Deno.build.arch,
  candidates: readonly string[] = LIBC_CANDIDATES,
): string[] {
  return candidates.filter((path) => {
    const triplet = /\/([a-z0-9_]+)-linux-gnu\//.exec(path);
    return triplet === null || triplet[1] === arch;
  });
}

/**
 * The paths that FFI may open, in the candidates' order: granted, and not known to be missing.
 * Without read permission a path cannot be looked at (and must not prompt), so it stays in the
 * list and `dlopen` tells (see {@link openFirst}).
 */
export function grantedLibcs(
  granted: (path: string) => boolean,
  candidates: readonly string[] = libcCandidates(),
): string[] {
  return candidates.filter((path) => granted(path) && (path === "libc.so.6" || exists(path)));
}

/**
 * Opens the first of `paths` that `open` can: one that fails (a granted path that does not
 * exist here) is passed over for the next.
 * @returns what was opened and from where, or the first failure (none at all: no permission).
 */
export function openFirst<T>(
  paths: readonly string[],
  open: (path: string) => T,
): { opened: T; path: string } | LibcProblem {
  let failure: LibcProblem = { kind: "no-permission" };
  for (const path of paths) {
    try {
      return { opened: open(path), path };
    } catch (e) {
      if (failure.kind === "no-permission") {
        failure = { kind: "failed", path, message: (e as Error).message };
      }
    }
  }
  return failure;
}

function exists(path: string): boolean {
  // Without read permission we cannot tell (and must not prompt): let dlopen try.
  if (!readable(path)) return true;
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    return !(e instanceof Deno.errors.NotFound);
  }
}

function readable(path: string): boolean {
  return Deno.permissions.querySync({ name: "read", path }).state === "granted";
}

function ffiGranted(path: string): boolean {
  return Deno.permissions.querySync({ name: "ffi", path }).state === "granted";
}

/** The Deno flag that lets this program open libc here ("--allow-ffi=/lib/…/libc.so.6"). */
export function libcFlag(): string {
  const candidates = libcCandidates();
  const path = candidates.find((candidate) => {
    if (!readable(candidate)) return false;
    try {
      return Deno.statSync(candidate).isFile;
    } catch {
      return false;
    }
  });
  return `--allow-ffi=${path ?? candidates[0]}`;
}

function dlopen<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): { opened: Deno.DynamicLibrary<S>; path: string } | LibcProblem {
  return openFirst(grantedLibcs(ffiGranted), (path) => {
    return Deno.dlopen(path, symbols);
  });
}

/** Reads this thread's errno: its address comes from libc, its value through memmove. */
function errnoReader(call: Pick<LibcSymbols, "__errno_location" | "read_at">): () => number {
  const errnoAt = BigInt(call.__errno_location());
  const bytes = new Uint8Array(4);
  const view = new DataView(bytes.buffer);
  return () => {
    call.read_at(bytes, errnoAt, 4n);
    return view.getInt32(0, true);
  };
}

/** Opens libc, with every symbol the engine needs, where Deno's permissions allow it. */
export function openLibc(): Libc | LibcProblem {
  const library = dlopen(SYMBOLS);
  if ("kind" in library) return library;
  const call = library.opened.symbols;
  return {
    path: library.path,
    call,
    errno: errnoReader(call),
    addressOf(buffer: Uint8Array) {
      return BigInt(call.address_of(buffer, buffer, 0n));
    },
  };
}

/**
 * Gives up Deno's FFI permission: libc's loaded symbols keep working; nothing else can be
 * opened, and no pointer made. Call before serving.
 */
export async function dropFfi(): Promise<void> {
  await Deno.permissions.revoke({ name: "ffi" });
}

const RLIMIT_NOFILE = 7;

/** RLIMIT_NOFILE's soft limit, through getrlimit(2); null when unlimited or unknown. */
export function openFilesLimit(libc: Libc): number | null {
  const limits = new BigUint64Array(2); // struct rlimit: two 64-bit values.
  if (libc.call.getrlimit(RLIMIT_NOFILE, new Uint8Array(limits.buffer)) < 0) return null;
  return limits[0] > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(limits[0]);
}

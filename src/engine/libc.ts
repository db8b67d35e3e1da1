/**
 * The C library, through Deno's FFI: the only module that uses it, for what Deno itself cannot
 * do with a datagram socket passed in (it adopts no datagram file descriptor, see the README).
 *
 * Least privilege: {@link openLibc} opens libc with just the symbols the datagram relay needs,
 * and {@link dropFfi} then gives up Deno's FFI permission for good: the loaded symbols keep
 * working, but no other library can be opened and no pointer made or read from JavaScript. The
 * few addresses the relay needs (of its own buffers, for `recvmmsg`/`sendmmsg`) come from libc
 * itself ({@link Libc.addressOf}), so no pointer API is ever needed, and a path-scoped
 * `--allow-ffi=/PATH/libc.so.6` is enough.
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
  close: { parameters: ["i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
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
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  __errno_location: { parameters: [], result: "usize" },
  /** memmove(p, p, 0) returns p: the address of a buffer of ours, without a pointer API. */
  address_of: { name: "memmove", parameters: ["buffer", "buffer", "usize"], result: "usize" },
  /** memmove(ours, address, n): reads n bytes at an address libc gave us (errno). */
  read_at: { name: "memmove", parameters: ["buffer", "usize", "usize"], result: "usize" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbols. */
export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/**
 * Just enough to ask each passed socket its type, at start-up: every symbol costs Deno work
 * when a library is opened (about 0.5 ms of CPU each, measured), so the whole set is opened
 * only when a datagram socket was passed.
 */
const PROBE_SYMBOLS = {
  getsockopt: SYMBOLS.getsockopt,
  __errno_location: SYMBOLS.__errno_location,
  read_at: SYMBOLS.read_at,
} as const satisfies Deno.ForeignLibraryInterface;

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

/** Linux errno values the relay tells apart. */
export const ERRNO = {
  EINTR: 4,
  EAGAIN: 11,
  EMFILE: 24,
  ENFILE: 23,
  ECONNREFUSED: 111,
} as const;

/** Why libc could not be opened. */
export type LibcProblem = { readonly kind: "no-permission" } | {
  readonly kind: "failed";
  readonly path: string;
  readonly message: string;
};

/** The path that FFI may open, or null when none of the candidates is granted. */
export function grantedLibc(
  granted: (path: string) => boolean,
  candidates: readonly string[] = LIBC_CANDIDATES,
): string | null {
  return candidates.find((path) => granted(path) && (path === "libc.so.6" || exists(path))) ??
    null;
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
  const path = LIBC_CANDIDATES.find((candidate) => {
    if (!readable(candidate)) return false;
    try {
      return Deno.statSync(candidate).isFile;
    } catch {
      return false;
    }
  });
  return `--allow-ffi=${path ?? LIBC_CANDIDATES[0]}`;
}

/** What a passed file descriptor is, as far as serving it goes. */
export type SocketKind =
  | { readonly type: "stream"; readonly family: number }
  | { readonly type: "datagram"; readonly family: number }
  | { readonly type: "other"; readonly why: string };

/** What {@link classify} needs of libc. */
export interface SocketProbe {
  readonly call: Pick<LibcSymbols, "getsockopt">;
  errno(): number;
}

const SOL_SOCKET = 1;
const ENOTSOCK = 88;
const SO_TYPE = 3;
const SO_DOMAIN = 39;

/** Asks the kernel what kind of socket `fd` is (SO_TYPE, SO_DOMAIN). */
export function classify(libc: SocketProbe, fd: number): SocketKind {
  const value = new Uint8Array(4);
  const length = new Uint8Array(4);
  const get = (option: number) => {
    new DataView(length.buffer).setUint32(0, 4, true);
    return libc.call.getsockopt(fd, SOL_SOCKET, option, value, length) < 0
      ? null
      : new DataView(value.buffer).getInt32(0, true);
  };
  const type = get(SO_TYPE);
  if (type === null) {
    const errno = libc.errno();
    return { type: "other", why: errno === ENOTSOCK ? "not a socket" : `errno ${errno}` };
  }
  if (type === 2) return { type: "datagram", family: get(SO_DOMAIN) ?? 0 };
  if (type === 1) return { type: "stream", family: get(SO_DOMAIN) ?? 0 };
  return { type: "other", why: type === 5 ? "a sequential-packet socket" : `socket type ${type}` };
}

/**
 * Asks each of `fds` its type, with a library of {@link PROBE_SYMBOLS} only, closed again at
 * once.
 */
export function probeSockets(fds: readonly number[]): SocketKind[] | LibcProblem {
  const opened = dlopen(PROBE_SYMBOLS);
  if ("kind" in opened) return opened;
  try {
    const probe = { call: opened.symbols, errno: errnoReader(opened.symbols) };
    return fds.map((fd) => classify(probe, fd));
  } finally {
    opened.close();
  }
}

function dlopen<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): Deno.DynamicLibrary<S> | LibcProblem {
  const path = grantedLibc(ffiGranted);
  if (path === null) return { kind: "no-permission" };
  try {
    return Deno.dlopen(path, symbols);
  } catch (e) {
    return { kind: "failed", path, message: (e as Error).message };
  }
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

/** Opens libc, with every symbol the relay needs, where Deno's permissions allow it. */
export function openLibc(): Libc | LibcProblem {
  const opened = dlopen(SYMBOLS);
  if ("kind" in opened) return opened;
  const call = opened.symbols;
  return {
    path: grantedLibc(ffiGranted)!,
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

/**
 * Linux errno values the engine tells apart, and the words for them in log lines (glibc's
 * strerror, so that lines read as the reference's do: "Failed to connect to remote host:
 * Connection refused"). Pure.
 * @module
 */

/** errno values by name (Linux, every architecture the package is built for). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  ENFILE: 23,
  EMFILE: 24,
  EPIPE: 32,
  ENOTSOCK: 88,
  EPROTOTYPE: 91,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EINPROGRESS: 115,
} as const;

const MESSAGES: Readonly<Record<number, string>> = {
  [ERRNO.EPERM]: "Operation not permitted",
  [ERRNO.ENOENT]: "No such file or directory",
  [ERRNO.EINTR]: "Interrupted system call",
  [ERRNO.EBADF]: "Bad file descriptor",
  [ERRNO.EAGAIN]: "Resource temporarily unavailable",
  [ERRNO.ENOMEM]: "Cannot allocate memory",
  [ERRNO.EACCES]: "Permission denied",
  [ERRNO.ENFILE]: "Too many open files in system",
  [ERRNO.EMFILE]: "Too many open files",
  [ERRNO.EPIPE]: "Broken pipe",
  [ERRNO.ENOTSOCK]: "Socket operation on non-socket",
  [ERRNO.EPROTOTYPE]: "Protocol wrong type for socket",
  [ERRNO.EAFNOSUPPORT]: "Address family not supported by protocol",
  [ERRNO.EADDRINUSE]: "Address already in use",
  [ERRNO.EADDRNOTAVAIL]: "Cannot assign requested address",
  [ERRNO.ENETDOWN]: "Network is down",
  [ERRNO.ENETUNREACH]: "Network is unreachable",
  [ERRNO.ECONNABORTED]: "Software caused connection abort",
  [ERRNO.ECONNRESET]: "Connection reset by peer",
  [ERRNO.ENOBUFS]: "No buffer space available",
  [ERRNO.ENOTCONN]: "Transport endpoint is not connected",
  [ERRNO.ETIMEDOUT]: "Connection timed out",
  [ERRNO.ECONNREFUSED]: "Connection refused",
  [ERRNO.EHOSTDOWN]: "Host is down",
  [ERRNO.EHOSTUNREACH]: "No route to host",
  [ERRNO.EINPROGRESS]: "Operation now in progress",
};

/** What `errno` means, as strerror(3) says it ("Connection refused"; "errno 200" if unknown). */
export function errnoMessage(errno: number): string {
  return MESSAGES[errno] ?? `errno ${errno}`;
}

/** A failed system call, with its errno. */
export class SystemError extends Error {
  override name = "SystemError";

  /** @param errno why the call failed; the message is its strerror(3) text. */
  constructor(readonly errno: number, message = errnoMessage(errno)) {
    super(message);
  }
}

/**
 * The proxy's target: where every accepted client is forwarded to.
 *
 * Parsing is pure and follows systemd-socket-proxyd: a leading "/" is a Unix socket path, a
 * leading "@" an abstract Unix socket name, anything else HOST:PORT split at the last ":"
 * (port 80 when there is none). Unlike the reference, IPv6 may be written in brackets, and
 * "vsock:CID:PORT" names an AF_VSOCK socket, and "HOST:*" (see {@link SamePortTarget}) forwards
 * each listener to its own port number on HOST.
 * @module
 */

/** A TCP target: a host name or IP address and a port. */
export interface TcpTarget {
  readonly kind: "tcp";
  /** A host name, or an IPv4 or IPv6 address (without brackets). */
  readonly host: string;
  readonly port: number;
}

/** A Unix socket in the file system. */
export interface UnixTarget {
  readonly kind: "unix";
  readonly path: string;
}

/** A Unix socket in the abstract namespace; `name` excludes the leading "@" (NUL). */
export interface AbstractTarget {
  readonly kind: "abstract";
  readonly name: string;
}

/** An AF_VSOCK socket (virtual machines and their host), written "vsock:CID:PORT". */
export interface VsockTarget {
  readonly kind: "vsock";
  readonly cid: number;
  readonly port: number;
}

/** Any target the proxy can forward to. */
export type Target = TcpTarget | UnixTarget | AbstractTarget | VsockTarget;

/**
 * "HOST:*": each listener's clients go to the listener's own port number on HOST, so one unit
 * with many ListenStream= ports needs one target. Becomes a {@link TcpTarget} per listener
 * ({@link atPort}).
 */
export interface SamePortTarget {
  readonly kind: "same-port";
  /** A host name, or an IPv4 or IPv6 address (without brackets). */
  readonly host: string;
}

/** A target as the command line gives it: a target, or one whose port is the listener's. */
export type TargetSpec = Target | SamePortTarget;

/** The port used when a target names no port, as systemd-socket-proxyd does. */
export const DEFAULT_PORT = 80;

/** sun_path holds 108 bytes: a path needs a terminating NUL, an abstract name a leading NUL. */
const MAX_UNIX_PATH_BYTES = 107;

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/;

/** Whether `text` is an IPv4 address in dotted-quad form. */
export function isIPv4(text: string): boolean {
  return IPV4.test(text);
}

/** Whether `text` is an IPv6 address (RFC 4291 text forms, optional embedded IPv4, no zone). */
export function isIPv6(text: string): boolean {
  let head = text;
  let tailGroups = 0;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    if (!isIPv4(text.slice(lastColon + 1))) return false;
    head = text.slice(0, lastColon + 1) + "0";
    tailGroups = 1;
  }
  const halves = head.split("::");
  if (halves.length > 2) return false;
  const groups = (half: string) => (half === "" ? [] : half.split(":"));
  const parts = halves.flatMap(groups);
  if (!parts.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return false;
  const count = parts.length + tailGroups;
  return halves.length === 2 ? count <= 7 : count === 8;
}

/** Whether `text` is a literal IP address, so that no name resolution is needed. */
export function isIPAddress(text: string): boolean {
  return isIPv4(text) || isIPv6(text);
}

function parsePort(text: string, whole: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new RangeError(
      `Invalid target "${whole}": port "${text}" is not a number from 1 to 65535`,
    );
  }
  return Number(text);
}

function checkHost(host: string, whole: string): string {
  if (host === "") throw new RangeError(`Invalid target "${whole}": the host is empty`);
  if (!isIPAddress(host) && !HOSTNAME.test(host)) {
    throw new RangeError(
      `Invalid target "${whole}": "${host}" is neither an IP address nor a host name` +
        (host.includes(":") ? ' (write IPv6 addresses in brackets, e.g. "[::1]:8080")' : ""),
    );
  }
  return host;
}

/**
 * Parses a target as given on the command line.
 *
 * @throws {RangeError} naming the input and what is wrong with it.
 */
export function parseTarget(text: string): Target {
  const bytes = new TextEncoder().encode(text).length;
  if (text.startsWith("/")) {
    if (bytes > MAX_UNIX_PATH_BYTES) {
      throw new RangeError(`Invalid target "${text}": Unix socket paths are limited to 107 bytes`);
    }
    if (text.includes("\0")) {
      throw new RangeError(`Invalid target ${JSON.stringify(text)}: the path contains a NUL byte`);
    }
    return { kind: "unix", path: text };
  }
  if (text.startsWith("@")) {
    const name = text.slice(1);
    if (name === "") throw new RangeError(`Invalid target "@": the abstract socket name is empty`);
    if (bytes > MAX_UNIX_PATH_BYTES) {
      throw new RangeError(`Invalid target "${text}": abstract names are limited to 106 bytes`);
    }
    return { kind: "abstract", name };
  }
  const vsock = /^vsock:(\d{1,10}):(\d{1,10})$/.exec(text);
  if (vsock) {
    const [cid, port] = [Number(vsock[1]), Number(vsock[2])];
    if (cid > 0xffffffff || port > 0xffffffff) {
      throw new RangeError(`Invalid target "${text}": CID and port must fit in 32 bits`);
    }
    return { kind: "vsock", cid, port };
  }
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    const host = close < 0 ? "" : text.slice(1, close);
    if (close < 0 || !isIPv6(host)) {
      throw new RangeError(`Invalid target "${text}": expected "[IPv6-ADDRESS]:PORT"`);
    }
    const rest = text.slice(close + 1);
    if (rest === "") return { kind: "tcp", host, port: DEFAULT_PORT };
    if (!rest.startsWith(":")) {
      throw new RangeError(`Invalid target "${text}": expected ":PORT" after "]"`);
    }
    return { kind: "tcp", host, port: parsePort(rest.slice(1), text) };
  }
  const colon = text.lastIndexOf(":");
  if (colon < 0) return { kind: "tcp", host: checkHost(text, text), port: DEFAULT_PORT };
  const host = checkHost(text.slice(0, colon), text);
  return { kind: "tcp", host, port: parsePort(text.slice(colon + 1), text) };
}

/**
 * Parses a target as given on the command line, "HOST:*" and "[IPV6]:*" included.
 *
 * @throws {RangeError} naming the input and what is wrong with it.
 */
export function parseTargetSpec(text: string): TargetSpec {
  if (!text.endsWith(":*") || text.startsWith("/") || text.startsWith("@")) {
    return parseTarget(text);
  }
  // Parsed with a port in place of "*", and any error given back with the text as written.
  const withPort = `${text.slice(0, -2)}:1`;
  let target: Target;
  try {
    target = parseTarget(withPort);
  } catch (e) {
    throw new RangeError((e as Error).message.replace(`"${withPort}"`, `"${text}"`));
  }
  if (target.kind !== "tcp") {
    throw new RangeError(`Invalid target "${text}": ":*" (the listener's port) is for TCP only`);
  }
  return { kind: "same-port", host: target.host };
}

/**
 * The target for a listener on `port`: `spec` itself, or for "HOST:*" that port on HOST.
 *
 * @param port the listener's port; null for a listener without one (a Unix socket).
 * @throws {RangeError} for "HOST:*" and a listener without a port.
 */
export function atPort(spec: TargetSpec, port: number | null): Target {
  if (spec.kind !== "same-port") return spec;
  if (port === null || !Number.isInteger(port) || port < 1 || port > 65535) {
    const named = formatTarget(spec).replace(/\*$/, "PORT");
    throw new RangeError(
      `the target ${formatTarget(spec)} takes the listener's port, and this listener has none ` +
        `(a Unix socket); name the port: ${named} (TARGET=${named} in a template instance's .conf)`,
    );
  }
  return { kind: "tcp", host: spec.host, port };
}

/** Formats a target for logs and status lines, in the syntax that parses back to it. */
export function formatTarget(target: TargetSpec): string {
  switch (target.kind) {
    case "tcp":
    case "same-port": {
      const port = target.kind === "tcp" ? target.port : "*";
      return target.host.includes(":") ? `[${target.host}]:${port}` : `${target.host}:${port}`;
    }
    case "unix":
      return target.path;
    case "abstract":
      return `@${target.name}`;
    case "vsock":
      return `vsock:${target.cid}:${target.port}`;
  }
}

/**
 * Socket activation: the sockets the service manager passed in, per sd_listen_fds(3).
 *
 * {@link parseListenEnv} is pure; {@link takeListenEnv} reads the variables and unsets them so
 * that nothing we start inherits them.
 * @module
 */

/** The first passed file descriptor (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;

/** More passed sockets than this is taken for a corrupt environment rather than honoured. */
export const MAX_LISTEN_FDS = 65536;

/** The variables of the protocol; all of them are unset once read. */
export const LISTEN_VARIABLES = [
  "LISTEN_PID",
  "LISTEN_PIDFDID",
  "LISTEN_FDS",
  "LISTEN_FDNAMES",
] as const;

/** The name systemd gives the socket of an `Accept=yes` service instance. */
export const CONNECTION_NAME = "connection";

/** The protocol's variables as found in the environment. */
export type ListenEnv = Partial<Record<(typeof LISTEN_VARIABLES)[number], string>>;

/** The name of every socket when LISTEN_FDNAMES is unset or unusable, as sd_listen_fds(3) says. */
export const UNKNOWN_NAME = "unknown";

/** One socket passed in by the service manager. */
export interface PassedSocket {
  /** The file descriptor number, from 3 up. */
  readonly fd: number;
  /** Its name from LISTEN_FDNAMES (`FileDescriptorName=`), or "unknown". */
  readonly name: string;
  /**
   * Set when LISTEN_FDNAMES is there but does not give one name per socket: why its names were
   * not used (the sockets are then all "unknown", and cannot be told apart by name).
   */
  readonly namesIgnored?: string;
}

/** The activation environment is present but malformed. */
export class ActivationError extends Error {
  override name = "ActivationError";
}

function parseDecimal(variable: string, value: string): number {
  if (!/^\d{1,10}$/.test(value)) {
    throw new ActivationError(`${variable}="${value}" is not a decimal number`);
  }
  return Number(value);
}

/**
 * Interprets the LISTEN_* variables for the process `pid`, as sd_listen_fds_with_names() does,
 * but for names: where it fails (-EINVAL) because LISTEN_FDNAMES does not split at ':' into one
 * name per socket, the sockets are still served, as sd_listen_fds() (systemd-socket-proxyd)
 * serves them, named "unknown" and marked with `namesIgnored`. systemd refuses ':' in
 * `FileDescriptorName=`, but the default name is the socket unit's name, which may hold ':'
 * (`socket-proxyd@127.0.0.1:8080.socket`).
 *
 * @returns the passed sockets in order; none when LISTEN_PID is unset or names another process.
 * @throws {ActivationError} when LISTEN_PID or LISTEN_FDS is present for us but malformed.
 */
export function parseListenEnv(env: ListenEnv, pid: number): PassedSocket[] {
  if (env.LISTEN_PID === undefined) return [];
  if (parseDecimal("LISTEN_PID", env.LISTEN_PID) !== pid) return [];
  if (env.LISTEN_FDS === undefined) return [];
  const count = parseDecimal("LISTEN_FDS", env.LISTEN_FDS);
  if (count < 1 || count > MAX_LISTEN_FDS) {
    throw new ActivationError(`LISTEN_FDS=${env.LISTEN_FDS} is out of range 1..${MAX_LISTEN_FDS}`);
  }
  const names = env.LISTEN_FDNAMES?.split(":");
  if (names === undefined || names.length === count) {
    return Array.from({ length: count }, (_, i) => ({
      fd: LISTEN_FDS_START + i,
      name: names?.[i] ?? UNKNOWN_NAME,
    }));
  }
  const namesIgnored = `LISTEN_FDNAMES=${JSON.stringify(env.LISTEN_FDNAMES)} splits at ':' ` +
    `into ${names.length} names for ${count} socket(s)`;
  return Array.from({ length: count }, (_, i) => ({
    fd: LISTEN_FDS_START + i,
    name: UNKNOWN_NAME,
    namesIgnored,
  }));
}

/**
 * Reads the activation variables of this process and unsets them, whether they parse or not.
 *
 * @throws {ActivationError} as {@link parseListenEnv} does.
 */
export function takeListenEnv(): PassedSocket[] {
  const env: ListenEnv = {};
  for (const variable of LISTEN_VARIABLES) {
    env[variable] = Deno.env.get(variable);
    Deno.env.delete(variable);
  }
  return parseListenEnv(env, Deno.pid);
}

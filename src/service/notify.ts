/**
 * Talking back to the service manager, per sd_notify(3): readiness, status, stopping, watchdog.
 *
 * {@link parseNotifySocket} and {@link watchdogIntervalMs} are pure; {@link Notifier} sends, and
 * never throws or blocks the proxy: a failure is logged once and further messages are dropped.
 * @module
 */
import { DatagramSender } from "./unixgram.ts";
import { log } from "./log.ts";

/** The variables of the protocol. */
export const NOTIFY_VARIABLES = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] as const;

/** Where notifications go: a Unix datagram socket path ("\0name" for abstract), or nowhere. */
export type NotifyDestination =
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "unsupported"; readonly reason: string }
  | null;

/** Interprets NOTIFY_SOCKET: an absolute path, "@name" (abstract), or unset (no-op). */
export function parseNotifySocket(value: string | undefined): NotifyDestination {
  if (value === undefined || value === "") return null;
  if (value.startsWith("/")) return { kind: "unix", path: value };
  if (value.startsWith("@") && value.length > 1) {
    return { kind: "unix", path: `\0${value.slice(1)}` };
  }
  if (value.startsWith("vsock:")) {
    return { kind: "unsupported", reason: "Deno cannot send on AF_VSOCK sockets" };
  }
  return { kind: "unsupported", reason: `NOTIFY_SOCKET="${value}" is not a path or @name` };
}

/**
 * The watchdog ping interval: half of WATCHDOG_USEC, if it is set for us.
 *
 * @returns milliseconds, or null when no watchdog is requested for process `pid`.
 */
export function watchdogIntervalMs(
  usec: string | undefined,
  watchdogPid: string | undefined,
  pid: number,
): number | null {
  if (usec === undefined || !/^\d{1,19}$/.test(usec) || Number(usec) === 0) return null;
  if (watchdogPid !== undefined && watchdogPid !== String(pid)) return null;
  return Math.max(1, Math.floor(Number(usec) / 2000));
}

const encoder = new TextEncoder();

/** Sends notifications to the service manager; does nothing when there is none. */
export class Notifier {
  readonly #sender = new DatagramSender("notify");
  #destination: NotifyDestination;
  #queue: Promise<void> = Promise.resolve();

  /** @param destination from {@link parseNotifySocket}. */
  constructor(destination: NotifyDestination) {
    this.#destination = destination;
    if (destination?.kind === "unsupported") {
      log("warning", `Not notifying the service manager: ${destination.reason}.`);
      this.#destination = null;
    }
  }

  /** Whether messages are being sent anywhere. */
  get enabled(): boolean {
    return this.#destination !== null;
  }

  /** Sends one datagram of newline-separated `KEY=VALUE` lines, in order with earlier ones. */
  send(message: string): Promise<void> {
    const destination = this.#destination;
    if (destination === null || destination.kind !== "unix") return this.#queue;
    this.#queue = this.#queue.then(async () => {
      if (this.#destination === null) return;
      try {
        await this.#sender.send(destination.path, encoder.encode(message));
      } catch (e) {
        const hint = e instanceof Deno.errors.NotCapable
          ? ` (allow it with --allow-write=${destination.path})`
          : "";
        log(
          "warning",
          `Cannot notify the service manager, giving up: ${(e as Error).message}${hint}`,
        );
        this.#destination = null;
        this.close();
      }
    });
    return this.#queue;
  }

  /** Releases the socket. */
  close(): void {
    this.#sender.close();
  }
}

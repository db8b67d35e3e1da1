/**
 * Unix datagrams to the service manager's sockets (sd_notify, the journal's native protocol),
 * sent from a socket of our own in the abstract namespace: nothing on disk to clean up.
 * @module
 */
import { after } from "./timer.ts";

/**
 * Sends datagrams to Unix socket paths; the socket is opened at the first. One send at a time:
 * Deno refuses a second on a socket while one is under way ("Busy: Socket already in use"), so
 * callers wait for each before the next.
 */
export class DatagramSender {
  #socket: Deno.DatagramConn | null = null;

  /** @param label part of the abstract name of our socket, for `ss -x` readers. */
  constructor(readonly label: string) {}

  /**
   * Sends `data` as one datagram to `path` ("\0name" for an abstract socket).
   *
   * A receiver whose queue is full (net.unix.max_dgram_qlen) makes Deno 2.9 wait for it in a
   * busy loop, a whole core's worth: past `timeoutMs` the socket is closed, which ends the wait,
   * and the send fails with TimedOut.
   * @throws what opening or sending throws (a missing socket, Deno's permissions, ...).
   */
  async send(path: string, data: Uint8Array, timeoutMs = Infinity): Promise<void> {
    const socket = this.#socket ??= Deno.listenDatagram({
      transport: "unixpacket",
      path: `\0socket-proxyd-${this.label}-${Deno.pid}-${crypto.randomUUID()}`,
    });
    const sending = socket.send(data as Uint8Array<ArrayBuffer>, { transport: "unixpacket", path });
    if (!Number.isFinite(timeoutMs)) return void await sending;
    let cancel = () => {};
    const late = new Promise<never>((_, reject) => {
      cancel = after(timeoutMs, () => {
        sending.catch(() => {}); // It fails now that its socket is closed.
        this.close();
        reject(new Deno.errors.TimedOut(`nothing taken from us for ${timeoutMs} ms`));
      });
    });
    try {
      await Promise.race([sending, late]);
    } finally {
      cancel();
    }
  }

  /** Closes the socket; a later send opens a new one. */
  close(): void {
    try {
      this.#socket?.close();
    } catch {
      // Already closed.
    }
    this.#socket = null;
  }
}

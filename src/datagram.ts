/**
 * Unix datagrams to the service manager's sockets (sd_notify, the journal's native protocol),
 * sent from a socket of our own in the abstract namespace: nothing on disk to clean up.
 * @module
 */

/** Sends datagrams to Unix socket paths; the socket is opened at the first send. */
export class DatagramSender {
  #socket: Deno.DatagramConn | null = null;

  /** @param label part of the abstract name of our socket, for `ss -x` readers. */
  constructor(readonly label: string) {}

  /**
   * Sends `data` as one datagram to `path` ("\0name" for an abstract socket).
   * @throws what opening or sending throws (a missing socket, Deno's permissions, ...).
   */
  async send(path: string, data: Uint8Array): Promise<void> {
    this.#socket ??= Deno.listenDatagram({
      transport: "unixpacket",
      path: `\0socket-proxyd-${this.label}-${Deno.pid}-${crypto.randomUUID()}`,
    });
    await this.#socket.send(data as Uint8Array<ArrayBuffer>, { transport: "unixpacket", path });
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

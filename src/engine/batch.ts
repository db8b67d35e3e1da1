/**
 * Batches of datagrams for `recvmmsg`/`sendmmsg`: an array of `struct mmsghdr`, each with its own
 * address, ancillary data and data slot, so that one system call moves many datagrams. Built once:
 * the addresses of the buffers are written into the headers while libc is at hand, and array
 * buffers never move.
 * @module
 */
import type { Libc } from "./libc.ts";
import { SOCKADDR_MAX } from "./sockaddr.ts";

/** `sizeof(struct mmsghdr)` on 64-bit Linux: a 56-byte msghdr and the length, padded. */
const HEADER = 64;
/** `sizeof(struct iovec)`. */
const IOVEC = 16;
/** Room for one IP_PKTINFO or IPV6_PKTINFO control message. */
export const CONTROL_MAX = 64;

/** A fixed number of datagram slots with their headers. */
export class MessageBatch {
  /** The `struct mmsghdr` array, for the system calls. */
  readonly headers: Uint8Array;
  readonly #view: DataView;
  readonly #data: Uint8Array[] = [];
  readonly #names: Uint8Array[] = [];
  readonly #controls: Uint8Array[] = [];
  readonly #iovs: DataView;
  /** Slots filled, for a batch being assembled for `sendmmsg`. */
  count = 0;
  /** {@link slot} as the C size it is passed as. */
  readonly slotSize: bigint;

  /**
   * @param size the number of slots.
   * @param slot the largest datagram a slot holds, plus one (so that a larger one shows).
   */
  constructor(libc: Libc, readonly size: number, readonly slot: number) {
    this.slotSize = BigInt(slot);
    this.headers = new Uint8Array(size * HEADER);
    this.#view = new DataView(this.headers.buffer);
    const data = new Uint8Array(size * slot);
    const names = new Uint8Array(size * SOCKADDR_MAX);
    const controls = new Uint8Array(size * CONTROL_MAX);
    const iovs = new Uint8Array(size * IOVEC);
    this.#iovs = new DataView(iovs.buffer);
    const [dataAt, namesAt, controlsAt, iovsAt] = [data, names, controls, iovs].map((buffer) =>
      libc.addressOf(buffer)
    );
    for (let i = 0; i < size; i++) {
      const at = i * HEADER;
      this.#view.setBigUint64(at, namesAt + BigInt(i * SOCKADDR_MAX), true);
      this.#view.setBigUint64(at + 16, iovsAt + BigInt(i * IOVEC), true);
      this.#view.setBigUint64(at + 24, 1n, true);
      this.#view.setBigUint64(at + 32, controlsAt + BigInt(i * CONTROL_MAX), true);
      this.#iovs.setBigUint64(i * IOVEC, dataAt + BigInt(i * slot), true);
      this.#data.push(data.subarray(i * slot, (i + 1) * slot));
      this.#names.push(names.subarray(i * SOCKADDR_MAX, (i + 1) * SOCKADDR_MAX));
      this.#controls.push(controls.subarray(i * CONTROL_MAX, (i + 1) * CONTROL_MAX));
    }
  }

  /** Readies every slot to receive a datagram (with ancillary data when `control`). */
  prepareReceive(control: boolean): void {
    for (let i = 0; i < this.size; i++) {
      this.#set(i, SOCKADDR_MAX, this.slot, control ? CONTROL_MAX : 0);
    }
  }

  /**
   * Readies the slots from `first` on to receive datagrams from a connected socket: no address,
   * no ancillary data (the slots are then readied to send with {@link prepareSend}).
   */
  prepareReceiveFrom(first: number): void {
    for (let i = first; i < this.size; i++) this.#set(i, 0, this.slot, 0);
  }

  /** Moves slot `from`'s first `length` bytes of data to slot `to`. */
  move(from: number, to: number, length: number): void {
    this.#data[to].set(this.#data[from].subarray(0, length));
  }

  /** Readies slot `i` to send `length` bytes of its data to `name`, with `control` (or none). */
  prepareSend(i: number, name: Uint8Array, control: Uint8Array | null, length: number): void {
    this.#names[i].set(name);
    if (control !== null) this.#controls[i].set(control);
    this.#set(i, name.length, length, control?.length ?? 0);
  }

  #set(i: number, nameLength: number, dataLength: number, controlLength: number): void {
    const at = i * HEADER;
    this.#view.setUint32(at + 8, nameLength, true);
    // 64-bit lengths below 2^32, written as two halves: no BigInt per datagram.
    this.#iovs.setUint32(i * IOVEC + 8, dataLength, true);
    this.#iovs.setUint32(i * IOVEC + 12, 0, true);
    this.#view.setUint32(at + 40, controlLength, true);
    this.#view.setUint32(at + 44, 0, true);
  }

  /** Slot `i`'s data buffer. */
  data(i: number): Uint8Array {
    return this.#data[i];
  }

  /** Slot `i`'s address buffer, and the length the kernel wrote. */
  name(i: number): Uint8Array {
    return this.#names[i];
  }

  nameLength(i: number): number {
    return Math.min(this.#view.getUint32(i * HEADER + 8, true), SOCKADDR_MAX);
  }

  /** Slot `i`'s ancillary data, and the length the kernel wrote. */
  control(i: number): Uint8Array {
    return this.#controls[i];
  }

  controlLength(i: number): number {
    return this.#view.getUint32(i * HEADER + 40, true);
  }

  /** The bytes received into slot `i` (`msg_len`). */
  length(i: number): number {
    return this.#view.getUint32(i * HEADER + 56, true);
  }

  /** `msg_flags` of slot `i` (MSG_TRUNC: the datagram did not fit). */
  flags(i: number): number {
    return this.#view.getInt32(i * HEADER + 48, true);
  }

  /** The headers from slot `i` on, for a `sendmmsg` that goes on after a failed one. */
  from(i: number): Uint8Array {
    return this.headers.subarray(i * HEADER);
  }
}

/**
 * Admission: whether an accepted client is served now, waits for a free slot, or is refused.
 * Pure: no I/O, no clock.
 *
 * - `--connections-max=N`: at most N clients are served at once, over all listeners.
 * - `--when-full=refuse` (the reference's way): a client over N is refused. `--when-full=wait`:
 *   it waits in a queue of ours, in arrival order, until a slot frees; the queue holds at most
 *   {@link MAX_WAITING}, and a client beyond that is refused as over the limit. (Before we accept
 *   a client it waits in the kernel's queue, whose length is the socket's `Backlog=`.)
 * - `--connections-per-source=N`: at most N clients from one source, served and waiting
 *   together; a client over it is refused even with `--when-full=wait`, never queued. A source
 *   is an IPv4 address, or the /64 network of an IPv6 address (see {@link sourceOf}); Unix
 *   clients have none and are not counted.
 * @module
 */
import { ConnectionLimit } from "./limit.ts";
import { parseIPv6 } from "../engine/sockaddr.ts";
import { isIPv6 } from "../cli/target.ts";

/** What to do with a client that arrives when `--connections-max` are being served. */
export type WhenFull = "refuse" | "wait";

/** The values of `--when-full`, the default first. */
export const WHEN_FULL: readonly WhenFull[] = ["refuse", "wait"];

/** Why a client was refused: over `--connections-max`, or over `--connections-per-source`. */
export type Refusal = "full" | "source";

/** What became of a client: served now, waiting for a slot, or refused. */
export type Decision = "admitted" | "waiting" | Refusal;

/**
 * The most clients that wait with `--when-full=wait`. Each holds one file descriptor (a served
 * one two, with its backend), so the queue stays well inside the fd limit Deno raises at start.
 */
export const MAX_WAITING = 4096;

/** The limits, as given on the command line. */
export interface AdmissionLimits {
  /** The most clients served at once, at least 1. */
  readonly max: number;
  /** The most clients from one source at once (served and waiting), or null for no limit. */
  readonly perSource: number | null;
  /** What to do with a client when `max` are served. */
  readonly whenFull: WhenFull;
  /** The most clients waiting (default {@link MAX_WAITING}). */
  readonly maxWaiting?: number;
}

/** A waiting client and its source. */
interface Waiting<T> {
  readonly item: T;
  readonly source: string | null;
}

/**
 * Keeps the count of clients served and waiting, by source, and the queue of waiting ones.
 * `T` is whatever the caller needs to serve a waiting client later.
 */
export class Admission<T> {
  readonly #limits: Required<AdmissionLimits>;
  readonly #slots: ConnectionLimit;
  #queue: Array<Waiting<T>> = [];
  #head = 0;
  readonly #bySource = new Map<string, number>();

  constructor(limits: AdmissionLimits) {
    const { max, perSource } = limits;
    this.#slots = new ConnectionLimit(max);
    if (perSource !== null && (!Number.isInteger(perSource) || perSource < 1)) {
      throw new RangeError(`Invalid per-source limit ${perSource}`);
    }
    this.#limits = { ...limits, maxWaiting: limits.maxWaiting ?? MAX_WAITING };
  }

  /** The limits in force. */
  get limits(): Required<AdmissionLimits> {
    return this.#limits;
  }

  /** Clients being served. */
  get active(): number {
    return this.#slots.active;
  }

  /** Clients waiting for a slot. */
  get waiting(): number {
    return this.#queue.length - this.#head;
  }

  /** Clients from `source` being served or waiting. */
  fromSource(source: string): number {
    return this.#bySource.get(source) ?? 0;
  }

  /**
   * Decides about a new client from `source` (null: not counted per source). When "waiting",
   * `item` is kept and handed back by {@link release} once the client has its slot.
   */
  request(source: string | null, item: T): Decision {
    const { perSource, whenFull, maxWaiting } = this.#limits;
    if (source !== null && perSource !== null && this.fromSource(source) >= perSource) {
      return "source";
    }
    let decision: Decision;
    if (this.#slots.tryAcquire()) {
      decision = "admitted";
    } else if (whenFull === "wait" && this.waiting < maxWaiting) {
      this.#queue.push({ item, source });
      decision = "waiting";
    } else {
      return "full";
    }
    if (source !== null) this.#bySource.set(source, this.fromSource(source) + 1);
    return decision;
  }

  /**
   * Frees the slot of a served client from `source`.
   * @returns the waiting client that now has the slot (already counted as served), or null.
   */
  release(source: string | null): T | null {
    if (this.#slots.active === 0) throw new Error("Admission released more often than admitted");
    this.#uncount(source);
    const next = this.#shift();
    if (next === null) this.#slots.release(); // Else the slot passes on to the next.
    return next?.item ?? null;
  }

  /** Removes every waiting client (at stop), in arrival order. */
  takeWaiting(): T[] {
    const taken: T[] = [];
    for (let next = this.#shift(); next !== null; next = this.#shift()) {
      this.#uncount(next.source);
      taken.push(next.item);
    }
    return taken;
  }

  #shift(): Waiting<T> | null {
    if (this.#head === this.#queue.length) return null;
    const next = this.#queue[this.#head++];
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return next;
  }

  #uncount(source: string | null): void {
    if (source === null) return;
    const count = this.fromSource(source);
    if (count <= 1) this.#bySource.delete(source);
    else this.#bySource.set(source, count - 1);
  }
}

/** The 8 groups of an IPv6 address in text form (no zone), or null when it is not one. */
export function ipv6Groups(text: string): number[] | null {
  if (!isIPv6(text)) return null;
  const bytes = parseIPv6(text);
  return Array.from({ length: 8 }, (_, i) => (bytes[2 * i] << 8) | bytes[2 * i + 1]);
}

/**
 * The source a client is counted under for `--connections-per-source`: an IPv4 address as it
 * is, an IPv6 address as its /64 network ("2001:db8:1:2::/64"), since one host is usually given
 * a whole /64 and can pick addresses in it at will (privacy addresses); an IPv4-mapped IPv6
 * address as the IPv4 address. Null (not counted) for a Unix client or an address that does not
 * parse.
 */
export function sourceOf(hostname: string | null): string | null {
  if (hostname === null) return null;
  const address = hostname.replace(/%.*$/, ""); // A zone (fe80::1%eth0) names no other host.
  if (!address.includes(":")) return address === "" ? null : address;
  const groups = ipv6Groups(address);
  if (groups === null) return null;
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.${groups[7] & 0xff}`;
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

/**
 * The connection limit (`--connections-max`): exact, unlike the reference's off-by-one.
 * @module
 */

/** The default of `--connections-max`, as in systemd-socket-proxyd. */
export const DEFAULT_CONNECTIONS_MAX = 256;

/** Counts open connections against a fixed maximum. */
export class ConnectionLimit {
  #active = 0;

  /** @param max the number of connections that may be open at once, at least 1. */
  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`Invalid connection limit ${max}`);
  }

  /** The number of connections holding a slot. */
  get active(): number {
    return this.#active;
  }

  /** Takes a slot if one is free. */
  tryAcquire(): boolean {
    if (this.#active >= this.max) return false;
    this.#active++;
    return true;
  }

  /** Frees a slot taken by {@link tryAcquire}. */
  release(): void {
    if (this.#active === 0) throw new Error("ConnectionLimit released more often than acquired");
    this.#active--;
  }
}

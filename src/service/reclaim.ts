/**
 * Memory given back once the proxy goes idle: one reclaim, a moment after the last connection
 * has closed, and nothing more until connections have come and gone again.
 *
 * Under load the process grows in two places (docs/benchmark.md, "Where the memory goes"): V8's
 * heap, and the C library's malloc arenas that the runtime's Rust side allocates sockets and
 * operations from. Left alone, V8 shrinks its heap after 10-20 s without allocations, but the
 * arenas keep their freed pages for good. A reclaim asks Deno to trim: with
 * `DENO_USR2_MEMORY_TRIM` set in its environment, Deno answers SIGUSR2 with glibc's
 * `malloc_trim(0)`, which hands the arenas' free pages back to the system, and a low-memory
 * notification to V8, which collects all of its heap at once (denoland/deno#29295, Linux only).
 * The program signals itself, which needs no permission; without that variable the signal only
 * reaches a listener of ours that does nothing, so it is never fatal.
 *
 * A full garbage collection of our own before the trim (V8's `gc()`, which `node:vm` and
 * `node:v8` give) added nothing the notification does not do, and loading those modules cost
 * start-up 3.5 MiB (A/B in docs/benchmark.md), so there is none.
 *
 * Datagram sessions count as connections: the proxy rests when neither is open (see
 * {@link ReclaimOptions.atRest}). Sessions also stay open while silent (until `--idle-timeout`),
 * so the relay tells of a rest of its own, {@link Reclaimer.rested}: open sessions that carried
 * no datagram for {@link REST_MS}, seen by the timer that ends silent sessions.
 *
 * The stream relay also keeps buffers for reuse (its shared buffer, spares for slow peers): it
 * lets go of them at each reclaim ({@link Reclaimer.willReclaim}), and a spare kept in its pool is
 * reason enough for the next one ({@link Reclaimer.held}). So a trickle of downloads to slow
 * clients costs a reclaim (20-30 ms of CPU) after each rest of a second or more, for up to 5 MiB
 * given back each time.
 *
 * No periodic work: the one timer is armed when the last connection closes and cleared when a
 * new one opens, and only when enough connections came since the last reclaim, or memory is held.
 * @module
 */
import { after, type Cancel } from "./timer.ts";
/** How long the proxy must stay without connections before memory is reclaimed. */
export const REST_MS = 1000;

/**
 * A reclaim is skipped unless at least this many connections were opened since the previous
 * one (unless a spare buffer was made, see {@link Reclaimer.held}): fewer hold little (about
 * 2.4 KiB each while open, so 100 are ~0.24 MiB), and a full collection of the idle heap takes
 * 20-30 ms here, too much to spend after every short pause of a trickle of connections.
 * Counting costs nothing per connection, unlike reading memory.
 */
export const MIN_CONNECTIONS = 100;

/** The environment variable that makes Deno trim memory on SIGUSR2. */
export const TRIM_VARIABLE = "DENO_USR2_MEMORY_TRIM";

/**
 * The step that has Deno trim memory (see the module doc): SIGUSR2 to ourselves. Call at
 * start-up: it registers the listener that keeps the signal from ending the process, and Deno
 * cannot register a signal listener while descriptors run short.
 */
export function trimStep(): () => void {
  Deno.addSignalListener("SIGUSR2", ignore);
  return () => Deno.kill(Deno.pid, "SIGUSR2");
}

function ignore(): void {}

/** What a {@link Reclaimer} needs; the defaults are the real ones, tests give their own. */
export interface ReclaimOptions {
  /** The steps of a reclaim, in order (the trim, see {@link trimStep}). */
  readonly steps: ReadonlyArray<() => void>;
  /** See {@link REST_MS}. */
  readonly restMs?: number;
  /** See {@link MIN_CONNECTIONS}. */
  readonly minConnections?: number;
  /**
   * Whether nothing at all is open, asked when one kind goes idle (stream connections, datagram
   * sessions), each of which calls {@link Reclaimer.busy} and {@link Reclaimer.idle} for its
   * own; by default always.
   */
  readonly atRest?: () => boolean;
  /** Arms the one timer; returns what {@link ReclaimOptions.cancel} takes. */
  readonly schedule?: (run: () => void, ms: number) => unknown;
  /** Clears the timer. */
  readonly cancel?: (timer: unknown) => void;
}

/** Runs the reclaim steps once per idle spell; see the module doc. */
export class Reclaimer {
  readonly #steps: ReadonlyArray<() => void>;
  readonly #restMs: number;
  readonly #minConnections: number;
  readonly #atRest: () => boolean;
  readonly #schedule: (run: () => void, ms: number) => unknown;
  readonly #cancel: (timer: unknown) => void;
  #timer: unknown;
  /** Connections opened since the last reclaim. */
  #opened = 0;
  /** Memory was taken since the last reclaim that only a reclaim gives back. */
  #holding = false;
  /** What lets go of memory kept for reuse, before the steps (see {@link willReclaim}). */
  readonly #releases: Array<() => void> = [];

  /** @param options the steps, and for tests the clock and the threshold. */
  constructor(options: ReclaimOptions) {
    this.#steps = options.steps;
    this.#restMs = options.restMs ?? REST_MS;
    this.#minConnections = options.minConnections ?? MIN_CONNECTIONS;
    this.#atRest = options.atRest ?? (() => true);
    this.#schedule = options.schedule ?? ((run, ms) => after(ms, run));
    this.#cancel = options.cancel ?? ((cancel) => (cancel as Cancel)());
  }

  /** A connection or a datagram session opened: no reclaim while it lasts. */
  busy(): void {
    this.#opened++;
    this.#disarm();
  }

  /**
   * Memory was taken that only a reclaim gives back (a buffer for bytes a slow peer had not
   * taken yet): the next rest reclaims however few connections came.
   */
  held(): void {
    this.#holding = true;
  }

  /**
   * Calls `release` at each reclaim, before the steps: it lets go of what is kept for reuse
   * (spare buffers), so that the collection the trim asks for frees it.
   */
  willReclaim(release: () => void): void {
    this.#releases.push(release);
  }

  /**
   * The last connection (or session) closed: reclaim once the proxy has rested, unless
   * something else is still open, it is busy again, or too few came since the last reclaim
   * (and no memory is {@link held}).
   */
  idle(): void {
    this.#disarm();
    if (!this.#due()) return;
    if (!this.#atRest()) return;
    this.#timer = this.#schedule(() => {
      this.#timer = undefined;
      this.#reclaim();
    }, this.#restMs);
  }

  /**
   * Open datagram sessions have carried nothing for {@link REST_MS} (the relay's clock): reclaim
   * now, unless too few connections or sessions came since the last reclaim (and no memory is
   * {@link held}).
   */
  rested(): void {
    if (!this.#due()) return;
    this.#disarm();
    this.#reclaim();
  }

  /** Whether enough came since the last reclaim for another to be worth its cost. */
  #due(): boolean {
    return this.#steps.length > 0 && (this.#holding || this.#opened >= this.#minConnections);
  }

  #reclaim(): void {
    this.#opened = 0;
    this.#holding = false;
    for (const release of this.#releases) release();
    for (const step of this.#steps) step();
  }

  #disarm(): void {
    if (this.#timer === undefined) return;
    this.#cancel(this.#timer);
    this.#timer = undefined;
  }
}

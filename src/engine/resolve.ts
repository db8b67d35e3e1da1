/**
 * Name lookups for targets given by host name: the system's resolver (getaddrinfo: /etc/hosts,
 * DNS, ...), shared by the stream and datagram sides of the engine.
 *
 * getaddrinfo blocks, so Deno runs each lookup on a thread of its blocking pool, which has 32
 * threads, and the relay's wait for its sockets (a nonblocking FFI `epoll_wait`) runs on the
 * same pool. Measured on Deno 2.9.6 with a DNS server that never answers: with 31 lookups
 * pending a 1 ms nonblocking FFI call took 2-3 ms; with 32 or 40 it took 29.7 s, until the
 * first lookup timed out. So before lookups reach the pool, {@link SharedResolver}
 * - runs at most one lookup per name, whose result everyone who asks meanwhile shares;
 * - runs at most {@link MAX_CONCURRENT_LOOKUPS} at once (the pool keeps 28 threads for the
 *   rest), queueing further names in arrival order;
 * - keeps each result for a moment ({@link ANSWER_CACHE_MS}, a failure
 *   {@link FAILURE_CACHE_MS}), so a burst of clients costs one lookup, while a change of the
 *   name's addresses is still seen within seconds (the reference resolves for every
 *   connection).
 * @module
 */
/** Resolves a host name to its addresses, in the order they should be tried. */
export type Resolver = (host: string) => Promise<string[]>;

/** Lookups running at once, at most: well below the 32 threads of Deno's blocking pool. */
export const MAX_CONCURRENT_LOOKUPS = 4;

/** How long the addresses a lookup found are used for further asks of the same name. */
export const ANSWER_CACHE_MS = 5000;

/** How long a failed lookup's error is given to further asks, before the name is tried again. */
export const FAILURE_CACHE_MS = 1000;

/** Names remembered at most; older results are forgotten first beyond it. */
const CACHE_MAX = 256;

/** What a {@link SharedResolver} needs; the defaults are the real ones, tests give their own. */
export interface SharedResolverOptions {
  /** One lookup, by getaddrinfo by default. */
  readonly lookup?: Resolver;
  /** See {@link MAX_CONCURRENT_LOOKUPS}. */
  readonly maxConcurrent?: number;
  /** See {@link ANSWER_CACHE_MS}. */
  readonly answerCacheMs?: number;
  /** See {@link FAILURE_CACHE_MS}. */
  readonly failureCacheMs?: number;
  /** The clock, in milliseconds. */
  readonly now?: () => number;
}

/** A result kept for a while: the addresses, or the error, and until when. */
interface Kept {
  readonly until: number;
  readonly addresses?: string[];
  readonly error?: unknown;
}

/** Lookups shared, bounded and briefly kept; see the module doc. */
export class SharedResolver {
  readonly #lookup: Resolver;
  readonly #max: number;
  readonly #answerMs: number;
  readonly #failureMs: number;
  readonly #now: () => number;
  readonly #pending = new Map<string, Promise<string[]>>();
  readonly #kept = new Map<string, Kept>();
  /** Lookups waiting for one of the {@link MAX_CONCURRENT_LOOKUPS} places, in order. */
  readonly #queue: Array<() => void> = [];
  #running = 0;

  constructor(options: SharedResolverOptions = {}) {
    this.#lookup = options.lookup ?? systemLookup;
    this.#max = options.maxConcurrent ?? MAX_CONCURRENT_LOOKUPS;
    this.#answerMs = options.answerCacheMs ?? ANSWER_CACHE_MS;
    this.#failureMs = options.failureCacheMs ?? FAILURE_CACHE_MS;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Lookups running now. */
  get running(): number {
    return this.#running;
  }

  /** Lookups waiting for a place. */
  get queued(): number {
    return this.#queue.length;
  }

  /** The addresses of `host`: kept, being looked up, or looked up now. */
  resolve(host: string): Promise<string[]> {
    const kept = this.#kept.get(host);
    if (kept !== undefined && kept.until > this.#now()) {
      return kept.addresses !== undefined
        ? Promise.resolve([...kept.addresses])
        : Promise.reject(kept.error);
    }
    let pending = this.#pending.get(host);
    if (pending === undefined) {
      pending = this.#run(host);
      this.#pending.set(host, pending);
    }
    return pending.then((addresses) => [...addresses]);
  }

  async #run(host: string): Promise<string[]> {
    if (this.#running >= this.#max) {
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    } else this.#running++;
    try {
      const addresses = await this.#lookup(host);
      this.#keep(host, { until: this.#now() + this.#answerMs, addresses });
      return addresses;
    } catch (error) {
      this.#keep(host, { until: this.#now() + this.#failureMs, error });
      throw error;
    } finally {
      this.#pending.delete(host);
      // The place passes on to the next in line, or is given back.
      const next = this.#queue.shift();
      if (next !== undefined) next();
      else this.#running--;
    }
  }

  #keep(host: string, kept: Kept): void {
    this.#kept.delete(host);
    if (this.#kept.size >= CACHE_MAX) this.#kept.delete(this.#kept.keys().next().value!);
    this.#kept.set(host, kept);
  }
}

/**
 * One getaddrinfo call, through Deno's `node:dns`, loaded at the first lookup: it starts Deno's
 * Node compatibility layer, which costs start-up 30-55 ms and 1.5 MiB, never paid by a proxy
 * whose targets are all addresses.
 */
async function systemLookup(host: string): Promise<string[]> {
  const { lookup } = await import("node:dns/promises");
  return (await lookup(host, { all: true, verbatim: true })).map(({ address }) => address);
}

/** The process's one {@link SharedResolver}: every dial and session by name goes through it. */
const shared = new SharedResolver();

/** Resolves with the system's resolver, through the process's shared, bounded lookups. */
export function systemResolver(host: string): Promise<string[]> {
  return shared.resolve(host);
}

/**
 * The stress run's plan (tests/faults/stress_test.ts): from one seed, every connection's
 * behaviour, route, sizes and timings, and how many run at once. Pure: the same seed plans the
 * same run, so a failure can be replayed (the interleaving of concurrent connections is the
 * machine's, not the plan's).
 * @module
 */

/** A seeded pseudo-random stream (mulberry32): fast, 32 bits of state, good enough for tests. */
export class Random {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [low, high]. */
  between(low: number, high: number): number {
    return low + this.below(high - low + 1);
  }

  /** An integer in [low, high], uniform in its logarithm (as many 1–10 as 1,000–10,000). */
  logBetween(low: number, high: number): number {
    const value = Math.exp(Math.log(low) + this.next() * (Math.log(high + 1) - Math.log(low)));
    return Math.min(high, Math.floor(value));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One of `weights`' keys, with probability proportional to its weight. */
  pick<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as Array<[K, number]>;
    let left = this.next() * entries.reduce((sum, [, w]) => sum + w, 0);
    for (const [key, weight] of entries) {
      left -= weight;
      if (left < 0) return key;
    }
    return entries[entries.length - 1][0];
  }

  /** A new stream seeded from this one. */
  fork(): Random {
    return new Random(Math.floor(this.next() * 4294967296));
  }
}

/** What a connection does. */
export type Behaviour =
  /** Both sides send at once, then half-close. */
  | "duplex"
  /** The client sends and half-closes; the backend answers only after that end of stream. */
  | "client-fin-first"
  /** The backend sends and half-closes first; the client sends only after that. */
  | "backend-fin-first"
  /** Nothing either way; one side or both half-close first. */
  | "empty"
  /** Megabytes each way at once. */
  | "bulk"
  /** One side reads in small pieces with pauses and a stall, while the other sends. */
  | "slow-reader"
  /** One side resets (RST) mid-transfer. */
  | "reset"
  /** The client is gone before the proxy's connect to a backend that starts late completes. */
  | "early-gone";

/** Shares of the behaviours in a run. */
export const BEHAVIOUR_WEIGHTS: Readonly<Record<Behaviour, number>> = {
  "duplex": 24,
  "client-fin-first": 12,
  "backend-fin-first": 12,
  "empty": 12,
  "bulk": 3,
  "slow-reader": 8,
  "reset": 24,
  "early-gone": 5,
};

/** Every behaviour, in the order summaries list them. */
export const BEHAVIOURS = Object.keys(BEHAVIOUR_WEIGHTS) as Behaviour[];

/**
 * Which passed socket the client connects to, and so which backend its connection reaches:
 * IPv4 to a TCP backend, IPv6 (::1) to a TCP backend on ::1, IPv4 to a Unix-socket backend;
 * for "early-gone", IPv4 to the late TCP or the late Unix-socket backend.
 */
export type Route = "v4" | "v6" | "unix" | "late-tcp" | "late-unix";

const MAIN_ROUTES: Readonly<Record<"v4" | "v6" | "unix", number>> = { v4: 45, v6: 25, unix: 30 };

/** Slow reading: pieces of 1..`piece` bytes, pauses of 0..`pauseMs`, one stall. */
export interface SlowReading {
  readonly piece: number;
  readonly pauseMs: number;
  /** After this many bytes, the reader stops for `stallMs`. */
  readonly stallAt: number;
  readonly stallMs: number;
}

/** What one side of a connection (the client, or the test's backend) does. */
export interface SideScript {
  /** Where its payload starts in the run's block of random bytes... */
  readonly offset: number;
  /** ...and how long it is. */
  readonly length: number;
  /** Each write takes 1..maxChunk bytes. */
  readonly maxChunk: number;
  /** It sends only after the peer's end of stream. */
  readonly afterPeerEnd: boolean;
  /** It reads slowly, or at once. */
  readonly slow: SlowReading | null;
  /** It resets (RST; a Unix socket closes with data unread) once it has sent this much. */
  readonly resetAfter: number | null;
  /** "early-gone" clients: how long they stay before they leave. */
  readonly leaveAfterMs: number;
  /** The seed of its own random stream (write sizes, pauses). */
  readonly seed: number;
}

/** One planned connection. */
export interface ConnectionPlan {
  readonly id: number;
  readonly behaviour: Behaviour;
  readonly route: Route;
  readonly client: SideScript;
  readonly backend: SideScript;
}

/** The size of the block of random bytes that payloads are slices of. */
export const BLOCK_SIZE = 16 * 1024 * 1024;

const KIB = 1024;
const MIB = 1024 * 1024;

function side(random: Random, length: number, changes: Partial<SideScript> = {}): SideScript {
  // At most about a thousand writes per payload: tiny writes on small payloads only.
  const floor = Math.max(1, Math.ceil(length / 1024));
  return {
    offset: random.below(BLOCK_SIZE - length + 1),
    length,
    maxChunk: random.logBetween(floor, Math.max(floor, Math.min(length, MIB))),
    afterPeerEnd: false,
    slow: null,
    resetAfter: null,
    leaveAfterMs: 0,
    seed: random.below(4294967296),
    ...changes,
  };
}

/** A small payload: nothing one time in ten, else 1 byte to 256 KiB. */
function small(random: Random): number {
  return random.chance(0.1) ? 0 : random.logBetween(1, 256 * KIB);
}

/** Slow reading of `expected` bytes: at most about 250 pieces and a stall, about a second. */
function slowReading(random: Random, expected: number): SlowReading {
  return {
    piece: random.logBetween(Math.max(16, Math.ceil(expected / 128)), 64 * KIB),
    pauseMs: random.between(0, 3),
    stallAt: random.below(expected + 1),
    stallMs: random.between(100, 1000),
  };
}

type Sides = [client: SideScript, backend: SideScript];

/** Each behaviour's sides. */
const PLANNERS: Readonly<Record<Behaviour, (random: Random) => Sides>> = {
  "duplex": (r) => [side(r, small(r)), side(r, small(r))],
  "client-fin-first": (r) => [side(r, small(r)), side(r, small(r), { afterPeerEnd: true })],
  "backend-fin-first": (r) => [side(r, small(r), { afterPeerEnd: true }), side(r, small(r))],
  "empty": (r) => {
    const first = r.pick({ both: 1, client: 1, backend: 1 });
    return [
      side(r, 0, { afterPeerEnd: first === "backend" }),
      side(r, 0, { afterPeerEnd: first === "client" }),
    ];
  },
  "bulk": (r) => [side(r, r.logBetween(MIB, 8 * MIB)), side(r, r.logBetween(MIB, 8 * MIB))],
  "slow-reader": (r) => {
    const sent = r.logBetween(64 * KIB, 2 * MIB);
    const slowClient = r.chance(0.5);
    const fast = side(r, sent);
    const slow = side(r, small(r), { slow: slowReading(r, sent) });
    return slowClient ? [slow, fast] : [fast, slow];
  },
  "reset": (r) => {
    const sizes = [r.logBetween(16 * KIB, 4 * MIB), r.logBetween(16 * KIB, 4 * MIB)];
    const resetter = r.below(2);
    const sides = sizes.map((length, i) =>
      side(r, length, i === resetter ? { resetAfter: r.below(length + 1) } : {})
    );
    return sides as Sides;
  },
  "early-gone": (r) => {
    const sent = r.chance(0.2) ? 0 : r.logBetween(1, 64 * KIB);
    const client = side(r, sent, {
      resetAfter: r.chance(0.5) ? sent : null,
      leaveAfterMs: r.between(0, 20),
    });
    return [client, side(r, small(r), { afterPeerEnd: true })];
  },
};

/** Plans `count` connections from `seed`. */
export function planConnections(seed: number, count: number): ConnectionPlan[] {
  const random = new Random(seed);
  return Array.from({ length: count }, (_, id) => {
    const behaviour = random.pick(BEHAVIOUR_WEIGHTS);
    const route: Route = behaviour === "early-gone"
      ? (random.chance(0.5) ? "late-tcp" : "late-unix")
      : random.pick(MAIN_ROUTES);
    const [client, backend] = PLANNERS[behaviour](random.fork());
    return { id, behaviour, route, client, backend };
  });
}

/** A stretch of the run with its own number of connections at once. */
export interface Phase {
  readonly connections: number;
  readonly concurrency: number;
}

/**
 * The phases of the main lane, `count` connections in all: 1 to `maxConcurrency` at once, each
 * phase 8 to 32 times as many connections as it runs at once (so a phase of one at a time is
 * short).
 */
export function planPhases(seed: number, count: number, maxConcurrency: number): Phase[] {
  const random = new Random(seed ^ 0x5bd1e995);
  const phases: Phase[] = [];
  for (let left = count; left > 0;) {
    const concurrency = random.logBetween(1, maxConcurrency);
    const connections = Math.min(left, Math.max(16, concurrency * random.between(8, 32)));
    phases.push({ connections, concurrency });
    left -= connections;
  }
  return phases;
}

/** The late lane's episodes: groups of 1 to 10 clients, and the backends' delay after each. */
export interface Episode {
  readonly plans: readonly ConnectionPlan[];
  /**
   * How long after the proxy has taken the last client the late backends start listening: up
   * to 1.2 s, so that under `--connect-timeout=1s` some connects complete and some give up.
   */
  readonly backendDelayMs: number;
}

/** Groups the "early-gone" plans into episodes. */
export function planEpisodes(seed: number, plans: readonly ConnectionPlan[]): Episode[] {
  const random = new Random(seed ^ 0x27d4eb2f);
  const episodes: Episode[] = [];
  for (let at = 0; at < plans.length;) {
    const size = random.between(1, 10);
    episodes.push({ plans: plans.slice(at, at + size), backendDelayMs: random.between(0, 1200) });
    at += size;
  }
  return episodes;
}

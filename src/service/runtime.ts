/**
 * The Deno we run on: the oldest release that serves the sockets a service manager passes in, and
 * what to say when the one running is older, or lacks private APIs that the program uses when
 * they are there. Pure: the version and what is missing are given.
 *
 * The floor was measured by running the program under every minor release from 2.0 to 2.9
 * (README, "Run from a URL"): before 2.7.12 `node:net` cannot adopt a file descriptor at all;
 * 2.7.12 to 2.7.14 "adopt" a TCP socket by opening a listener of their own on a random port and
 * never serve the passed one; 2.8.0 to 2.8.2 cannot adopt Unix sockets, nor send sd_notify
 * datagrams from an abstract socket; 2.8.3 serves both, but a client that resets its connection
 * goes unnoticed (on either data path), so its backend connection stays open. 2.9.0 passes
 * everything.
 * @module
 */

/** The oldest Deno the program works on. */
export const DENO_FLOOR = "2.9.0";

/**
 * Parses "MAJOR.MINOR.PATCH" (a pre-release or build suffix is ignored).
 * @returns null when `version` does not start that way.
 */
export function parseVersion(version: string): [number, number, number] | null {
  const match = /^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$/.exec(version);
  return match === null ? null : [Number(match[1]), Number(match[2]), Number(match[3])];
}

/** Whether `version` is older than `floor`; an unparsable version counts as new enough. */
export function isBelow(version: string, floor: string = DENO_FLOOR): boolean {
  const running = parseVersion(version);
  const least = parseVersion(floor)!;
  if (running === null) return false;
  for (let i = 0; i < 3; i++) {
    if (running[i] !== least[i]) return running[i] < least[i];
  }
  return false;
}

/** What to say to refuse a Deno older than the floor; null when `version` is recent enough. */
export function floorProblem(version: string): string | null {
  if (!isBelow(version)) return null;
  return `This is Deno ${version}; socket-proxyd needs Deno ${DENO_FLOOR} or later, the first ` +
    "whose node:net serves the sockets a service manager passes in (older ones cannot adopt " +
    "them, or adopt them without serving them). Upgrade Deno (deno upgrade), or install the " +
    "socket-proxyd package, which brings its own.";
}

/** Private APIs this Deno lacks, by what they are for. */
export interface Missing {
  /** For the fast data path of TCP clients (see `fastpath.ts`). */
  readonly fastPath: readonly string[];
  /** For getting listeners going again after running out of file descriptors (`rearm.ts`). */
  readonly recovery: readonly string[];
}

/** The one start-up line about missing private APIs; null when nothing is missing. */
export function missingNotice(version: string, missing: Missing): string | null {
  const fastPath = [...new Set(missing.fastPath)];
  const recovery = [...new Set(missing.recovery)];
  if (fastPath.length === 0 && recovery.length === 0) return null;
  const consequences = [];
  if (fastPath.length > 0) {
    consequences.push(
      `without ${fastPath.join(" and ")}, TCP clients take the portable data path (slower)`,
    );
  }
  if (recovery.length > 0) {
    consequences.push(
      `without ${recovery.join(" and ")}, a listener that runs out of file descriptors may ` +
        "stop accepting until a restart (keep LimitNOFILE= above twice --connections-max)",
    );
  }
  return `This Deno (${version}) lacks private APIs that socket-proxyd uses when it can: ` +
    `${consequences.join("; ")}. Forwarding is not affected otherwise.`;
}

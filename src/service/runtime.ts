/**
 * The Deno we run on: the oldest release the program is tested on, and what to say when the one
 * running is older. Pure: the version is given.
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

/**
 * The Deno we run on: the oldest release the program is tested on, and what to say when the one
 * running is older. Pure: the version is given.
 *
 * The floor was measured with the integration tests run on the bundle under each Deno
 * (`deno task matrix`, with the floor lowered to let them run): the last patch of every minor
 * release from 2.0 to 2.8, 2.8.2, 2.9.0 and 2.9.6; each failure was then reproduced on its own
 * across the patch releases. Since the engine drives every socket through libc, how Deno adopts
 * sockets no longer matters (the old floor's reason); what breaks is elsewhere:
 * - before 2.9.0 a program may not signal itself without `--allow-run` (denoland/deno#34382
 *   lifted that): the proxy does, to have Deno trim memory once idle (`reclaim.ts`), and on
 *   2.8.3 it died of it ("Uncaught NotCapable: Requires run access"), a second after its first
 *   100 connections had all closed;
 * - before 2.8.3 Deno's Unix datagram sockets take no abstract address (denoland/deno#31660):
 *   the sender of sd_notify and journal messages is one, so none is sent, even to
 *   /run/systemd/notify, and a `Type=notify` unit never becomes ready;
 * - before 2.5.4 `node:fs` says a socket is not one, so a connection on standard input (inetd
 *   style, `Accept=yes`) goes unrecognised: "Didn't get any sockets passed in", exit 1.
 * 2.9.0 passes everything.
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
    "that lets a program signal itself, as the proxy does to give memory back when idle (older " +
    "ones end it there for want of --allow-run, and before 2.8.3 it cannot notify the service " +
    "manager either). Upgrade Deno (deno upgrade), or install the socket-proxyd package, which " +
    "brings its own.";
}

/**
 * The program's version: a constant rather than an import of deno.json, so that the program runs
 * from a URL or as one bundled file without its configuration. `tests/readme_test.ts` keeps it
 * equal to deno.json's "version".
 * @module
 */

/** The package version. */
export const VERSION = "0.1.0";

/**
 * The name the process shows in `systemctl status` ("Main PID: 1234 (socket-proxyd)"), `ps -e`
 * and `top`, in place of "deno" (see `engine/libc.ts`, `nameProcess`).
 */
export const PROCESS_NAME = "socket-proxyd";

/**
 * socket-proxyd: a socket-activated proxy, compatible with systemd-socket-proxyd(8).
 * @module
 */
import process from "node:process";
import { run } from "./src/service/app.ts";

/**
 * The name the process shows in `ps` and `systemctl status` ("Main PID: 1234 (socket-proxyd)"),
 * in place of Deno's command line, which the permission flags make some 600 characters long.
 * Node's `process.title` overwrites the command line in place and sets the kernel's name for the
 * process (comm); it needs no permission.
 */
export const PROCESS_NAME = "socket-proxyd";

if (import.meta.main) {
  process.title = PROCESS_NAME;
  Deno.exit(await run(Deno.args));
}

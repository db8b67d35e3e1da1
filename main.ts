/**
 * socket-proxyd: a socket-activated proxy, compatible with systemd-socket-proxyd(8).
 * @module
 */
import { run } from "./src/service/app.ts";

if (import.meta.main) Deno.exit(await run(Deno.args));

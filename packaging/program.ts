/**
 * The entry of the one-file build (`deno task bundle`, see bundle.ts): main.ts without its
 * `import.meta.main` test, which only a module can make. The build always runs the program, and
 * is never imported.
 * @module
 */
import { run } from "../src/service/app.ts";

Deno.exit(await run(Deno.args));

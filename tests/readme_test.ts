/** The README's deployment flags and HELP must match what the program really uses. */
import { deepEqual, ok } from "node:assert/strict";
import { HELP } from "../src/cli.ts";

const root = new URL("../", import.meta.url);
const readme = Deno.readTextFileSync(new URL("README.md", root));
const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", root)));

Deno.test("the README's wrapper grants exactly the deno.json permission set", () => {
  const wrapper = readme.slice(readme.indexOf("exec deno run"), readme.indexOf('main.ts "$@"'));
  const flag = (name: string) =>
    wrapper.match(new RegExp(`--${name}=(\\S+)`))?.[1].split(",") ?? [];
  const set = config.permissions.proxy;
  deepEqual(flag("allow-env").sort(), [...set.env].sort());
  deepEqual(flag("allow-write").sort(), [...set.write].sort());
  ok(wrapper.includes("--allow-net "), "network");
  for (const unstable of config.unstable) ok(wrapper.includes(`--unstable-${unstable}`), unstable);
  ok(!/--allow-(read|run|ffi|sys|all)|-A\b/.test(wrapper), "nothing more");
});

Deno.test("every option in --help is documented in the README", () => {
  const options = [...HELP.matchAll(/--([a-z-]+)/g)].map((m) => m[1]);
  ok(options.length >= 10);
  for (const option of new Set(options)) ok(readme.includes(`--${option}`), option);
});

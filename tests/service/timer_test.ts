import { equal, ok } from "node:assert/strict";
import { after, every } from "../../src/service/timer.ts";
import { sourceFiles } from "../sources.ts";

Deno.test("after: runs once, not before its time; a cancelled one never runs", async () => {
  const started = performance.now();
  const ran = await new Promise<number>((resolve) => after(30, () => resolve(performance.now())));
  ok(ran - started >= 29, `ran after ${ran - started} ms`);
  let cancelledRan = false;
  const cancel = after(10, () => cancelledRan = true);
  cancel();
  await new Promise((resolve) => after(30, () => resolve(null)));
  equal(cancelledRan, false);
});

Deno.test("every: runs again and again until cancelled, then never more", async () => {
  let runs = 0;
  const three = Promise.withResolvers<void>();
  const cancel = every(5, () => {
    if (++runs === 3) three.resolve();
  });
  await three.promise;
  cancel();
  const at = runs;
  await new Promise((resolve) => after(40, () => resolve(null)));
  equal(runs, at);
});

Deno.test("the program arms no setTimeout or setInterval (they start Deno's Node layer): timer.ts only", () => {
  const root = new URL("../../src", import.meta.url).pathname;
  for (const file of sourceFiles(root)) {
    const code = Deno.readTextFileSync(file).replace(/^\s*(\/\/|\*|\/\*\*).*$/gm, "");
    const found = /\b(setTimeout|setInterval|unrefTimer)\b/.exec(code);
    equal(found, null, `${file} uses ${found?.[0]}`);
  }
});

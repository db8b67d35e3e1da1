import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import { checkTargets, floorNote, markdown, METRICS, summarize } from "../../bench/lib/report.ts";
import { chart } from "../../bench/lib/svg.ts";

Deno.test("the targets are issue 23's", () => {
  const targets = Object.fromEntries(
    METRICS.filter((m) => m.targets.length > 0).map((m) => [m.id, m.targets]),
  );
  assertEquals(targets, {
    bulk_fwd_gbps: [{ kind: "vsReference", min: 1.2 }, { kind: "vsDirect", min: 0.75 }],
    bulk_rev_gbps: [{ kind: "vsReference", min: 1.2 }, { kind: "vsDirect", min: 0.75 }],
    connrate_rps: [{ kind: "vsReference", min: 1.5 }],
    keepalive_rps: [{ kind: "vsReference", min: 1.8 }],
    idle_kib_per_conn: [{ kind: "absolute", max: 3 }],
    idle_base_mib: [{ kind: "absolute", max: 40 }],
    idle_base_anon_mib: [{ kind: "absolute", max: 10 }],
    idle_after5_growth_mib: [{ kind: "absolute", max: 5 }],
    coldstart_ms: [{ kind: "vsReference", max: 3 }],
  });
  const shown = (id: string) => METRICS.find((m) => m.id === id)?.table;
  assert(shown("cpu_s_per_gib") && shown("connrate_cpu_us_per_req"), "CPU rows are in the table");
});

Deno.test("cold start is a ratio to the reference: at most 3×", () => {
  const met = (ours: number) =>
    checkTargets(summarize({ coldstart_ms: { ours: [ours], reference: [20] } }))[0];
  assertEquals(met(59.8).met, true);
  assertEquals(met(60.2).met, false);
  assertEquals(met(59.8).description, "Cold start to first byte: ≤3× ref");
  assertEquals(checkTargets(summarize({ coldstart_ms: { ours: [30] } }))[0].met, null);
});

Deno.test("the baseline gets an ours/baseline column, and the floor a column of its own", () => {
  const samples = {
    connrate_rps: { direct: [900], ours: [600, 660, 630], baseline: [300], reference: [400] },
    idle_base_anon_mib: { ours: [12], baseline: [18], "deno-floor": [9.5], reference: [0.9] },
  };
  const summaries = summarize(samples);
  assertEquals(summaries[0].vsBaseline, 2.1);
  const targets = checkTargets(summaries);
  assertEquals(targets.map((t) => t.met), [true, false]);
  const contenders = ["direct", "ours", "baseline", "deno-floor", "reference"] as const;
  const table = markdown(summaries, targets, contenders).split("\n");
  assertEquals(
    table[0],
    "| Metric | Unit | direct | ours | baseline | deno-floor | reference | ours/ref | " +
      "ours/baseline | ours/direct | Target | Met |",
  );
  assertEquals(
    table[3],
    "| Proxy anonymous memory at start-up | MiB | – | 12.0 | 18.0 | 9.5 | 0.9 | 13.33× | " +
      "0.67× | – | ≤10 MiB | ❌ |",
  );
  const without = markdown(summaries, targets, ["direct", "ours", "reference"]);
  assert(!without.includes("baseline"));
  assert(chart(summaries, targets, "test").includes("ours / baseline"));
  assert(
    !chart(summarize({ connrate_rps: { ours: [1], reference: [1] } }), [], "t")
      .includes("baseline"),
  );
});

Deno.test("the floor's note tells how far ours is above it, and is empty without it", () => {
  const note = floorNote(summarize({
    coldstart_ms: { ours: [52.5], "deno-floor": [40], reference: [15] },
    idle_base_mib: { ours: [38], "deno-floor": [36.9] },
    idle_base_anon_mib: { ours: [9], "deno-floor": [9.6] },
  }));
  assert(note.includes("cold start to first byte +12.5 ms (ours 52.5, floor 40.0)"), note);
  assert(note.includes("RSS at start-up +1.1 MiB (ours 38.0, floor 36.9)"), note);
  assert(note.includes("anonymous memory at start-up −0.6 MiB (ours 9.0, floor 9.6)"), note);
  assertEquals(floorNote(summarize({ coldstart_ms: { ours: [52], reference: [15] } })), "");
});

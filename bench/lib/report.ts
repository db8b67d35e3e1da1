/**
 * Metrics, targets, medians and ratios, and the Markdown table.
 * @module
 */
import type { ContenderId } from "./services.ts";

/** A target for the contender "ours". */
export type Target =
  | { readonly kind: "vsReference"; readonly min?: number; readonly max?: number }
  | { readonly kind: "vsDirect"; readonly min: number }
  | { readonly kind: "absolute"; readonly max: number };

/** One reported quantity. */
export interface Metric {
  readonly id: string;
  readonly label: string;
  readonly unit: string;
  readonly better: "higher" | "lower";
  readonly digits: number;
  readonly targets: readonly Target[];
  /** Shown in the table (the others are kept in the JSON only). */
  readonly table: boolean;
  /** Drawn in the chart of ratios. */
  readonly chart: boolean;
}

const m = (
  id: string,
  label: string,
  unit: string,
  better: "higher" | "lower",
  digits: number,
  targets: Target[] = [],
  table = true,
  chart = table,
): Metric => ({ id, label, unit, better, digits, targets, table, chart });

/** Every metric, in report order; the targets are issue 23's. */
export const METRICS: readonly Metric[] = [
  m("bulk_fwd_gbps", "Bulk client→backend", "Gbit/s", "higher", 2, [
    { kind: "vsReference", min: 1.2 },
    { kind: "vsDirect", min: 0.75 },
  ]),
  m("bulk_rev_gbps", "Bulk backend→client (-R)", "Gbit/s", "higher", 2, [
    { kind: "vsReference", min: 1.2 },
    { kind: "vsDirect", min: 0.75 },
  ]),
  m("connrate_rps", "New connections (Connection: close)", "req/s", "higher", 0, [
    { kind: "vsReference", min: 1.5 },
  ]),
  m("connrate_p50_ms", "New connections p50 latency", "ms", "lower", 2),
  m("connrate_p99_ms", "New connections p99 latency", "ms", "lower", 2),
  m("keepalive_rps", "Keep-alive requests", "req/s", "higher", 0, [
    { kind: "vsReference", min: 1.8 },
  ]),
  m("keepalive_p50_ms", "Keep-alive p50 latency", "ms", "lower", 2),
  m("keepalive_p99_ms", "Keep-alive p99 latency", "ms", "lower", 2),
  m("idle_kib_per_conn", "Memory per held connection", "KiB", "lower", 1, [
    { kind: "absolute", max: 3 },
  ]),
  m("idle_connections_held", "Connections held (fd limit)", "", "higher", 0, [], true, false),
  m("idle_fds_per_conn", "Proxy fds per connection", "", "lower", 1, [], false),
  m("idle_base_mib", "Proxy RSS at start-up", "MiB", "lower", 1, [{ kind: "absolute", max: 40 }]),
  m("idle_base_anon_mib", "Proxy anonymous memory at start-up", "MiB", "lower", 1, [
    { kind: "absolute", max: 10 },
  ]),
  m("idle_base_private_mib", "Proxy private memory at start-up", "MiB", "lower", 1, [], false),
  m("idle_total_mib", "Proxy RSS while holding", "MiB", "lower", 1),
  m("idle_after5_mib", "Proxy RSS 5 s after the load", "MiB", "lower", 1),
  m(
    "idle_after5_growth_mib",
    "RSS 5 s after the load, above start-up",
    "MiB",
    "lower",
    1,
    [
      { kind: "absolute", max: 5 },
    ],
    true,
    false,
  ),
  m(
    "idle_after5_anon_growth_mib",
    "Anonymous memory 5 s after the load, above start-up",
    "MiB",
    "lower",
    1,
    [],
    true,
    false,
  ),
  m(
    "idle_after5_anon_mib",
    "Proxy anonymous memory 5 s after the load",
    "MiB",
    "lower",
    1,
    [],
    false,
  ),
  m("idle_after_mib", "Proxy RSS 30 s after the load", "MiB", "lower", 1, [], false),
  m(
    "idle_after_growth_mib",
    "RSS 30 s after the load, above start-up",
    "MiB",
    "lower",
    1,
    [],
    false,
  ),
  m("coldstart_ms", "Cold start to first byte", "ms", "lower", 1, [
    { kind: "vsReference", max: 3 },
  ]),
  m("cpu_s_per_gib", "Proxy CPU per GiB forwarded", "s/GiB", "lower", 3),
  m("cpu_fwd_s_per_gib", "Proxy CPU per GiB, client→backend", "s/GiB", "lower", 3, [], false),
  m("cpu_rev_s_per_gib", "Proxy CPU per GiB, backend→client", "s/GiB", "lower", 3, [], false),
  m("connrate_cpu_us_per_req", "Proxy CPU per new connection", "µs", "lower", 1),
  m("keepalive_cpu_us_per_req", "Proxy CPU per keep-alive request", "µs", "lower", 1, [], false),
  m("connrate_errors", "wrk errors, new connections", "", "lower", 0, [], false),
  m("keepalive_errors", "wrk errors, keep-alive", "", "lower", 0, [], false),
];

/** The median of `xs` (NaN when empty). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** All samples: metric id → contender → values. */
export type AllSamples = Record<string, Partial<Record<ContenderId, number[]>>>;

/** A target checked against the medians. */
export interface TargetResult {
  readonly metric: string;
  readonly description: string;
  /** The compared value: a ratio, or the absolute median. */
  readonly value: number;
  readonly met: boolean | null;
}

/** Per metric: medians by contender and ratios of ours to the reference, baseline and direct. */
export interface Summary {
  readonly metric: Metric;
  readonly medians: Partial<Record<ContenderId, number>>;
  readonly min: Partial<Record<ContenderId, number>>;
  readonly max: Partial<Record<ContenderId, number>>;
  readonly count: Partial<Record<ContenderId, number>>;
  /** ours / reference (NaN if either is missing). */
  readonly vsReference: number;
  /** ours / baseline: the A/B of two bundles (NaN without a baseline). */
  readonly vsBaseline: number;
  /** ours / direct. */
  readonly vsDirect: number;
}

/** Medians and ratios for every metric that has samples. */
export function summarize(all: AllSamples): Summary[] {
  const out: Summary[] = [];
  for (const metric of METRICS) {
    const by = all[metric.id];
    if (!by) continue;
    const medians: Partial<Record<ContenderId, number>> = {};
    const min: Partial<Record<ContenderId, number>> = {};
    const max: Partial<Record<ContenderId, number>> = {};
    const count: Partial<Record<ContenderId, number>> = {};
    for (const [c, xs] of Object.entries(by) as [ContenderId, number[]][]) {
      if (xs.length === 0) continue;
      medians[c] = median(xs);
      min[c] = Math.min(...xs);
      max[c] = Math.max(...xs);
      count[c] = xs.length;
    }
    const ratio = (a?: number, b?: number) =>
      a === undefined || b === undefined || b === 0 ? NaN : a / b;
    out.push({
      metric,
      medians,
      min,
      max,
      count,
      vsReference: ratio(medians.ours, medians.reference),
      vsBaseline: ratio(medians.ours, medians.baseline),
      vsDirect: ratio(medians.ours, medians.direct),
    });
  }
  return out;
}

function describeTarget(t: Target, unit: string): string {
  switch (t.kind) {
    case "vsReference":
      return t.min !== undefined ? `≥${t.min}× ref` : `≤${t.max}× ref`;
    case "vsDirect":
      return `≥${t.min}× direct`;
    case "absolute":
      return `≤${t.max} ${unit}`;
  }
}

/** Every target checked; `met` is null when a needed median is missing. */
export function checkTargets(summaries: readonly Summary[]): TargetResult[] {
  const out: TargetResult[] = [];
  for (const s of summaries) {
    for (const t of s.metric.targets) {
      const value = t.kind === "vsReference"
        ? s.vsReference
        : t.kind === "vsDirect"
        ? s.vsDirect
        : (s.medians.ours ?? NaN);
      const met = Number.isNaN(value)
        ? null
        : t.kind === "vsReference"
        ? (t.min === undefined || value >= t.min) && (t.max === undefined || value <= t.max)
        : t.kind === "vsDirect"
        ? value >= t.min
        : value <= t.max;
      out.push({
        metric: s.metric.id,
        description: `${s.metric.label}: ${describeTarget(t, s.metric.unit)}`,
        value,
        met,
      });
    }
  }
  return out;
}

/** A number for the tables, with `digits` decimals; "–" when there is none. */
export function fmt(x: number | undefined, digits: number): string {
  if (x === undefined || Number.isNaN(x)) return "–";
  return x.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** A ratio for the tables ("1.08×"); "–" when there is none. */
export function fmtRatio(x: number): string {
  return Number.isNaN(x) ? "–" : `${x.toFixed(2)}×`;
}

/** The Markdown table of medians, ratios and targets. */
export function markdown(
  summaries: readonly Summary[],
  targets: readonly TargetResult[],
  contenders: readonly ContenderId[],
): string {
  const baseline = contenders.includes("baseline");
  const head = [
    "Metric",
    "Unit",
    ...contenders,
    "ours/ref",
    ...(baseline ? ["ours/baseline"] : []),
    "ours/direct",
    "Target",
    "Met",
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const s of summaries) {
    if (!s.metric.table) continue;
    const ts = targets.filter((t) => t.metric === s.metric.id);
    const targetText = s.metric.targets.map((t) => describeTarget(t, s.metric.unit)).join(", ");
    const met = ts.map((t) => t.met === null ? "?" : t.met ? "✅" : "❌").join(" ");
    lines.push(
      `| ${
        [
          s.metric.label,
          s.metric.unit,
          ...contenders.map((c) => fmt(s.medians[c], s.metric.digits)),
          fmtRatio(s.vsReference),
          ...(baseline ? [fmtRatio(s.vsBaseline)] : []),
          fmtRatio(s.vsDirect),
          targetText,
          met,
        ].join(" | ")
      } |`,
    );
  }
  return lines.join("\n");
}

/** The metrics the Deno floor is measured on, and how its difference to ours is told. */
const FLOOR_METRICS = [
  ["coldstart_ms", "cold start to first byte"],
  ["idle_base_mib", "RSS at start-up"],
  ["idle_base_anon_mib", "anonymous memory at start-up"],
] as const;

/**
 * What "deno-floor" is, and how far ours is above it (the cost of our own program), from the
 * medians; empty when the floor was not measured.
 */
export function floorNote(summaries: readonly Summary[]): string {
  const parts: string[] = [];
  for (const [id, what] of FLOOR_METRICS) {
    const s = summaries.find((x) => x.metric.id === id);
    const ours = s?.medians.ours, floor = s?.medians["deno-floor"];
    if (s === undefined || ours === undefined || floor === undefined) continue;
    const d = s.metric.digits;
    parts.push(
      `${what} ${ours - floor >= 0 ? "+" : "−"}${
        fmt(Math.abs(ours - floor), d)
      } ${s.metric.unit} ` +
        `(ours ${fmt(ours, d)}, floor ${fmt(floor, d)})`,
    );
  }
  if (parts.length === 0) return "";
  return `deno-floor is Deno alone, started as the proxy is (the same wrapper, flags and ` +
    `environment) over bench/helpers/floor.js: it opens libc, accepts the client on fd 3, ` +
    `connects to the backend and copies its greeting with blocking calls, and does nothing ` +
    `else; it is measured on cold start and start-up memory only. Ours above the floor (the ` +
    `cost of our own program): ${parts.join("; ")}.`;
}

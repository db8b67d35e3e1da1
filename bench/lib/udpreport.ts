/**
 * The UDP rows of the report (issue 16): metrics, targets against nginx, socat and an absolute
 * bound, medians and ratios, the Markdown table, and the rows of the chart.
 * @module
 */
import { fmt, fmtRatio, median, type TargetResult } from "./report.ts";
import type { ChartRow } from "./svg.ts";
import { UDP_CONTENDERS, type UdpContender } from "./udp.ts";

/** A target for "ours": a ratio to another contender, or a bound on our median. */
export type UdpTarget =
  | { readonly kind: "vs"; readonly of: Exclude<UdpContender, "ours">; readonly min: number }
  | { readonly kind: "absolute"; readonly max: number };

/** One reported UDP quantity. */
export interface UdpMetric {
  readonly id: string;
  readonly label: string;
  readonly unit: string;
  readonly better: "higher" | "lower";
  readonly digits: number;
  readonly targets: readonly UdpTarget[];
  /** Shown in the table (the others are kept in the JSON only). */
  readonly table: boolean;
}

const m = (
  id: string,
  label: string,
  unit: string,
  better: "higher" | "lower",
  digits: number,
  targets: UdpTarget[] = [],
  table = true,
): UdpMetric => ({ id, label, unit, better, digits, targets, table });

const AHEAD_OF_NGINX: UdpTarget = { kind: "vs", of: "nginx", min: 1 };

/** Every UDP metric, in report order. */
export const UDP_METRICS: readonly UdpMetric[] = [
  m("udp_qps_c4", "DNS queries, 4 clients", "q/s", "higher", 0, [AHEAD_OF_NGINX]),
  m("udp_qps_c64", "DNS queries, 64 clients", "q/s", "higher", 0, [
    AHEAD_OF_NGINX,
    { kind: "vs", of: "socat", min: 1 },
  ]),
  m("udp_p50_c4_ms", "DNS p50 latency, 4 clients", "ms", "lower", 2, [], false),
  m("udp_p99_c4_ms", "DNS p99 latency, 4 clients", "ms", "lower", 2),
  m("udp_p50_c64_ms", "DNS p50 latency, 64 clients", "ms", "lower", 2, [], false),
  m("udp_p99_c64_ms", "DNS p99 latency, 64 clients", "ms", "lower", 2),
  m("udp_lost_c4_pct", "DNS queries lost, 4 clients", "%", "lower", 2),
  m("udp_lost_c64_pct", "DNS queries lost, 64 clients", "%", "lower", 2),
  m("udp_lost_c4", "DNS queries lost, 4 clients", "", "lower", 0, [], false),
  m("udp_lost_c64", "DNS queries lost, 64 clients", "", "lower", 0, [], false),
  m("udp_cpu_us_per_query_c4", "Proxy CPU per query, 4 clients", "µs", "lower", 1),
  m("udp_cpu_us_per_query_c64", "Proxy CPU per query, 64 clients", "µs", "lower", 1),
  m("udp_idle_kib_per_session", "Idle memory per UDP session", "KiB", "lower", 2, [
    { kind: "absolute", max: 4 },
  ]),
  m(
    "udp_idle_marginal_kib_per_session",
    "Idle memory per UDP session, marginal (N/2 → N)",
    "KiB",
    "lower",
    2,
  ),
  m("udp_idle_sessions", "UDP sessions held", "", "higher", 0),
  m("udp_idle_base_mib", "Proxy memory before the sessions", "MiB", "lower", 1),
  m("udp_idle_total_mib", "Proxy memory with the sessions", "MiB", "lower", 1, [], false),
  m("udp_warmups_c4", "Warm-up runs, 4 clients", "", "lower", 0, [], false),
  m("udp_warmups_c64", "Warm-up runs, 64 clients", "", "lower", 0, [], false),
  m("udp_load1_c4", "1-minute load average, 4 clients", "", "lower", 2, [], false),
  m("udp_load1_c64", "1-minute load average, 64 clients", "", "lower", 2, [], false),
];

/** UDP samples of a whole run: metric id → contender → values. */
export type UdpAllSamples = Record<string, Partial<Record<UdpContender, number[]>>>;

/** Per metric: medians by contender, and ratios of ours to the others. */
export interface UdpSummary {
  readonly metric: UdpMetric;
  readonly medians: Partial<Record<UdpContender, number>>;
  readonly min: Partial<Record<UdpContender, number>>;
  readonly max: Partial<Record<UdpContender, number>>;
  /** ours / contender (NaN where either median is missing). */
  readonly ratios: Record<Exclude<UdpContender, "ours">, number>;
}

/** Medians and ratios for every UDP metric that has samples. */
export function summarizeUdp(all: UdpAllSamples): UdpSummary[] {
  const out: UdpSummary[] = [];
  for (const metric of UDP_METRICS) {
    const by = all[metric.id];
    if (!by) continue;
    const medians: UdpSummary["medians"] = {};
    const min: UdpSummary["min"] = {};
    const max: UdpSummary["max"] = {};
    for (const [c, xs] of Object.entries(by) as [UdpContender, number[]][]) {
      if (xs.length === 0) continue;
      medians[c] = median(xs);
      min[c] = Math.min(...xs);
      max[c] = Math.max(...xs);
    }
    const ratio = (b?: number) =>
      medians.ours === undefined || b === undefined || b === 0 ? NaN : medians.ours / b;
    out.push({
      metric,
      medians,
      min,
      max,
      ratios: {
        direct: ratio(medians.direct),
        nginx: ratio(medians.nginx),
        socat: ratio(medians.socat),
      },
    });
  }
  return out;
}

function describe(t: UdpTarget, metric: UdpMetric): string {
  if (t.kind === "absolute") return `≤${t.max} ${metric.unit}`;
  return metric.better === "higher" ? `≥${t.min}× ${t.of}` : `≤${t.min}× ${t.of}`;
}

/** Every UDP target checked; `met` is null when a needed median is missing. */
export function checkUdpTargets(summaries: readonly UdpSummary[]): TargetResult[] {
  return summaries.flatMap((s) =>
    s.metric.targets.map((t) => {
      const value = t.kind === "vs" ? s.ratios[t.of] : s.medians.ours ?? NaN;
      const met = Number.isNaN(value)
        ? null
        : t.kind === "absolute"
        ? value <= t.max
        : s.metric.better === "higher"
        ? value >= t.min
        : value <= t.min;
      return {
        metric: s.metric.id,
        description: `${s.metric.label}: ${describe(t, s.metric)}`,
        value,
        met,
      };
    })
  );
}

/** The Markdown table of the UDP medians, ratios and targets. */
export function udpMarkdown(
  summaries: readonly UdpSummary[],
  targets: readonly TargetResult[],
  contenders: readonly UdpContender[],
): string {
  const others = contenders.filter((c) => c !== "ours") as Exclude<UdpContender, "ours">[];
  const head = [
    "Metric",
    "Unit",
    ...contenders,
    ...others.map((c) => `ours/${c}`),
    "Target",
    "Met",
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const s of summaries) {
    if (!s.metric.table) continue;
    const met = targets.filter((t) => t.metric === s.metric.id)
      .map((t) => t.met === null ? "?" : t.met ? "✅" : "❌").join(" ");
    const cells = [
      s.metric.label,
      s.metric.unit,
      ...contenders.map((c) => fmt(s.medians[c], s.metric.digits)),
      ...others.map((c) => fmtRatio(s.ratios[c])),
      s.metric.targets.map((t) => describe(t, s.metric)).join(", "),
      met,
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The UDP section of the Markdown report: how it was measured, the load, and the table. */
export function udpSection(
  summaries: readonly UdpSummary[],
  targets: readonly TargetResult[],
): string {
  const loads = summaries.filter((s) => s.metric.id.startsWith("udp_load1_"))
    .flatMap((s) => [s.min, s.medians, s.max].flatMap((by) => Object.values(by)));
  const load = loads.length === 0 ? "" : ` The 1-minute load average at the end of the DNS ` +
    `runs was ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)}.`;
  return [
    `## UDP: DNS through dnsmasq`,
    ``,
    `dnsperf with 4 and 64 clients (\`-q 100 -t 1\`), each run after warm-up runs from the same ` +
    `client ports until one loses no query; latency from \`-v\`. Idle memory: VmRSS growth of ` +
    `the proxy per session held, read after 3 s without a datagram (socat: PSS summed over its ` +
    `processes, one per client; at most 500 sessions). nginx: \`listen … udp\`, one worker, \`proxy_timeout 10m\`; ours: ` +
    `\`--idle-timeout=10min\`, the deployment wrapper over the bundle.${load}`,
    ``,
    udpMarkdown(summaries, targets, UDP_CONTENDERS),
  ].join("\n");
}

/** The chart's rows: ours against nginx (and socat where it has a target), right = better. */
export function udpChartRows(
  summaries: readonly UdpSummary[],
  targets: readonly TargetResult[],
): ChartRow[] {
  const out: ChartRow[] = [];
  for (const s of summaries) {
    if (!s.metric.table) continue;
    const orient = (r: number) => (s.metric.better === "higher" ? r : 1 / r);
    const absolute = s.metric.targets.find((t) => t.kind === "absolute");
    const checked = targets.find((t) => t.metric === s.metric.id);
    const note = absolute?.kind === "absolute" && checked !== undefined
      ? `ours ${fmt(checked.value, s.metric.digits)} ${s.metric.unit} (target ≤${absolute.max}) ` +
        (checked.met ? "✓" : "✗")
      : "";
    for (const other of ["nginx", "socat"] as const) {
      const target = s.metric.targets.find((t) => t.kind === "vs" && t.of === other);
      const shown = other === "nginx" ? !["%", ""].includes(s.metric.unit) : target !== undefined;
      const ratio = s.ratios[other];
      if (!shown || Number.isNaN(ratio) || ratio === 0) continue;
      out.push({
        label: `UDP: ${s.metric.label} vs ${other}`,
        value: orient(ratio),
        target: target?.kind === "vs" ? orient(target.min) : null,
        series: other,
        note: other === "nginx" ? note : "",
      });
    }
  }
  return out;
}

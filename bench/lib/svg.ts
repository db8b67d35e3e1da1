/**
 * A dependency-free SVG bar chart of the ratios to the reference, oriented so that right of
 * 1× is better for us, on a log scale, with the targets marked.
 * @module
 */
import type { Summary, TargetResult } from "./report.ts";

/** Who a bar compares ours with. */
export type Series = "ours" | "baseline" | "direct" | "nginx" | "socat";

/** One bar: a ratio oriented so that right of 1× is better for us, and its target. */
export interface ChartRow {
  label: string;
  value: number;
  target: number | null;
  series: Series;
  note: string;
}

function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

function rows(summaries: readonly Summary[], targets: readonly TargetResult[]): ChartRow[] {
  const out: ChartRow[] = [];
  for (const s of summaries) {
    if (!s.metric.chart) continue;
    const orient = (r: number) => (s.metric.better === "higher" ? r : 1 / r);
    const refTarget = s.metric.targets.find((t) => t.kind === "vsReference");
    const target = refTarget === undefined || refTarget.kind !== "vsReference"
      ? null
      : refTarget.min !== undefined
      ? orient(refTarget.min)
      : orient(refTarget.max ?? 1);
    const abs = targets.find((t) =>
      t.metric === s.metric.id && s.metric.targets.some((x) => x.kind === "absolute")
    );
    const absTarget = s.metric.targets.find((t) => t.kind === "absolute");
    const note = abs && absTarget?.kind === "absolute"
      ? `ours ${abs.value.toFixed(1)} ${s.metric.unit} (target ≤${absTarget.max}) ${
        abs.met ? "✓" : "✗"
      }`
      : "";
    if (!Number.isNaN(s.vsReference)) {
      out.push({
        label: s.metric.label,
        value: orient(s.vsReference),
        target,
        series: "ours",
        note,
      });
    }
    if (!Number.isNaN(s.vsBaseline)) {
      out.push({
        label: `${s.metric.label} vs baseline`,
        value: orient(s.vsBaseline),
        target: null,
        series: "baseline",
        note: "",
      });
    }
    const direct = s.metric.targets.find((t) => t.kind === "vsDirect");
    if (direct?.kind === "vsDirect" && !Number.isNaN(s.vsDirect)) {
      out.push({
        label: `${s.metric.label} vs direct`,
        value: orient(s.vsDirect),
        target: direct.min,
        series: "direct",
        note: "",
      });
    }
  }
  return out;
}

/** What each series drawn means. */
const LEGEND: Record<Series, string> = {
  ours: "ours / reference",
  baseline: "ours / baseline",
  direct: "ours / direct",
  nginx: "UDP: ours / nginx",
  socat: "UDP: ours / socat",
};

/** The legend at `y`: the series drawn (UDP's on a second line), then the target mark. */
function legend(
  data: readonly ChartRow[],
  colour: Record<Series, string>,
  x0: number,
  y: number,
): string[] {
  const out: string[] = [];
  const drawn = new Set(data.map((r) => r.series));
  let x = x0;
  for (const series of ["ours", "baseline", "direct"] as const) {
    if (!drawn.has(series)) continue;
    out.push(
      `<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${colour[series]}"/>`,
      `<text x="${x + 18}" y="${y}">${LEGEND[series]}</text>`,
    );
    x += 140;
  }
  out.push(
    `<line x1="${x}" y1="${y - 10}" x2="${x}" y2="${y + 2}" stroke="#1a9641" stroke-width="3"/>`,
    `<text x="${x + 8}" y="${y}">target (green met, red missed); lower-is-better ` +
      `metrics shown as reference / ours</text>`,
  );
  x = x0;
  for (const series of ["nginx", "socat"] as const) {
    if (!drawn.has(series)) continue;
    out.push(
      `<rect x="${x}" y="${y + 12}" width="12" height="12" fill="${colour[series]}"/>`,
      `<text x="${x + 18}" y="${y + 22}">${LEGEND[series]}</text>`,
    );
    x += 150;
  }
  return out;
}

/** Renders the chart; `subtitle` names the machine and run; `extra` rows go last (UDP). */
export function chart(
  summaries: readonly Summary[],
  targets: readonly TargetResult[],
  subtitle: string,
  extra: readonly ChartRow[] = [],
): string {
  const data = [...rows(summaries, targets), ...extra];
  const values = data.flatMap((r) => [r.value, r.target ?? 1]).filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(0.5, ...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(2, ...values)));
  const labelW = 330, plotW = 430, valueW = 260, rowH = 24, top = 70, pad = 10;
  const width = labelW + plotW + valueW;
  const height = top + data.length * rowH + (extra.length > 0 ? 72 : 50);
  const x = (v: number) =>
    labelW + ((Math.log10(Math.min(hi, Math.max(lo, v))) - Math.log10(lo)) /
        (Math.log10(hi) - Math.log10(lo))) * plotW;
  const colour: Record<Series, string> = {
    ours: "#2b7bb9",
    baseline: "#1b9e77",
    direct: "#7a7a7a",
    nginx: "#e08214",
    socat: "#8073ac",
  };
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${pad}" y="22" font-size="16" font-weight="bold">socket-proxyd vs ` +
    `systemd-socket-proxyd: median ratios (right of 1× = ours better, log scale)</text>`,
    `<text x="${pad}" y="42" fill="#555">${escape(subtitle)}</text>`,
  ];
  for (let g = lo; g <= hi * 1.001; g *= 10) {
    for (const k of [1, 2, 5]) {
      const v = g * k;
      if (v > hi * 1.001) break;
      const gx = x(v);
      out.push(
        `<line x1="${gx}" y1="${top - 8}" x2="${gx}" y2="${top + data.length * rowH}" ` +
          `stroke="${v === 1 ? "#000" : "#ddd"}" stroke-width="${v === 1 ? 1.5 : 1}"/>`,
        `<text x="${gx}" y="${top - 12}" text-anchor="middle" fill="#555">${v}×</text>`,
      );
    }
  }
  data.forEach((r, i) => {
    const y = top + i * rowH;
    const x1 = x(1), x2 = x(r.value);
    out.push(
      `<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${escape(r.label)}</text>`,
      `<rect x="${Math.min(x1, x2)}" y="${y + 4}" width="${Math.max(1, Math.abs(x2 - x1))}" ` +
        `height="${rowH - 8}" fill="${colour[r.series]}"/>`,
    );
    if (r.target !== null) {
      const tx = x(r.target);
      const met = r.value >= r.target - 1e-9;
      out.push(
        `<line x1="${tx}" y1="${y + 1}" x2="${tx}" y2="${y + rowH - 1}" stroke="${
          met ? "#1a9641" : "#d7191c"
        }" stroke-width="3"/>`,
      );
    }
    const text = `${r.value.toFixed(2)}×` + (r.note ? `  ${r.note}` : "");
    out.push(
      `<text x="${labelW + plotW + 8}" y="${y + 16}">${escape(text)}</text>`,
    );
  });
  const ly = top + data.length * rowH + 28;
  out.push(...legend(data, colour, pad, ly));
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

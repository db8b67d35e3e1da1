/**
 * Benchmark of issue 3: socket-proxyd against a direct connection (the ceiling) and against
 * systemd-socket-proxyd, both started through systemd-socket-activate, over interleaved rounds.
 *
 *   deno run -A bench/main.ts [--quick] [--rounds N] [--portable] ...   (see --help)
 *
 * Prints a Markdown table on stdout (progress goes to stderr) and writes PREFIX.json, PREFIX.md
 * and PREFIX.svg (default bench/results/latest, or bench/results/quick with --quick).
 * @module
 */
import { parseArgs } from "node:util";
import {
  type AllSamples,
  checkTargets,
  markdown,
  METRICS,
  summarize,
  type Summary,
  type TargetResult,
} from "./lib/report.ts";
import { run, stopAll } from "./lib/proc.ts";
import {
  type Backend,
  type ContenderId,
  type Paths,
  startHolderServer,
  startNginx,
} from "./lib/services.ts";
import { chart } from "./lib/svg.ts";
import {
  prepareUdp,
  UDP_CONTENDERS,
  UDP_TOOLS,
  type UdpContender,
  udpRound,
  udpToolVersions,
} from "./lib/udp.ts";
import {
  checkUdpTargets,
  summarizeUdp,
  type UdpAllSamples,
  udpChartRows,
  udpSection,
} from "./lib/udpreport.ts";
import {
  ensureTools,
  have,
  initClockTicks,
  isRoot,
  type MachineInfo,
  machineInfo,
  type Tool,
} from "./lib/system.ts";
import {
  bulk,
  coldStart,
  type Context,
  http,
  memory,
  type Samples,
  type Settings,
  writeWrkScript,
} from "./lib/workloads.ts";

const WORKLOADS = ["bulk", "connrate", "keepalive", "memory", "coldstart", "udp"] as const;
type Workload = (typeof WORKLOADS)[number];

const TOOLS: Record<Workload, Tool[]> = {
  bulk: [{ bin: "iperf3", pkg: "iperf3" }],
  connrate: [{ bin: "wrk", pkg: "wrk" }, { bin: "nginx", pkg: "nginx-light" }],
  keepalive: [{ bin: "wrk", pkg: "wrk" }, { bin: "nginx", pkg: "nginx-light" }],
  memory: [],
  coldstart: [],
  udp: [...UDP_TOOLS],
};

const USAGE = `Usage: deno run -A bench/main.ts [OPTIONS]

  --quick            CI smoke mode: 1 round, 1 s runs, 1000 idle connections, 2 cold starts
  --rounds=N         rounds of interleaved contenders (default 5)
  --duration=S       seconds per measured iperf3/wrk run (default 4)
  --warmup=S         seconds of wrk warm-up per instance (default 1)
  --connections=N    wrk connections (default 64)
  --idle=N           idle connections held for the memory workload (default 10000)
  --cold-samples=N   cold starts per contender and round (default 3)
  --udp-sessions=N   UDP sessions opened for the idle memory of udp (default 2000)
  --workloads=LIST   comma-separated: ${WORKLOADS.join(",")} (default all)
  --portable         also measure our portable data path (SOCKET_PROXYD_DATA_PATH=portable)
  --no-reference     do not measure systemd-socket-proxyd
  --reference=PATH   systemd-socket-proxyd to compare with (default /lib/systemd/...)
  --out=PREFIX       write PREFIX.json, PREFIX.md, PREFIX.svg (default bench/results/latest,
                     bench/results/quick with --quick)
  --no-install       never apt-get install missing tools (default: install when root)
  --check            exit 1 when a target is missed
  -h, --help         this text`;

interface Failure {
  round: number;
  workload: Workload;
  contender: ContenderId | UdpContender;
  error: string;
}

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!(n > 0) || !Number.isFinite(n)) throw new Error(`--${name} must be a positive number`);
  return n;
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/** Temporary directories to remove on exit, signals included. */
const temporaries: string[] = [];

function log(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      rounds: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      connections: { type: "string" },
      idle: { type: "string" },
      "cold-samples": { type: "string" },
      "udp-sessions": { type: "string" },
      workloads: { type: "string" },
      portable: { type: "boolean" },
      "no-reference": { type: "boolean" },
      reference: { type: "string" },
      out: { type: "string" },
      "no-install": { type: "boolean" },
      check: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const quick = values.quick ?? false;
  const rounds = Math.floor(positive("rounds", values.rounds, quick ? 1 : 5));
  const settings: Settings = {
    durationS: positive("duration", values.duration, quick ? 1 : 4),
    warmupS: positive("warmup", values.warmup, 1),
    httpConnections: Math.floor(positive("connections", values.connections, 64)),
    idleConnections: Math.floor(positive("idle", values.idle, quick ? 1000 : 10000)),
    coldSamples: Math.floor(positive("cold-samples", values["cold-samples"], quick ? 2 : 3)),
  };
  let workloads = (values.workloads?.split(",") ?? [...WORKLOADS]) as Workload[];
  for (const w of workloads) {
    if (!WORKLOADS.includes(w)) throw new Error(`unknown workload "${w}"; see --help`);
  }
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const paths: Paths = {
    root,
    main: `${root}/main.ts`,
    reference: values.reference ?? "/lib/systemd/systemd-socket-proxyd",
  };
  const prefix = values.out ?? `${root}/bench/results/${quick ? "quick" : "latest"}`;

  // Tools.
  const needed = [
    { bin: "systemd-socket-activate", pkg: "systemd" },
    ...new Set(workloads.flatMap((w) => TOOLS[w])),
  ];
  const missing = await ensureTools(needed, !values["no-install"]);
  if (missing.length > 0) {
    const how = isRoot()
      ? "(apt-get install failed or was disabled)"
      : "(not root: install them with apt-get install -y " +
        [...new Set(missing.map((t) => t.pkg))].join(" ") + ")";
    log(`MISSING: ${missing.map((t) => t.bin).join(", ")} ${how}`);
    if (missing.some((t) => t.bin === "systemd-socket-activate")) return 2;
    const before = workloads;
    workloads = workloads.filter((w) => TOOLS[w].every((t) => !missing.includes(t)));
    log(`skipping workloads: ${before.filter((w) => !workloads.includes(w)).join(", ")}`);
  }
  const contenders: ContenderId[] = ["direct", "ours"];
  if (values.portable) contenders.push("ours-portable");
  if (!values["no-reference"]) {
    if (await have(paths.reference)) contenders.push("reference");
    else log(`MISSING: reference ${paths.reference}; ratios to it will be empty`);
  }

  // Warm Deno's module cache with the proxy's own module graph and flags.
  const warm = await run(Deno.execPath(), ["run", "-P=proxy", paths.main, "--version"], 120_000, {
    cwd: root,
  });
  if (warm.code !== 0) throw new Error(`the proxy does not start:\n${warm.stderr}`);
  await initClockTicks();
  const machine: MachineInfo = await machineInfo(root, paths.reference);
  log(
    `${machine.nproc} CPUs (${machine.cpuModel}), kernel ${machine.kernel}, Deno ${machine.deno}; ` +
      `load ${machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")}`,
  );
  log(
    `${rounds} round(s) of ${workloads.join(", ")} for ${contenders.join(", ")}; ` +
      JSON.stringify(settings),
  );

  const started = performance.now();
  const tmp = await Deno.makeTempDir({ prefix: "socket-proxyd-bench-" });
  temporaries.push(tmp);
  const samples: AllSamples = {};
  const udpSamples: UdpAllSamples = {};
  let udpTools: Record<string, string> = {};
  const failures: Failure[] = [];
  const backends: Backend[] = [];
  try {
    await writeWrkScript(tmp);
    const http_ = workloads.includes("connrate") || workloads.includes("keepalive");
    const nginx = http_ ? await startNginx(tmp) : null;
    if (nginx) backends.push(nginx);
    const holder = workloads.includes("memory") || workloads.includes("coldstart")
      ? await startHolderServer()
      : null;
    if (holder) backends.push(holder);
    const udp = workloads.includes("udp")
      ? await prepareUdp(root, tmp, {
        durationS: settings.durationS,
        warmupS: settings.warmupS,
        sessions: Math.floor(positive("udp-sessions", values["udp-sessions"], 2000)),
      })
      : null;
    if (udp) udpTools = await udpToolVersions();
    const ctx: Context = {
      paths,
      settings,
      nginxPort: nginx?.port ?? 0,
      holderPort: holder?.port ?? 0,
      tmp,
    };
    const measure: Record<Exclude<Workload, "udp">, (c: ContenderId) => Promise<Samples>> = {
      bulk: (c) => bulk(c, ctx),
      connrate: (c) => http(c, ctx, true),
      keepalive: (c) => http(c, ctx, false),
      memory: (c) => memory(c, ctx),
      coldstart: (c) => coldStart(c, ctx),
    };
    for (let round = 1; round <= rounds; round++) {
      for (const workload of workloads) {
        if (workload === "udp") {
          await udpRound(udp!, round, udpSamples, log, (contender, error) => {
            failures.push({ round, workload, contender, error });
          });
          continue;
        }
        const order = rotate(contenders, round - 1)
          .filter((c) => !(workload === "memory" && c === "direct"));
        for (const contender of order) {
          const t0 = performance.now();
          try {
            const got = await measure[workload](contender);
            for (const [id, xs] of Object.entries(got)) {
              ((samples[id] ??= {})[contender] ??= []).push(...xs);
            }
            const shown = Object.entries(got)
              .filter(([id]) => METRICS.find((m) => m.id === id)?.table)
              .map(([id, xs]) => `${id}=${xs.map((x) => x.toPrecision(4)).join("/")}`);
            log(
              `round ${round}/${rounds} ${workload} ${contender}: ${shown.join(" ")} ` +
                `(${((performance.now() - t0) / 1e3).toFixed(1)} s)`,
            );
          } catch (e) {
            const error = e instanceof Error ? e.message : String(e);
            failures.push({ round, workload, contender, error });
            log(`round ${round}/${rounds} ${workload} ${contender}: FAILED ${error}`);
          }
        }
      }
    }
  } finally {
    await stopAll();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }

  const summaries: Summary[] = summarize(samples);
  const udpSummaries = summarizeUdp(udpSamples);
  const udpTargets = checkUdpTargets(udpSummaries);
  const targets: TargetResult[] = [...checkTargets(summaries), ...udpTargets];
  const table = summaries.length === 0 ? "" : markdown(summaries, targets, contenders);
  const udpTable = udpSummaries.length === 0 ? "" : udpSection(udpSummaries, udpTargets);
  const elapsed = (performance.now() - started) / 1e3;
  const subtitle = `${machine.nproc}× ${machine.cpuModel}, Linux ${machine.kernel}, Deno ` +
    `${machine.deno}; ${rounds} round(s), ${settings.durationS} s runs, ` +
    (table ? `${settings.idleConnections} idle conns; ` : "") +
    `${new Date().toISOString().slice(0, 16)}Z`;
  const targetLines = targets.map((t) =>
    `- ${t.met === null ? "?" : t.met ? "✅ met" : "❌ missed"}: ${t.description} ` +
    `(measured ${Number.isNaN(t.value) ? "–" : t.value.toFixed(2)})`
  );
  const failureLines = failures.map((f) =>
    `- round ${f.round} ${f.workload} ${f.contender}: ${f.error.split("\n")[0]}`
  );
  const md = [
    `# socket-proxyd benchmark`,
    ``,
    `${subtitle}. Medians over rounds; ratios are of medians. ` +
    (table ? `Contenders: ${contenders.join(", ")}.` : "") +
    (udpTable ? ` UDP: ${UDP_CONTENDERS.join(", ")}.` : ""),
    ``,
    ...(table ? [table, ``] : []),
    ...(udpTable ? [udpTable, ``] : []),
    `## Targets`,
    ``,
    ...targetLines,
    ...(failures.length ? ["", "## Failures", "", ...failureLines] : []),
    ``,
  ].join("\n");
  if (table) console.log(`${table}\n`);
  if (udpTable) console.log(`${udpTable}\n`);
  console.log(targetLines.join("\n"));
  if (failureLines.length) console.log(`\nFailures:\n${failureLines.join("\n")}`);

  const result = {
    generated: new Date().toISOString(),
    elapsedSeconds: Math.round(elapsed),
    machine,
    settings: { ...settings, rounds, quick, workloads, contenders },
    summaries: summaries.map((s) => ({
      metric: s.metric.id,
      label: s.metric.label,
      unit: s.metric.unit,
      better: s.metric.better,
      medians: s.medians,
      min: s.min,
      max: s.max,
      count: s.count,
      oursVsReference: s.vsReference,
      portableVsReference: s.portableVsReference,
      oursVsDirect: s.vsDirect,
    })),
    udp: {
      contenders: UDP_CONTENDERS,
      tools: udpTools,
      summaries: udpSummaries.map((s) => ({
        metric: s.metric.id,
        label: s.metric.label,
        unit: s.metric.unit,
        better: s.metric.better,
        medians: s.medians,
        min: s.min,
        max: s.max,
        oursVs: s.ratios,
      })),
      samples: udpSamples,
    },
    targets,
    samples,
    failures,
  };
  const dir = prefix.slice(0, prefix.lastIndexOf("/"));
  if (dir) await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${prefix}.json`, JSON.stringify(result, null, 2) + "\n");
  await Deno.writeTextFile(`${prefix}.md`, md);
  await Deno.writeTextFile(
    `${prefix}.svg`,
    chart(summaries, targets, subtitle, udpChartRows(udpSummaries, udpTargets)),
  );
  // Keep the results as `deno fmt --check` (deno task check) wants them.
  const files = ["json", "md", "svg"].map((ext) => `${prefix}.${ext}`);
  const fmt = await run(Deno.execPath(), ["fmt", "--quiet", ...files], 60_000, { cwd: root });
  if (fmt.code !== 0) log(`deno fmt of the results failed: ${fmt.stderr.trim()}`);
  log(`wrote ${prefix}.json, .md and .svg in ${elapsed.toFixed(0)} s`);
  if (failures.length > 0) return 1;
  if (values.check && targets.some((t) => t.met === false)) return 1;
  return 0;
}

if (import.meta.main) {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, async () => {
      log(`${signal}: stopping every process started`);
      await stopAll();
      for (const dir of temporaries) await Deno.remove(dir, { recursive: true }).catch(() => {});
      Deno.exit(130);
    });
  }
  let status = 1;
  try {
    status = await main();
  } catch (e) {
    log(`error: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  } finally {
    await stopAll();
  }
  Deno.exit(status);
}

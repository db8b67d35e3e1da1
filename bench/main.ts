/**
 * The benchmark of issue 23: socket-proxyd as deployed (the wrapper systemd/socket-proxyd over
 * the bundle dist/socket-proxyd.js, built by `deno task bundle` at the start) against a direct
 * connection (the ceiling) and against systemd-socket-proxyd (the reference), each proxy
 * started by systemd-socket-activate, in interleaved rounds whose order rotates.
 *
 * Also measured in the same rounds: with `--baseline=PATH`, a second bundle (another branch's)
 * under the same wrapper, for an A/B of two builds (the ours/baseline column); and, for cold
 * start and start-up memory, the Deno floor: the same wrapper over bench/helpers/floor.js,
 * Deno alone answering the first byte, so that what our own program costs shows.
 *
 *   deno task bench [--quick] [--rounds=N] [--baseline=PATH] ...   (see --help)
 *
 * Prints a Markdown table on stdout (progress goes to stderr) and writes PREFIX.json, PREFIX.md
 * and PREFIX.svg (default bench/results/latest, or bench/results/quick with --quick).
 * @module
 */
import { parseArgs } from "node:util";
import {
  type AllSamples,
  checkTargets,
  floorNote,
  markdown,
  METRICS,
  summarize,
  type Summary,
  type TargetResult,
} from "./lib/report.ts";
import { run, stopAll } from "./lib/proc.ts";
import {
  type Backend,
  buildBundle,
  checkProgram,
  type ContenderId,
  FLOOR,
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
  type UdpSummary,
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
  AFTER_S,
  bulk,
  coldStart,
  type Context,
  http,
  memory,
  type Samples,
  type Settings,
  SETTLE_S,
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

const USAGE = `Usage: deno task bench [OPTIONS]   (or: deno run -A bench/main.ts [OPTIONS])

Builds the bundle (deno task bundle), then measures, in interleaved rounds:
  direct       the backend itself (the ceiling)
  ours         systemd/socket-proxyd over dist/socket-proxyd.js, as deployed
  baseline     systemd/socket-proxyd over the --baseline bundle (only with --baseline)
  deno-floor   systemd/socket-proxyd over bench/helpers/floor.js: Deno alone answering the
               first byte (cold start and start-up memory only)
  reference    systemd-socket-proxyd
each proxy started by systemd-socket-activate.

  --quick            CI smoke mode: 1 round, 1 s runs, 1000 idle connections, 2 cold starts
  --rounds=N         rounds of interleaved contenders (default 5)
  --duration=S       seconds per measured iperf3/wrk run (default 4)
  --warmup=S         seconds of wrk warm-up per instance (default 1)
  --connections=N    wrk connections (default 64)
  --idle=N           connections held for the memory workload (default 10000)
  --cold-samples=N   cold starts per contender and round (default 3)
  --udp-sessions=N   UDP sessions opened for the idle memory of udp (default 2000)
  --workloads=LIST   comma-separated: ${WORKLOADS.join(",")} (default all)
  --baseline=PATH    also measure this bundle (e.g. another branch's dist/socket-proxyd.js,
                     from its deno task bundle) under this tree's wrapper, and report
                     ours/baseline; not in the udp workload
  --no-reference     do not measure systemd-socket-proxyd
  --reference=PATH   systemd-socket-proxyd to compare with (default /lib/systemd/...)
  --out=PREFIX       write PREFIX.json, PREFIX.md, PREFIX.svg (default bench/results/latest,
                     bench/results/quick with --quick)
  --no-install       never apt-get install missing tools (default: install when root)
  --check            exit 1 when a target is missed
  -h, --help         this text

Relative paths are taken from the directory deno task was run in.`;

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

/** `path` made absolute against the directory the user ran `deno task` in. */
function fromUser(path: string): string {
  if (path.startsWith("/")) return path;
  return `${Deno.env.get("INIT_CWD") ?? Deno.cwd()}/${path}`;
}

function rotate<T>(xs: readonly T[], by: number): T[] {
  const k = by % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/**
 * Whether `contender` is measured in `workload`: direct has no proxy process whose memory could
 * be read, and the Deno floor answers one first byte and forwards nothing.
 */
function takesPart(contender: ContenderId, workload: Workload): boolean {
  if (contender === "deno-floor") return workload === "memory" || workload === "coldstart";
  return !(contender === "direct" && workload === "memory");
}

/** A program under test, recorded with the results. */
interface Program {
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
  /** What it says to --version. */
  readonly version: string;
}

async function describeProgram(wrapper: string, path: string): Promise<Program> {
  const data = await Deno.readFile(path).catch((e) => {
    throw new Error(
      `cannot read the program ${path} (${e.message}); a bundle comes from ` +
        `deno task bundle, as dist/socket-proxyd.js`,
    );
  });
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return {
    path,
    bytes: data.length,
    sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
    version: await checkProgram(wrapper, path),
  };
}

/** Temporary directories to remove on exit, signals included. */
const temporaries: string[] = [];

function log(message: string): void {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
}

/** What the command line asked for. */
interface Options {
  readonly quick: boolean;
  readonly rounds: number;
  readonly settings: Settings;
  readonly udpSessions: number;
  readonly workloads: Workload[];
  readonly baseline: string | null;
  readonly reference: string | null;
  readonly out: string | null;
  readonly install: boolean;
  readonly check: boolean;
}

/** Parses the command line; null for --help. */
function options(args: string[]): Options | null {
  const { values } = parseArgs({
    args,
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
      baseline: { type: "string" },
      "no-reference": { type: "boolean" },
      reference: { type: "string" },
      out: { type: "string" },
      "no-install": { type: "boolean" },
      check: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return null;
  const quick = values.quick ?? false;
  const workloads = (values.workloads?.split(",") ?? [...WORKLOADS]) as Workload[];
  for (const w of workloads) {
    if (!WORKLOADS.includes(w)) throw new Error(`unknown workload "${w}"; see --help`);
  }
  return {
    quick,
    rounds: Math.floor(positive("rounds", values.rounds, quick ? 1 : 5)),
    settings: {
      durationS: positive("duration", values.duration, quick ? 1 : 4),
      warmupS: positive("warmup", values.warmup, 1),
      httpConnections: Math.floor(positive("connections", values.connections, 64)),
      idleConnections: Math.floor(positive("idle", values.idle, quick ? 1000 : 10000)),
      coldSamples: Math.floor(positive("cold-samples", values["cold-samples"], quick ? 2 : 3)),
    },
    udpSessions: Math.floor(positive("udp-sessions", values["udp-sessions"], 2000)),
    workloads,
    baseline: values.baseline === undefined ? null : fromUser(values.baseline),
    reference: values["no-reference"]
      ? null
      : fromUser(values.reference ?? "/lib/systemd/systemd-socket-proxyd"),
    out: values.out === undefined ? null : fromUser(values.out),
    install: !values["no-install"],
    check: values.check ?? false,
  };
}

/** Installs or finds the tools; returns the workloads that can run (null: none at all). */
async function toolsFor(workloads: Workload[], install: boolean): Promise<Workload[] | null> {
  const needed = [
    { bin: "systemd-socket-activate", pkg: "systemd" },
    ...new Set(workloads.flatMap((w) => TOOLS[w])),
  ];
  const missing = await ensureTools(needed, install);
  if (missing.length === 0) return workloads;
  const how = isRoot()
    ? "(apt-get install failed or was disabled)"
    : "(not root: install them with apt-get install -y " +
      [...new Set(missing.map((t) => t.pkg))].join(" ") + ")";
  log(`MISSING: ${missing.map((t) => t.bin).join(", ")} ${how}`);
  if (missing.some((t) => t.bin === "systemd-socket-activate")) return null;
  const can = workloads.filter((w) => TOOLS[w].every((t) => !missing.includes(t)));
  log(`skipping workloads: ${workloads.filter((w) => !can.includes(w)).join(", ")}`);
  return can;
}

/** What the rounds collected. */
interface Collected {
  samples: AllSamples;
  udpSamples: UdpAllSamples;
  udpTools: Record<string, string>;
  failures: Failure[];
}

/** Measures one contender in one workload, adding its samples (or its failure) to `got`. */
async function measureOne(
  measure: (c: ContenderId) => Promise<Samples>,
  where: { round: number; rounds: number; workload: Workload; contender: ContenderId },
  got: Collected,
): Promise<void> {
  const { round, rounds, workload, contender } = where;
  const t0 = performance.now();
  try {
    const samples = await measure(contender);
    for (const [id, xs] of Object.entries(samples)) {
      ((got.samples[id] ??= {})[contender] ??= []).push(...xs);
    }
    const shown = Object.entries(samples)
      .filter(([id]) => METRICS.find((m) => m.id === id)?.table)
      .map(([id, xs]) => `${id}=${xs.map((x) => x.toPrecision(4)).join("/")}`);
    log(
      `round ${round}/${rounds} ${workload} ${contender}: ${shown.join(" ")} ` +
        `(${((performance.now() - t0) / 1e3).toFixed(1)} s)`,
    );
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    got.failures.push({ round, workload, contender, error });
    log(`round ${round}/${rounds} ${workload} ${contender}: FAILED ${error}`);
  }
}

/** Starts the backends and runs every round; every process started is stopped at the end. */
async function runRounds(
  opts: Options,
  workloads: Workload[],
  contenders: ContenderId[],
  paths: Paths,
): Promise<Collected> {
  const got: Collected = { samples: {}, udpSamples: {}, udpTools: {}, failures: [] };
  const tmp = await Deno.makeTempDir({ prefix: "socket-proxyd-bench-" });
  temporaries.push(tmp);
  const backends: Backend[] = [];
  try {
    await writeWrkScript(tmp);
    const nginx = workloads.includes("connrate") || workloads.includes("keepalive")
      ? await startNginx(tmp)
      : null;
    if (nginx) backends.push(nginx);
    const holder = workloads.includes("memory") || workloads.includes("coldstart")
      ? await startHolderServer()
      : null;
    if (holder) backends.push(holder);
    const udp = workloads.includes("udp")
      ? await prepareUdp(paths.wrapper, paths.bundle, tmp, {
        durationS: opts.settings.durationS,
        warmupS: opts.settings.warmupS,
        sessions: opts.udpSessions,
      })
      : null;
    if (udp) got.udpTools = await udpToolVersions();
    const ctx: Context = {
      paths,
      settings: opts.settings,
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
    const rounds = opts.rounds;
    for (let round = 1; round <= rounds; round++) {
      for (const workload of workloads) {
        if (workload === "udp") {
          await udpRound(udp!, round, got.udpSamples, log, (contender, error) => {
            got.failures.push({ round, workload, contender, error });
          });
          continue;
        }
        for (const contender of rotate(contenders, round - 1)) {
          if (!takesPart(contender, workload)) continue;
          await measureOne(measure[workload], { round, rounds, workload, contender }, got);
        }
      }
    }
  } finally {
    await stopAll();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return got;
}

/** The programs run, recorded with the results. */
interface Programs {
  readonly wrapper: string;
  readonly ours: Program;
  readonly baseline: Program | null;
  readonly floor: string;
}

/** One run of the benchmark, as recorded with its results. */
interface Run {
  readonly opts: Options;
  readonly workloads: Workload[];
  readonly contenders: ContenderId[];
  readonly machine: MachineInfo;
  readonly programs: Programs;
  /** Seconds the rounds took. */
  readonly elapsed: number;
}

/** The results, summarized and checked, and told in Markdown. */
interface Report {
  readonly summaries: Summary[];
  readonly udpSummaries: UdpSummary[];
  readonly targets: TargetResult[];
  readonly udpTargets: TargetResult[];
  readonly subtitle: string;
  /** The tables, the floor's note, targets and failures, as printed on stdout. */
  readonly printed: string;
  /** The Markdown file. */
  readonly md: string;
}

function report(r: Run, got: Collected): Report {
  const { settings, rounds } = r.opts;
  const summaries = summarize(got.samples);
  const udpSummaries = summarizeUdp(got.udpSamples);
  const udpTargets = checkUdpTargets(udpSummaries);
  const targets = [...checkTargets(summaries), ...udpTargets];
  const table = summaries.length === 0 ? "" : markdown(summaries, targets, r.contenders);
  const floor = floorNote(summaries);
  const udpTable = udpSummaries.length === 0 ? "" : udpSection(udpSummaries, udpTargets);
  const subtitle = `${r.machine.nproc}× ${r.machine.cpuModel}, Linux ${r.machine.kernel}, ` +
    `Deno ${r.machine.deno}; ${rounds} round(s), ${settings.durationS} s runs, ` +
    (table ? `${settings.idleConnections} held conns; ` : "") +
    `${new Date().toISOString().slice(0, 16)}Z`;
  const targetLines = targets.map((t) =>
    `- ${t.met === null ? "?" : t.met ? "✅ met" : "❌ missed"}: ${t.description} ` +
    `(measured ${Number.isNaN(t.value) ? "–" : t.value.toFixed(2)})`
  );
  const failureLines = got.failures.map((f) =>
    `- round ${f.round} ${f.workload} ${f.contender}: ${f.error.split("\n")[0]}`
  );
  const { ours, baseline } = r.programs;
  const programs =
    `ours: the wrapper over this tree's bundle (sha256 ${ours.sha256.slice(0, 12)})` +
    (baseline
      ? `; baseline: the same wrapper over ${baseline.path} (sha256 ` +
        `${baseline.sha256.slice(0, 12)})`
      : "") +
    ".";
  const sections = [table, floor, udpTable].filter((x) => x !== "");
  const md = [
    `# socket-proxyd benchmark`,
    ``,
    `${subtitle}. Medians over rounds; ratios are of medians. ` +
    (table ? `Contenders: ${r.contenders.join(", ")}; ${programs}` : "") +
    (udpTable ? ` UDP: ${UDP_CONTENDERS.join(", ")}.` : ""),
    ``,
    ...sections.flatMap((x) => [x, ``]),
    `## Targets`,
    ``,
    ...targetLines,
    ...(failureLines.length ? ["", "## Failures", "", ...failureLines] : []),
    ``,
  ].join("\n");
  const printed = [...sections, targetLines.join("\n")].join("\n\n") +
    (failureLines.length ? `\n\nFailures:\n${failureLines.join("\n")}` : "");
  return { summaries, udpSummaries, targets, udpTargets, subtitle, printed, md };
}

/** Everything measured, for PREFIX.json. */
function resultJson(r: Run, rep: Report, got: Collected): unknown {
  return {
    generated: new Date().toISOString(),
    elapsedSeconds: Math.round(r.elapsed),
    machine: r.machine,
    programs: r.programs,
    settings: {
      ...r.opts.settings,
      rounds: r.opts.rounds,
      quick: r.opts.quick,
      workloads: r.workloads,
      contenders: r.contenders,
      memoryAfterLoadS: [AFTER_S, SETTLE_S],
    },
    summaries: rep.summaries.map((s) => ({
      metric: s.metric.id,
      label: s.metric.label,
      unit: s.metric.unit,
      better: s.metric.better,
      medians: s.medians,
      min: s.min,
      max: s.max,
      count: s.count,
      oursVsReference: s.vsReference,
      oursVsBaseline: s.vsBaseline,
      oursVsDirect: s.vsDirect,
    })),
    udp: {
      contenders: UDP_CONTENDERS,
      tools: got.udpTools,
      summaries: rep.udpSummaries.map((s) => ({
        metric: s.metric.id,
        label: s.metric.label,
        unit: s.metric.unit,
        better: s.metric.better,
        medians: s.medians,
        min: s.min,
        max: s.max,
        oursVs: s.ratios,
      })),
      samples: got.udpSamples,
    },
    targets: rep.targets,
    samples: got.samples,
    failures: got.failures,
  };
}

/** Writes PREFIX.json, .md and .svg, formatted as `deno task check` wants them. */
async function writeResults(prefix: string, rep: Report, json: unknown): Promise<void> {
  const dir = prefix.slice(0, prefix.lastIndexOf("/"));
  if (dir) await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${prefix}.json`, JSON.stringify(json, null, 2) + "\n");
  await Deno.writeTextFile(`${prefix}.md`, rep.md);
  await Deno.writeTextFile(
    `${prefix}.svg`,
    chart(rep.summaries, rep.targets, rep.subtitle, udpChartRows(rep.udpSummaries, rep.udpTargets)),
  );
  const files = ["json", "md", "svg"].map((ext) => `${prefix}.${ext}`);
  const fmt = await run(Deno.execPath(), ["fmt", "--quiet", ...files], 60_000);
  if (fmt.code !== 0) log(`deno fmt of the results failed: ${fmt.stderr.trim()}`);
}

async function main(): Promise<number> {
  const opts = options(Deno.args);
  if (opts === null) {
    console.log(USAGE);
    return 0;
  }
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const prefix = opts.out ?? `${root}/bench/results/${opts.quick ? "quick" : "latest"}`;
  const workloads = await toolsFor(opts.workloads, opts.install);
  if (workloads === null) return 2;
  const contenders: ContenderId[] = ["direct", "ours"];
  if (opts.baseline !== null) contenders.push("baseline");
  if (workloads.some((w) => takesPart("deno-floor", w))) contenders.push("deno-floor");
  const reference = opts.reference ?? "";
  if (opts.reference !== null) {
    if (await have(reference)) contenders.push("reference");
    else log(`MISSING: reference ${reference}; ratios to it will be empty`);
  }

  // The deployed form: the bundle, built now, under the wrapper; each program must start.
  log("deno task bundle");
  const wrapper = `${root}/systemd/socket-proxyd`;
  const paths: Paths = {
    root,
    wrapper,
    bundle: await buildBundle(root),
    baseline: opts.baseline,
    floor: FLOOR,
    reference,
  };
  const programs: Programs = {
    wrapper,
    ours: await describeProgram(wrapper, paths.bundle),
    baseline: opts.baseline === null ? null : await describeProgram(wrapper, opts.baseline),
    floor: FLOOR,
  };
  await initClockTicks();
  const machine: MachineInfo = await machineInfo(root, reference);
  log(
    `${machine.nproc} CPUs (${machine.cpuModel}), kernel ${machine.kernel}, Deno ${machine.deno}; ` +
      `load ${machine.loadAverageAtStart.map((l) => l.toFixed(2)).join(" ")}`,
  );
  log(`ours: ${programs.ours.version}, ${programs.ours.bytes} bytes`);
  if (programs.baseline) {
    log(`baseline: ${programs.baseline.version}, ${programs.baseline.bytes} bytes`);
  }
  log(
    `${opts.rounds} round(s) of ${workloads.join(", ")} for ${contenders.join(", ")}; ` +
      JSON.stringify(opts.settings),
  );

  const started = performance.now();
  const got = await runRounds(opts, workloads, contenders, paths);
  const elapsed = (performance.now() - started) / 1e3;
  const r: Run = { opts, workloads, contenders, machine, programs, elapsed };
  const rep = report(r, got);
  console.log(rep.printed);
  await writeResults(prefix, rep, resultJson(r, rep, got));
  log(`wrote ${prefix}.json, .md and .svg in ${elapsed.toFixed(0)} s`);
  if (got.failures.length > 0) return 1;
  if (opts.check && rep.targets.some((t) => t.met === false)) return 1;
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

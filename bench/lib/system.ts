/**
 * The machine: tools, ports, /proc readings and the description recorded with the results.
 * @module
 */
import { run } from "./proc.ts";

/** An external program a workload needs, and the Debian package that has it. */
export interface Tool {
  readonly bin: string;
  readonly pkg: string;
  /** `bin` is an absolute path to a file that must exist, not a program (an nginx module). */
  readonly file?: boolean;
}

async function present(t: Tool): Promise<boolean> {
  if (!t.file) return await have(t.bin);
  try {
    return (await Deno.stat(t.bin)).isFile;
  } catch {
    return false;
  }
}

/** Whether `bin` is on PATH (or is an executable path). */
export async function have(bin: string): Promise<boolean> {
  if (bin.startsWith("/")) {
    try {
      return ((await Deno.stat(bin)).mode ?? 0) & 0o111 ? true : false;
    } catch {
      return false;
    }
  }
  const r = await run("sh", ["-c", 'command -v "$1"', "sh", bin], 10_000);
  return r.code === 0;
}

/** Whether this process runs as root (and so may install packages and raise fd limits). */
export function isRoot(): boolean {
  try {
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

/**
 * Makes sure `tools` are present, installing the missing ones with apt-get when running as root
 * and `install` is set.
 *
 * @returns the tools still missing afterwards.
 */
export async function ensureTools(tools: readonly Tool[], install: boolean): Promise<Tool[]> {
  const missing: Tool[] = [];
  for (const t of tools) if (!(await present(t))) missing.push(t);
  if (missing.length === 0 || !install || !isRoot()) return missing;
  const pkgs = [...new Set(missing.map((t) => t.pkg))];
  console.error(`Installing ${pkgs.join(" ")} with apt-get...`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const update = await run("apt-get", ["update"], 300_000, { env });
  if (update.code !== 0) console.error(`apt-get update failed:\n${update.stderr.slice(-1000)}`);
  const inst = await run(
    "apt-get",
    ["install", "-y", "--no-install-recommends", ...pkgs],
    600_000,
    {
      env,
    },
  );
  if (inst.code !== 0) console.error(`apt-get install failed:\n${inst.stderr.slice(-1000)}`);
  const still: Tool[] = [];
  for (const t of missing) if (!(await present(t))) still.push(t);
  return still;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until something accepts on 127.0.0.1:`port` (do not use on a socket-activated port). */
export async function waitPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await delay(20);
    }
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
}

let clockTicks = 100;

/** Reads the kernel's clock tick rate once (getconf CLK_TCK, normally 100). */
export async function initClockTicks(): Promise<void> {
  const r = await run("getconf", ["CLK_TCK"], 5_000);
  const n = Number(r.stdout.trim());
  if (r.code === 0 && n > 0) clockTicks = n;
}

/** User plus system CPU seconds of process `pid`, all threads, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** Resident set size of process `pid` in KiB, from /proc/PID/status. */
export function rssKiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = status.match(/^VmRSS:\s+(\d+) kB/m);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** Fields of /proc/PID/smaps_rollup, in KiB. */
export interface Rollup {
  /** Resident set size. */
  readonly rss: number;
  /** Anonymous memory (heaps, stacks, private writable mappings): what the process made. */
  readonly anonymous: number;
  /** Private memory, clean and dirty (pages no other process shares). */
  readonly private: number;
}

/** Reads {@link Rollup} of process `pid` from /proc/PID/smaps_rollup. */
export function rollupKiB(pid: number): Rollup {
  const rollup = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
  const field = (name: string) => {
    const m = rollup.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"));
    if (!m) throw new Error(`no ${name} in smaps_rollup of pid ${pid}`);
    return Number(m[1]);
  };
  return {
    rss: field("Rss"),
    anonymous: field("Anonymous"),
    private: field("Private_Clean") + field("Private_Dirty"),
  };
}

/** The number of open file descriptors of process `pid`. */
export function fdCount(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** The soft limit on open files of process `pid`, from /proc/PID/limits. */
export function fdLimit(pid: number): number {
  const limits = Deno.readTextFileSync(`/proc/${pid}/limits`);
  const m = limits.match(/^Max open files\s+(\d+|unlimited)/m);
  return m === null || m[1] === "unlimited" ? Infinity : Number(m[1]);
}

/** The executable process `pid` runs, or null once it is gone. */
export function exeOf(pid: number): string | null {
  try {
    return Deno.readLinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}

/** Description of the machine and software, recorded with the results. */
export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  kernel: string;
  deno: string;
  v8: string;
  memTotalMiB: number;
  loadAverageAtStart: number[];
  tools: Record<string, string>;
  project: { commit: string; dirty: boolean };
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, args, 10_000);
    return (r.stdout + r.stderr).trim().split("\n")[0] ?? "";
  } catch {
    return "missing";
  }
}

/** Collects {@link MachineInfo}; `root` is the project directory. */
export async function machineInfo(root: string, reference: string): Promise<MachineInfo> {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const meminfo = Deno.readTextFileSync("/proc/meminfo");
  const nprocOut = await firstLine("nproc", []);
  const commit = await run("git", ["-C", root, "rev-parse", "HEAD"], 10_000);
  const dirty = await run("git", ["-C", root, "status", "--porcelain", "--", "src"], 10_000);
  return {
    nproc: Number(nprocOut) || navigator.hardwareConcurrency,
    cpuModel: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown",
    kernel: Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    memTotalMiB: Math.round(Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0) / 1024),
    loadAverageAtStart: Deno.loadavg(),
    tools: {
      iperf3: await firstLine("iperf3", ["--version"]),
      wrk: await firstLine("wrk", ["--version"]),
      nginx: await firstLine("nginx", ["-v"]),
      "systemd-socket-activate": await firstLine("systemd-socket-activate", ["--version"]),
      reference: await firstLine(reference, ["--version"]),
    },
    project: {
      commit: commit.stdout.trim() || "unknown",
      dirty: dirty.stdout.trim() !== "",
    },
  };
}

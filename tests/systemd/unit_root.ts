/**
 * `systemd-analyze` over an example's units without installing them: a root directory with the
 * host's unit library, the units under /etc/systemd/system and stand-ins for the binaries they
 * run, made for one run and removed after it.
 * @module
 */

/**
 * Runs `systemd-analyze ARGS --root=ROOT` over such a root.
 * @param dir the example's directory (a file URL ending in "/").
 * @param units the unit files of `dir` to install.
 * @param binaries paths below the root (no leading "/") of the programs the units run.
 * @returns its standard output and error, together.
 */
export async function analyzeUnits(
  dir: URL,
  units: readonly string[],
  binaries: readonly string[],
  args: readonly string[],
): Promise<string> {
  const root = Deno.makeTempDirSync({ prefix: "socket-proxyd-units-" });
  try {
    Deno.mkdirSync(`${root}/etc/systemd/system`, { recursive: true });
    Deno.mkdirSync(`${root}/usr/lib/systemd`, { recursive: true });
    Deno.symlinkSync("/lib/systemd/system", `${root}/usr/lib/systemd/system`);
    for (const unit of units) {
      Deno.copyFileSync(new URL(unit, dir), `${root}/etc/systemd/system/${unit}`);
    }
    for (const binary of binaries) {
      Deno.mkdirSync(`${root}/${binary.replace(/\/[^/]*$/, "")}`, { recursive: true });
      Deno.writeTextFileSync(`${root}/${binary}`, "#!/bin/sh\n", { mode: 0o755 });
    }
    const { stdout, stderr } = await new Deno.Command("systemd-analyze", {
      args: [...args, `--root=${root}`],
      env: { SYSTEMD_COLORS: "0" },
    }).output();
    const decoder = new TextDecoder();
    return decoder.decode(stdout) + decoder.decode(stderr);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
}

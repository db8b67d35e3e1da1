/**
 * The program's own source files, for the tests that read them for rules the code keeps.
 * @module
 */

/** The TypeScript files under `dir`, in every folder. */
export function sourceFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].flatMap((entry) =>
    entry.isDirectory
      ? sourceFiles(`${dir}/${entry.name}`)
      : entry.name.endsWith(".ts")
      ? [`${dir}/${entry.name}`]
      : []
  );
}

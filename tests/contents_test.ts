/**
 * What the Debian package and the release archive must hold: packaging/deb/contents and
 * packaging/archive/contents list every file, and each build fails unless what it made holds
 * exactly those (packaging/layout.sh, check_contents). These tests tie the lists to the source:
 * every example of systemd/ is shipped by both, with the examples' README where the units and the
 * man page say it is, and both template unit sets are where systemd looks for them.
 */
import { deepEqual, ok } from "node:assert/strict";
import { ROOT } from "./integration/harness.ts";

/** The files a contents list names. */
function listed(path: string): Set<string> {
  return new Set(
    Deno.readTextFileSync(`${ROOT}${path}`).split("\n").filter((line) =>
      line !== "" && !line.startsWith("#")
    ),
  );
}

const deb = listed("packaging/deb/contents");
const archive = listed("packaging/archive/contents");
const DEB_EXAMPLES = "usr/share/doc/socket-proxyd/examples/";
const ARCHIVE_EXAMPLES = "share/doc/socket-proxyd/examples/";

/** The files under `dir` of the checkout, relative to it, in every folder. */
function filesUnder(dir: string): string[] {
  return [...Deno.readDirSync(`${ROOT}${dir}`)].flatMap((entry) =>
    entry.isDirectory ? filesUnder(`${dir}/${entry.name}`) : [`${dir}/${entry.name}`]
  );
}

/** Every example file of the source, as its path below examples/. */
function examples(): string[] {
  const fromSystemd = filesUnder("systemd")
    .filter((path) => /^systemd\/[^/]+\//.test(path) && !path.startsWith("systemd/units/"))
    .map((path) => path.slice("systemd/".length));
  const confs = filesUnder("packaging/deb/examples").map((path) => path.replace(/^.*\//, ""));
  return ["README.md", ...fromSystemd, ...confs].sort();
}

Deno.test("the package and the archive ship every example of systemd/, with its README", () => {
  const all = examples();
  ok(all.includes("dns/proxy-to-dnsmasq.service") && all.includes("datagram/datagram-only.conf"));
  ok(all.includes("recipes/6-rootless-podman/web-container.service"));
  deepEqual(
    [...deb].filter((path) => path.startsWith(DEB_EXAMPLES)).map((p) =>
      p.slice(DEB_EXAMPLES.length)
    )
      .sort(),
    all,
  );
  deepEqual(
    [...archive].filter((path) => path.startsWith(ARCHIVE_EXAMPLES))
      .map((p) => p.slice(ARCHIVE_EXAMPLES.length)).sort(),
    all,
  );
});

Deno.test("the template units, system and user, where systemd looks for them", () => {
  for (
    const [kind, debDir] of [["system", "lib/systemd/system"], ["user", "usr/lib/systemd/user"]]
  ) {
    const units = filesUnder(`systemd/units/${kind}`).map((path) => path.replace(/^.*\//, ""));
    deepEqual(units.sort(), ["socket-proxyd@.service", "socket-proxyd@.socket"]);
    for (const unit of units) {
      ok(deb.has(`${debDir}/${unit}`), `package: ${debDir}/${unit}`);
      ok(archive.has(`lib/systemd/${kind}/${unit}`), `archive: lib/systemd/${kind}/${unit}`);
    }
  }
});

Deno.test("every examples/ path the units, the man page and README.Debian name is shipped", () => {
  const sources = [
    ...filesUnder("systemd/units"),
    ...filesUnder("systemd").filter((path) => /\.(service|socket|conf)$/.test(path)),
    "systemd/socket-proxyd.8",
    "packaging/deb/debian/README.Debian",
  ];
  let seen = 0;
  for (const source of sources) {
    const text = Deno.readTextFileSync(`${ROOT}${source}`).replaceAll("\\-", "-");
    for (
      const [path] of text.matchAll(
        /(?<=examples\/)[\w@-]+(?:\.[\w@-]+)*(?:\/[\w@-]+(?:\.[\w@-]+)*)*/g,
      )
    ) {
      seen++;
      // A file, a directory, or the start of a glob (examples/unix-path/proxy-to-nginx.s*).
      const known = (list: Set<string>, prefix: string) =>
        [...list].some((file) => file.startsWith(`${prefix}${path}`));
      ok(known(deb, DEB_EXAMPLES), `${source} names examples/${path}, which the package lacks`);
      ok(
        known(archive, ARCHIVE_EXAMPLES),
        `${source} names examples/${path}, which the archive lacks`,
      );
    }
  }
  ok(seen >= 5, `${seen} examples/ paths named`);
});

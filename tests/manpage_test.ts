/**
 * The man page systemd/socket-proxyd.8 must stay in step with `--help`: the same options, with the
 * same value names and short forms, and the same defaults.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { HELP } from "../src/cli/cli.ts";

const root = new URL("../", import.meta.url);
const page = Deno.readTextFileSync(new URL("systemd/socket-proxyd.8", root));
const config = JSON.parse(Deno.readTextFileSync(new URL("deno.json", root)));

/** The words of a macro line's arguments, with roff's double quotes honoured. */
function macroArgs(text: string): string[] {
  return [...text.matchAll(/"((?:[^"]|"")*)"|(\S+)/g)].map((m) =>
    m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2]
  );
}

/** Removes roff's escapes: fonts, the minus sign, zero-width and continuation marks. */
function unescape(text: string): string {
  return text
    .replace(/\\f(\(..|\[[^\]]*\]|.)/g, "")
    .replaceAll("\\-", "-")
    .replaceAll("\\&", "")
    .replaceAll("\\c", "")
    .replaceAll("\\e", "\\")
    .replace(
      /\\\((>=|lq|rq|em|en)/g,
      (_, name: string) => ({ ">=": "≥", lq: "“", rq: "”", em: "—", en: "–" })[name] ?? "",
    );
}

/** One roff line as plain text: font macros render their arguments, other requests vanish. */
function renderLine(line: string): string | null {
  const macro = /^\.([A-Z]{1,2})(?:\s+(.*))?$/.exec(line);
  if (!macro) return line.startsWith(".") ? null : unescape(line);
  const [, name, rest = ""] = macro;
  const args = macroArgs(rest).map(unescape);
  // .B and .I set their arguments in one font, separated by spaces; the alternating macros
  // (.BR, .IR, .RB, .BI, ...) join them without spaces.
  if (name === "B" || name === "I") return args.join(" ");
  if (/^[BIR]{2}$/.test(name)) return args.join("");
  return null;
}

/** The man page's OPTIONS section: each `.TP` tag (as plain text) with the text under it. */
function manOptions(): Array<{ tag: string; body: string }> {
  const lines = page.split("\n");
  const start = lines.indexOf(".SH OPTIONS");
  ok(start >= 0, "the man page has an OPTIONS section");
  const end = lines.findIndex((line, i) => i > start && line.startsWith(".SH "));
  const options: Array<{ tag: string; body: string[] }> = [];
  for (let i = start + 1; i < end; i++) {
    if (lines[i] === ".TP") {
      options.push({ tag: renderLine(lines[++i]) ?? "", body: [] });
    } else if (options.length > 0) {
      const text = renderLine(lines[i]);
      if (text !== null) options.at(-1)!.body.push(text);
    }
  }
  return options.map(({ tag, body }) => ({ tag, body: body.join(" ") }));
}

/** The option lines of HELP: long option with its value, short form, and stated default. */
function helpOptions(): Array<{ long: string; short: string | null; defaultValue: string | null }> {
  const blocks = HELP.split("\n").reduce<string[]>((acc, line) => {
    if (/^\s+(-\w\s+)?--/.test(line)) acc.push(line);
    else if (acc.length > 0 && /^\s{20,}\S/.test(line)) acc[acc.length - 1] += ` ${line.trim()}`;
    return acc;
  }, []);
  return blocks.map((block) => {
    const [, short = null, long] = /^\s+(?:-(\w)\s+)?(--\S+)/.exec(block)!;
    const defaultValue = /\(default: ([^;)]+)/.exec(block)?.[1] ?? null;
    return { long, short, defaultValue };
  });
}

const fromHelp = helpOptions();
const fromPage = manOptions();
const longOf = (tag: string) => [...tag.matchAll(/--[a-z][a-z-]*(?:=\S+)?/g)].map((m) => m[0]);

Deno.test("the parsers find the options", () => {
  ok(fromHelp.length >= 10, `HELP: ${fromHelp.length} options`);
  ok(fromPage.length >= 10, `man page: ${fromPage.length} options`);
  ok(fromHelp.some((o) => o.long === "--connections-max=N" && o.short === "c"));
  equal(renderLine(".BR \\-\\-proxy\\-protocol=v1 | v2"), "--proxy-protocol=v1|v2");
});

Deno.test("every option in --help is in the man page, with the same value and short form", () => {
  for (const { long, short } of fromHelp) {
    const entry = fromPage.find(({ tag }) => longOf(tag).includes(long));
    ok(entry, `the man page's OPTIONS lack ${long} (tags: ${fromPage.map((o) => o.tag)})`);
    if (short !== null) {
      ok(
        new RegExp(`(^|\\s)-${short}\\b`).test(entry.tag),
        `${long}: no -${short} in the man page`,
      );
    }
  }
});

Deno.test("the man page documents no option that --help lacks", () => {
  const help = new Set(fromHelp.map((o) => o.long));
  deepEqual(fromPage.flatMap(({ tag }) => longOf(tag)).filter((long) => !help.has(long)), []);
});

Deno.test("the man page states the defaults --help states", () => {
  for (const { long, defaultValue } of fromHelp) {
    if (defaultValue === null) continue;
    const entry = fromPage.find(({ tag }) => longOf(tag).includes(long))!;
    ok(
      entry.body.includes(defaultValue),
      `${long}: default ${defaultValue} not in "${entry.body}"`,
    );
  }
});

Deno.test("the man page's version is the package's", () => {
  ok(page.includes(`"socket-proxyd ${config.version}"`), `.TH names version ${config.version}`);
});

Deno.test("the man page has no control characters (a \\f written as a form feed rendered @NAMER.)", () => {
  const found = page.split("\n").flatMap((text, i) =>
    [...text].filter((c) => (c < " " && c !== "\t") || c === "\x7f")
      .map((c) => `line ${i + 1}: U+${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
  );
  deepEqual(found, []);
});

Deno.test("the SYNOPSIS names every target form --help names, and --config=FILE", () => {
  const synopsis = page.slice(page.indexOf(".SH SYNOPSIS"), page.indexOf(".SH DESCRIPTION"))
    .split("\n").map(renderLine).filter((line) => line !== null).join(" ");
  const forms = /\{([^}]*)\}/.exec(HELP.split("\n")[0])![1].split("|");
  for (const form of forms) ok(synopsis.includes(form), `${form} in "${synopsis}"`);
  ok(synopsis.includes("--config=FILE"), synopsis);
});

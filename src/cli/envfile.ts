/**
 * systemd's environment file syntax (`EnvironmentFile=`, systemd.exec(5)), and its splitting
 * of `$VARIABLE` into words on an `ExecStart=` line. Pure: no I/O.
 * @module
 */

/** The text is not a valid environment file, or a value does not split into words. */
export class EnvFileError extends Error {
  override name = "EnvFileError";
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const BLANK = " \t";
/** What a backslash escapes inside double quotes; before anything else it stays itself. */
const DOUBLE_QUOTE_ESCAPES = '"\\`$';

/**
 * Reads one value from `text` at `i` (just after the `=`), to the end of its line, as systemd's
 * state machine does: quotes count only where a value (or a quoted part of it) starts.
 */
function readValue(text: string, i: number, line: number): { value: string; next: number } {
  let value = "";
  let unquoted = false; // inside an unquoted run, whose trailing blanks are dropped
  let keep = 0; // the length of the value without those blanks
  for (; i < text.length && text[i] !== "\n"; i++) {
    const c = text[i];
    if (!unquoted && BLANK.includes(c)) continue;
    if (!unquoted && (c === "'" || c === '"')) {
      const end = c === "'" ? text.indexOf("'", i + 1) : closingDoubleQuote(text, i + 1);
      if (end < 0) throw new EnvFileError(`line ${line}: a ${c} quote is not closed`);
      const quoted = text.slice(i + 1, end);
      value += c === "'" ? quoted : unescapeDoubleQuoted(quoted);
      keep = value.length;
      i = end;
      continue;
    }
    unquoted = true;
    if (c === "\\") {
      i++;
      if (i < text.length && text[i] !== "\n") value += text[i];
      keep = value.length;
    } else {
      value += c;
      if (!`${BLANK}\r`.includes(c)) keep = value.length;
    }
  }
  return { value: value.slice(0, keep), next: i + 1 };
}

function closingDoubleQuote(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}

function unescapeDoubleQuoted(quoted: string): string {
  let out = "";
  for (let i = 0; i < quoted.length; i++) {
    const next = quoted[i + 1];
    if (quoted[i] === "\\" && next === "\n") i++;
    else if (quoted[i] === "\\" && DOUBLE_QUOTE_ESCAPES.includes(next)) out += quoted[++i];
    else out += quoted[i];
  }
  return out;
}

/**
 * Parses an environment file as systemd does: `NAME=VALUE` lines; blank lines and lines that
 * start with `#` or `;` are ignored; blanks around the name and the value's leading blanks are
 * dropped; in the value, '…' keeps everything literally, "…" too but for `\"`, `\\`, `` \` ``,
 * `\$` and a backslash-newline; elsewhere a backslash keeps the next character and a
 * backslash-newline continues the value on the next line; unquoted trailing blanks are dropped.
 * The last assignment of a name wins.
 *
 * Stricter than systemd, which ignores such lines: a line without `=` or with an invalid name
 * is an error.
 *
 * @throws {EnvFileError} naming the line.
 */
export function parseEnvironmentFile(text: string): Map<string, string> {
  const variables = new Map<string, string>();
  let i = 0;
  while (i < text.length) {
    const newline = text.indexOf("\n", i);
    const end = newline < 0 ? text.length : newline;
    const content = text.slice(i, end).replace(/^[ \t\r]+/, "");
    if (content === "" || content.startsWith("#") || content.startsWith(";")) {
      i = end + 1;
      continue;
    }
    const line = lineAt(text, i);
    const eq = text.indexOf("=", i);
    if (eq < 0 || eq > end) {
      throw new EnvFileError(`line ${line}: expected NAME=VALUE, got ${JSON.stringify(content)}`);
    }
    const name = text.slice(i, eq).trim();
    if (!NAME.test(name)) {
      throw new EnvFileError(`line ${line}: ${JSON.stringify(name)} is not a variable name`);
    }
    let start = eq + 1;
    while (start < text.length && BLANK.includes(text[start])) start++;
    const { value, next } = readValue(text, start, line);
    variables.set(name, value);
    i = next;
  }
  return variables;
}

function lineAt(text: string, i: number): number {
  return text.slice(0, i).split("\n").length;
}

/**
 * Splits a value into words as systemd splits `$VARIABLE` on an `ExecStart=` line: at runs of
 * blanks and newlines; '…' and "…" keep what they enclose, blanks included, in the word; a
 * backslash keeps the next character.
 *
 * @throws {EnvFileError} for a quote that is not closed.
 */
export function splitWords(value: string): string[] {
  const words: string[] = [];
  let word: string | null = null;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (" \t\n\r".includes(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else if (c === "'" || c === '"') {
      const end = value.indexOf(c, i + 1);
      if (end < 0) throw new EnvFileError(`a ${c} quote is not closed in ${JSON.stringify(value)}`);
      word = (word ?? "") + value.slice(i + 1, end);
      i = end;
    } else if (c === "\\" && i + 1 < value.length) {
      word = (word ?? "") + value[++i];
    } else {
      word = (word ?? "") + c;
    }
  }
  if (word !== null) words.push(word);
  return words;
}

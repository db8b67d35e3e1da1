import { deepEqual, throws } from "node:assert/strict";
import { EnvFileError, parseEnvironmentFile, splitWords } from "../../src/cli/envfile.ts";

const parse = (text: string) => Object.fromEntries(parseEnvironmentFile(text));

function refuses(text: string, message: string): void {
  throws(() => parseEnvironmentFile(text), (e: unknown) => {
    if (!(e instanceof EnvFileError)) return false;
    deepEqual(e.message, message);
    return true;
  });
}

Deno.test("parseEnvironmentFile: NAME=VALUE lines, comments and blank lines", () => {
  deepEqual(parse(""), {});
  deepEqual(parse("\n\n  \n\t\n"), {});
  deepEqual(parse("# a comment\n; another\n  # indented\nA=1\n"), { A: "1" });
  deepEqual(parse("A=1\nB=two words\nC="), { A: "1", B: "two words", C: "" });
  deepEqual(parse("A=1\r\nB=2\r\n"), { A: "1", B: "2" });
  deepEqual(parse("A=#not a comment"), { A: "#not a comment" });
  deepEqual(parse("A=1\nA=2"), { A: "2" });
  deepEqual(parse("_x9=ok"), { _x9: "ok" });
});

Deno.test("parseEnvironmentFile: blanks around the name and before the value are dropped", () => {
  deepEqual(parse("  A = 1"), { A: "1" });
  deepEqual(parse("A=\t  spaced   "), { A: "spaced" });
  deepEqual(parse("A=a  b  "), { A: "a  b" });
});

Deno.test("parseEnvironmentFile: quotes", () => {
  deepEqual(parse(`A="two words"`), { A: "two words" });
  deepEqual(parse(`A='two words'`), { A: "two words" });
  deepEqual(parse(`A="  kept  "`), { A: "  kept  " });
  deepEqual(parse(`A='a "b" c'`), { A: 'a "b" c' });
  deepEqual(parse(`A="a 'b' c"`), { A: "a 'b' c" });
  // As systemd: quotes count only where the value, or a quoted part of it, starts.
  deepEqual(parse(`A=x"y z"w`), { A: 'x"y z"w' });
  deepEqual(parse(`A=a'b c'd`), { A: "a'b c'd" });
  deepEqual(parse(`A='x'  y`), { A: "xy" });
  deepEqual(parse(`A= "q" 'r' s  `), { A: "qrs" });
  deepEqual(parse(`A='\\n'`), { A: "\\n" });
  deepEqual(parse(`A="\\" \\\\ \\$ \\\` \\n"`), { A: '" \\ $ ` \\n' });
  deepEqual(parse(`A="multi\nline"`), { A: "multi\nline" });
  deepEqual(parse(`A="joined\\\nhere"`), { A: "joinedhere" });
  deepEqual(parse(`A='x'  \nB=2`), { A: "x", B: "2" });
  deepEqual(parse(`OPTIONS="--exit-idle-time='5min 20s' -v"`), {
    OPTIONS: "--exit-idle-time='5min 20s' -v",
  });
});

Deno.test("parseEnvironmentFile: backslashes outside quotes", () => {
  deepEqual(parse("A=a\\ b"), { A: "a b" });
  deepEqual(parse("A=a\\\\b"), { A: "a\\b" });
  deepEqual(parse("A=a\\\nb\nC=3"), { A: "ab", C: "3" });
  deepEqual(parse("A=end\\"), { A: "end" });
  deepEqual(parse("A=x\\  "), { A: "x " });
});

Deno.test("parseEnvironmentFile: errors name the line", () => {
  refuses("A=1\nnonsense\n", 'line 2: expected NAME=VALUE, got "nonsense"');
  refuses("# c\n\n  B 2", 'line 3: expected NAME=VALUE, got "B 2"');
  refuses("=1", 'line 1: "" is not a variable name');
  refuses("1A=1", 'line 1: "1A" is not a variable name');
  refuses("A-B=1", 'line 1: "A-B" is not a variable name');
  refuses("export A=1", 'line 1: "export A" is not a variable name');
  refuses('A=1\nB="open\n', 'line 2: a " quote is not closed');
  refuses("A='open", "line 1: a ' quote is not closed");
  refuses('A="x\nB=1\nC=2 x\nbad', 'line 1: a " quote is not closed');
  refuses('A="multi\nline"\nbad', 'line 3: expected NAME=VALUE, got "bad"');
  refuses("A=a\\\nb\nbad", 'line 3: expected NAME=VALUE, got "bad"');
});

Deno.test("splitWords: as systemd splits $OPTIONS", () => {
  deepEqual(splitWords(""), []);
  deepEqual(splitWords("   "), []);
  deepEqual(splitWords("-v"), ["-v"]);
  deepEqual(splitWords("  -c 5\t--exit-idle-time=5min\n-v "), [
    "-c",
    "5",
    "--exit-idle-time=5min",
    "-v",
  ]);
  deepEqual(splitWords("--exit-idle-time=5min 20s"), ["--exit-idle-time=5min", "20s"]);
  deepEqual(splitWords("--exit-idle-time='5min 20s' -c 5"), [
    "--exit-idle-time=5min 20s",
    "-c",
    "5",
  ]);
  deepEqual(splitWords(`--exit-idle-time="5min 20s"`), ["--exit-idle-time=5min 20s"]);
  deepEqual(splitWords(`"a b"'c d'e`), ["a bc de"]);
  deepEqual(splitWords(`'' ""`), ["", ""]);
  deepEqual(splitWords(`a\\ b c`), ["a b", "c"]);
  deepEqual(splitWords(`a\\`), ["a\\"]);
  deepEqual(splitWords(`"it's"`), ["it's"]);
});

Deno.test("splitWords: a quote that is not closed is an error", () => {
  throws(() => splitWords("--exit-idle-time='5min"), {
    name: "EnvFileError",
    message: `a ' quote is not closed in "--exit-idle-time='5min"`,
  });
  throws(() => splitWords('"'), {
    name: "EnvFileError",
    message: 'a " quote is not closed in "\\""',
  });
});

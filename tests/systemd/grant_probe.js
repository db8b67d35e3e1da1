// Run by the wrapper (systemd/socket-proxyd) in place of the program, with SOCKET_PROXYD_PROGRAM
// pointing here, by tests/systemd/wrapper_test.ts and tests/systemd/user.sh: prints on stderr, one
// line per path, what the Deno permissions the wrapper gave let it do there,
//   grant PATH: write=granted read=prompt
// for the notification socket NOTIFY_SOCKET names and the places around it, the journal's
// socket and its directory, the system manager's notification socket, /tmp, /, the file of
// --config= and its directory. Querying needs no permission, and nothing is opened. Plain
// JavaScript: the wrapper runs it with --no-config.

const notify = Deno.env.get("NOTIFY_SOCKET") ?? "";
const config = Deno.args.find((arg) => arg.startsWith("--config="))?.slice("--config=".length);
const parent = (path) => path.slice(0, path.lastIndexOf("/")) || "/";

const paths = new Set(["/run/systemd/notify", "/run/systemd/journal/socket", "/tmp", "/"]);
paths.add(parent("/run/systemd/journal/socket"));
if (notify.startsWith("/")) {
  paths.add(notify).add(`${notify}-sibling`).add(parent(notify)).add(parent(parent(notify)));
}
if (config !== undefined) paths.add(config).add(parent(config));

for (const path of paths) {
  const write = Deno.permissions.querySync({ name: "write", path }).state;
  const read = Deno.permissions.querySync({ name: "read", path }).state;
  console.error(`grant ${path}: write=${write} read=${read}`);
}

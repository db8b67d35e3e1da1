/**
 * Ctrl-C in a real terminal: the proxy runs in a pseudo-terminal (`script`), started the two ways
 * the README gives, `deno task socket-activate` and `systemd-socket-activate` directly, with a
 * client connected; the test types Ctrl-C (byte 0x03) into the terminal, whose line discipline
 * signals the whole foreground process group, so under `deno task` the proxy gets SIGINT from the
 * terminal and may get `deno task`'s forwarded copy too. One press: one graceful drain, the
 * client still served. A second press after the repeat window: exit at once.
 */
import { equal, ok } from "node:assert/strict";
import { REPEAT_WINDOW_MS } from "../../src/service/signals.ts";
import { echoBackend, freePort, ping, ROOT } from "./harness.ts";

const CTRL_C = new Uint8Array([3]);

/** A command running in a pseudo-terminal, its output (CRs dropped) collected as it arrives. */
class Terminal {
  readonly #child: Deno.ChildProcess;
  readonly #keys: WritableStreamDefaultWriter<Uint8Array>;
  #output = "";
  #waiters: Array<() => void> = [];
  readonly #done: Promise<void>;

  constructor(command: string, env: Record<string, string>) {
    // `exec`: the shell `script` starts must not stay in the terminal's foreground group, where
    // it would get the Ctrl-C too (dash, the usual /bin/sh, does not exec a lone command itself).
    // An interactive shell keeps itself out of that group the same way, by job control.
    this.#child = new Deno.Command("script", {
      args: ["-q", "-e", "-c", `exec ${command}`, "/dev/null"],
      cwd: ROOT,
      clearEnv: true,
      env: { SHELL: "/bin/sh", ...env },
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#keys = this.#child.stdin.getWriter();
    const stdout = this.#child.stdout;
    this.#done = (async () => {
      for await (const chunk of stdout.pipeThrough(new TextDecoderStream())) {
        this.#output += chunk.replaceAll("\r", "");
        for (const wake of this.#waiters.splice(0)) wake();
      }
    })();
  }

  get output(): string {
    return this.#output;
  }

  /** Types `keys` into the terminal. */
  type(keys: Uint8Array): Promise<void> {
    return this.#keys.write(keys);
  }

  /** Resolves once the output contains `text`; fails if the command ends first. */
  async waitFor(text: string): Promise<void> {
    while (!this.#output.includes(text)) {
      const more = new Promise<void>((resolve) => this.#waiters.push(resolve));
      const ended = this.#done.then(() => "ended");
      if (await Promise.race([more, ended]) === "ended" && !this.#output.includes(text)) {
        throw new Error(`the command ended without printing "${text}":\n${this.#output}`);
      }
    }
  }

  /** Waits for the command to end; returns its exit status. */
  async exit(): Promise<number> {
    await this.#keys.close().catch(() => {});
    const { code } = await this.#child.status;
    await this.#done;
    return code;
  }
}

const STOPPING = "Received SIGINT, stopping: no longer accepting; 1 connection(s) open";
const AGAIN = "Received SIGINT again, exiting at once.";

/** The two ways to start it, each given the proxy's port and the backend's. */
const launches: Record<
  string,
  (port: number, backend: number) => [string, Record<string, string>]
> = {
  "deno task socket-activate": (port, backend) => [
    `deno task socket-activate 127.0.0.1:${backend}`,
    { LISTEN: `127.0.0.1:${port}` },
  ],
  "systemd-socket-activate": (port, backend) => [
    `systemd-socket-activate --listen=127.0.0.1:${port} deno run -q -P=proxy main.ts ` +
    `127.0.0.1:${backend}`,
    {},
  ],
};

/** Starts the proxy in a terminal behind `launch`, with one client connected through it. */
async function started(launch: string) {
  const backend = echoBackend({ hostname: "127.0.0.1", port: 0 });
  const backendPort = (backend.listener.addr as Deno.NetAddr).port;
  const port = freePort();
  const [command, env] = launches[launch](port, backendPort);
  const terminal = new Terminal(command, {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/tmp",
    TERM: "dumb",
    ...env,
  });
  // systemd-socket-activate starts the program on the first connection.
  await terminal.waitFor(`Listening on 127.0.0.1:${port}`);
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  ok(await ping(client, 1), "the client is served");
  await terminal.waitFor("Forwarding ");
  return { backend, client, terminal };
}

for (const launch of Object.keys(launches)) {
  Deno.test(`${launch}, in a terminal: one Ctrl-C drains, with the client still served`, async () => {
    const { backend, client, terminal } = await started(launch);
    await terminal.type(CTRL_C);
    await terminal.waitFor(STOPPING);
    // Any copy of that SIGINT came within milliseconds; the client is still served after it.
    ok(await ping(client, 2), `the client is served while draining:\n${terminal.output}`);
    client.close();
    await terminal.waitFor("Stopped: 1 connection(s) served, none cut off.");
    const status = await terminal.exit();
    equal(status, 0, `exit status ${status}:\n${terminal.output}`);
    ok(!terminal.output.includes("again"), `one press was taken for two:\n${terminal.output}`);
    equal(terminal.output.split(STOPPING).length, 2, terminal.output);
    await backend.close();
  });

  Deno.test(`${launch}, in a terminal: a second Ctrl-C, pressed later, exits at once`, async () => {
    const { backend, client, terminal } = await started(launch);
    await terminal.type(CTRL_C);
    await terminal.waitFor(STOPPING);
    ok(await ping(client, 2), "the client is served while draining");
    // The second press, as a person makes it: after the copies of the first could arrive.
    await new Promise((resolve) => setTimeout(resolve, REPEAT_WINDOW_MS + 200));
    await terminal.type(CTRL_C);
    await terminal.waitFor(AGAIN);
    const status = await terminal.exit();
    equal(status, 0, `exit status ${status}:\n${terminal.output}`);
    const stopping = terminal.output.indexOf(STOPPING);
    ok(stopping >= 0 && terminal.output.indexOf(AGAIN) > stopping, terminal.output);
    ok(!terminal.output.includes("Stopped: "), "it did not wait for the client");
    client.close();
    await backend.close();
  });
}

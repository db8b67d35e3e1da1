/**
 * The scenario of `--transparent`, in network namespaces of the test's own (the tests run as
 * root): as in socket-proxyd(8)'s second scenario, the listening sockets are bound in a "host"
 * namespace, the proxy runs in the backend's own namespace (as `JoinsNamespaceOf=` puts it), and
 * the client sits in a third one, linked to the host's. The backend (peer.py) answers every client
 * with the address it sees. Every namespace is held by a process of the test's, and goes with it.
 * @module
 */
import { DENO_RUN, MAIN, Process, ROOT } from "./harness.ts";

/** The backend and client that tell the address seen (see the file). */
export const PEER_PY = `${ROOT}tests/integration/peer.py`;

/** The host's addresses on the client's link, and the clients'. */
export const HOST_V4 = "10.53.0.1";
export const HOST_V6 = "fd53::1";
export const CLIENTS_V4 = ["10.53.0.2", "10.53.0.3"] as const;
export const CLIENTS_V6 = ["fd53::2", "fd53::3"] as const;

/** The backend's port, on 127.0.0.1 and [::1] in its namespace. */
export const BACKEND_PORT = 5301;

/** The route that brings the backend's replies to the proxy's transparent sockets. */
export const LOCAL_ROUTES =
  "ip route add local default dev lo\nip -6 route add local default dev lo";

/**
 * The same for a backend on the host's own network (socket-proxyd(8), TRANSPARENT): what the
 * host sends from its loopback addresses to elsewhere, which only the backend's replies to
 * clients are, is delivered locally.
 */
export const POLICY_ROUTES = `ip rule add from 127.0.0.1 iif lo lookup 100
ip route add local default dev lo table 100
ip -6 rule add from ::1 iif lo lookup 100
ip -6 route add local default dev lo table 100`;

/** A network namespace, held by a process of the test's (`unshare --net ... sleep`). */
export class Namespace {
  private constructor(readonly holder: Process) {}

  /** A new namespace with its loopback up, then `setup` (shell, `ip` commands) run in it. */
  static async create(setup = ""): Promise<Namespace> {
    const holder = new Process("unshare", [
      "--net",
      "--",
      "sh",
      "-ec",
      `ip link set lo up\n${setup}\necho ready >&2\nexec sleep infinity`,
    ]);
    await holder.waitForLog(/^ready$/m);
    return new Namespace(holder);
  }

  /** The holder's pid, which names the namespace. */
  get pid(): number {
    return this.holder.child.pid;
  }

  /** A command prefix that runs the rest in this namespace. */
  get enter(): string[] {
    return ["nsenter", `--net=/proc/${this.pid}/ns/net`, "--"];
  }

  /** Runs a shell script in the namespace. @throws with its output when it fails. */
  async sh(script: string): Promise<void> {
    const [command, ...args] = [...this.enter, "sh", "-ec", script];
    const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
      .output();
    if (!output.success) {
      throw new Error(`${script}:\n${new TextDecoder().decode(output.stderr)}`);
    }
  }

  /** Ends the holder (by its pid): the namespace goes once nothing else is in it. */
  async close(): Promise<void> {
    await this.holder.stop();
  }
}

/**
 * Links the host's namespace to the client's with a veth pair: the host has {@link HOST_V4} and
 * {@link HOST_V6}, the client every address of {@link CLIENTS_V4} and {@link CLIENTS_V6}.
 */
export async function linkClient(host: Namespace, client: Namespace): Promise<void> {
  await host.sh(`ip link add vhost type veth peer name vclient netns ${client.pid}
    ip addr add ${HOST_V4}/24 dev vhost
    ip -6 addr add ${HOST_V6}/64 dev vhost nodad
    ip link set vhost up`);
  await client.sh(`${CLIENTS_V4.map((a) => `ip addr add ${a}/24 dev vclient`).join("\n")}
    ${CLIENTS_V6.map((a) => `ip -6 addr add ${a}/64 dev vclient nodad`).join("\n")}
    ip link set vclient up`);
}

/** What the client got: the address the backend saw, and where the answer came from. */
export interface Answer {
  saw?: string;
  from?: string;
  first?: string;
  timeout?: boolean;
  closed?: boolean;
}

/** The scenario: three namespaces, the backends, and the proxy under `systemd-socket-activate`. */
export class Scenario {
  private constructor(
    readonly protocol: "udp" | "tcp",
    readonly host: Namespace,
    readonly client: Namespace,
    readonly backendNamespace: Namespace,
    readonly backends: Process[],
    readonly proxy: Process,
  ) {}

  /**
   * Starts it all.
   * @param options.protocol the backends' and listeners' protocol.
   * @param options.listen addresses for `systemd-socket-activate --listen=`, in the host's
   * namespace; none: the proxy is started without it (and listens itself, `--listen=`).
   * @param options.args the proxy's arguments.
   * @param options.routes `ip` commands for the backend's namespace (default: {@link LOCAL_ROUTES}).
   * @param options.onHost the backend and the proxy in the host's namespace (with `routes`), as on
   * a host without namespaces.
   * @param options.fdnames names of the listening sockets.
   * @param options.prefix a command run before the proxy, in the backend's namespace, that execs
   * its arguments (`setpriv ...`).
   * @param options.command the proxy's command line before its arguments (default: Deno with
   * the deployment permissions, and the program).
   */
  static async start(options: {
    protocol: "udp" | "tcp";
    listen: string[];
    args: string[];
    routes?: string;
    fdnames?: string[];
    onHost?: boolean;
    prefix?: string[];
    command?: string[];
  }): Promise<Scenario> {
    const started: Array<{ close(): Promise<void> }> = [];
    const hold = <T extends { close(): Promise<void> }>(thing: T) => (started.push(thing), thing);
    try {
      const routes = options.routes ?? LOCAL_ROUTES;
      const host = hold(await Namespace.create(options.onHost ? routes : ""));
      const client = hold(await Namespace.create());
      const backendNamespace = options.onHost ? host : hold(await Namespace.create(routes));
      await linkClient(host, client);
      const backends: Process[] = [];
      for (const address of ["127.0.0.1", "::1"]) {
        const [command, ...args] = [
          ...backendNamespace.enter,
          "python3",
          PEER_PY,
          "serve",
          options.protocol,
          address,
          String(BACKEND_PORT),
        ];
        const backend = new Process(command, args);
        hold({ close: () => backend.stop() });
        backends.push(backend);
        await backend.waitForLog(/^ready$/m);
      }
      const activate = options.listen.length === 0 ? [] : [
        `--net=/proc/${host.pid}/ns/net`,
        "--",
        "systemd-socket-activate",
        ...(options.protocol === "udp" ? ["--datagram"] : []),
        ...options.listen.map((address) => `--listen=${address}`),
        ...(options.fdnames ? [`--fdname=${options.fdnames.join(":")}`] : []),
        "--",
        "nsenter",
      ];
      const proxy = new Process("nsenter", [
        ...activate,
        ...backendNamespace.enter.slice(1),
        ...options.prefix ?? [],
        ...options.command ?? [...DENO_RUN, MAIN],
        ...options.args,
      ]);
      hold({ close: () => proxy.stop() });
      for (const _ of options.listen) await proxy.waitForLog(/Listening on .* as \d+\./);
      if (options.listen.length === 0) await proxy.waitForLog(/^Forwarding /m);
      return new Scenario(options.protocol, host, client, backendNamespace, backends, proxy);
    } catch (e) {
      for (const thing of started.reverse()) await thing.close();
      throw e;
    }
  }

  /**
   * Asks the backend through the proxy from the client's namespace: `to` is "HOST:PORT" or
   * "[IPV6]:PORT" in the host's namespace, `from` the client's address to bind, with `port`
   * (0: the kernel picks one).
   */
  async ask(to: string, from: string, port = 0, timeoutSeconds = 20): Promise<Answer> {
    const at = to.lastIndexOf(":");
    const [command, ...args] = [
      ...this.client.enter,
      "python3",
      PEER_PY,
      "ask",
      this.protocol,
      to.slice(0, at).replace(/^\[(.*)\]$/, "$1"),
      to.slice(at + 1),
      `--bind=${from.includes(":") ? `[${from}]` : from}:${port}`,
      `--timeout=${timeoutSeconds}`,
    ];
    const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
      .output();
    const text = new TextDecoder().decode(output.stdout).trim();
    if (text === "") throw new Error(`peer.py ask: ${new TextDecoder().decode(output.stderr)}`);
    return JSON.parse(text);
  }

  /** Every peer the backends logged ("10.53.0.2:41234", "[fd53::2]:41234"). */
  get peersSeen(): string[] {
    return this.backends.flatMap((backend) =>
      [...backend.stderr.matchAll(/^peer (.*)$/gm)].map((m) => m[1])
    );
  }

  /** Stops the proxy and the backends (by their pids), and lets the namespaces go. */
  async close(): Promise<void> {
    await this.proxy.stop();
    for (const backend of this.backends) await backend.stop();
    for (const namespace of new Set([this.client, this.backendNamespace, this.host])) {
      await namespace.close();
    }
  }
}

/** The address the backend saw, from an answer that must have come. */
export function seen(answer: Answer): string {
  if (answer.saw === undefined) throw new Error(`no answer: ${JSON.stringify(answer)}`);
  return answer.saw;
}

/** The address of a peer as peer.py writes it ("10.53.0.2:4000" → "10.53.0.2", "[::1]:1" → "::1"). */
export function hostOf(peer: string): string {
  return peer.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
}

/** The port of a peer as peer.py writes it. */
export function portOf(peer: string): number {
  return Number(peer.slice(peer.lastIndexOf(":") + 1));
}

/** As a DynamicUser= unit with AmbientCapabilities=CAP_NET_ADMIN runs it (uid 65534 here). */
export const AS_SERVICE: readonly string[] = [
  "setpriv",
  "--reuid=65534",
  "--regid=65534",
  "--clear-groups",
  "--bounding-set=-all,+net_admin",
  "--inh-caps=-all,+net_admin",
  "--ambient-caps=-all,+net_admin",
  "--no-new-privs",
  "--",
];

/**
 * The packaged wrapper (systemd/socket-proxyd) over the one-file program, where uid 65534 can run
 * it: this Deno, the bundle and the wrapper, linked (or copied) into a fresh directory everyone
 * may read. The checkout or Deno's own directory may not be readable by others (a clone in a
 * 0700 directory, a Deno from npx under /root). {@link PackagedCopy.close} removes it.
 */
export class PackagedCopy {
  private constructor(readonly directory: string) {}

  /** @throws {Error} when `deno task bundle` has not made the bundle. */
  static create(): PackagedCopy {
    const bundle = `${ROOT}dist/socket-proxyd.js`;
    try {
      Deno.statSync(bundle);
    } catch {
      throw new Error(`${bundle} is missing: run deno task bundle first (deno task test does)`);
    }
    const directory = Deno.makeTempDirSync({ prefix: "socket-proxyd-packaged-" });
    Deno.chmodSync(directory, 0o755);
    place(Deno.execPath(), `${directory}/deno`);
    place(bundle, `${directory}/socket-proxyd.js`);
    place(`${ROOT}systemd/socket-proxyd`, `${directory}/socket-proxyd`);
    return new PackagedCopy(directory);
  }

  /** The proxy's command line before its arguments: the wrapper running this Deno and the bundle. */
  get command(): string[] {
    return [
      "env",
      `SOCKET_PROXYD_DENO=${this.directory}/deno`,
      `SOCKET_PROXYD_PROGRAM=${this.directory}/socket-proxyd.js`,
      "sh",
      `${this.directory}/socket-proxyd`,
    ];
  }

  /** Removes the directory. */
  close(): void {
    Deno.removeSync(this.directory, { recursive: true });
  }
}

/** A hard link of `from` at `to`, or a copy across file systems. */
function place(from: string, to: string): void {
  try {
    Deno.linkSync(from, to);
  } catch {
    Deno.copyFileSync(from, to);
  }
}

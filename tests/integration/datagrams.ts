/**
 * Datagram ends for the integration tests: UDP sockets of the test's own (Deno's), the Python
 * helper `dgram.py` for what Deno cannot do, a real DNS server (dnsmasq), and the proxy's
 * stop line and resources.
 * @module
 */
import { Process, ROOT } from "./harness.ts";

/** The Python helper (Unix clients without an address, big datagrams, network namespaces). */
export const DGRAM_PY = `${ROOT}tests/integration/dgram.py`;

/** A datagram and where it came from. */
export type Received = [Uint8Array, Deno.NetAddr];

/**
 * A UDP socket of the test's own. What arrives is queued for {@link next}, or, with `onDatagram`,
 * handed to it (an echo backend answers from there).
 */
export class UdpEnd {
  readonly socket: Deno.DatagramConn;
  /** Datagrams received so far. */
  received = 0;
  readonly #queue: Received[] = [];
  #waiters: Array<() => void> = [];
  readonly #loop: Promise<void>;

  constructor(
    hostname = "127.0.0.1",
    port = 0,
    onDatagram?: (data: Uint8Array, from: Deno.NetAddr, end: UdpEnd) => void,
  ) {
    const socket = Deno.listenDatagram({ transport: "udp", hostname, port });
    this.socket = socket;
    this.#loop = (async () => {
      try {
        for (;;) {
          const [data, from] = await socket.receive(new Uint8Array(65_536));
          this.received++;
          if (onDatagram) onDatagram(data, from as Deno.NetAddr, this);
          else this.#queue.push([data, from as Deno.NetAddr]);
          for (const wake of this.#waiters.splice(0)) wake();
        }
      } catch {
        // Closed.
      }
    })();
  }

  /** The port it is bound to. */
  get port(): number {
    return (this.socket.addr as Deno.NetAddr).port;
  }

  /** Sends one datagram. */
  async send(data: Uint8Array, hostname: string, port: number): Promise<void> {
    await this.socket.send(data as Uint8Array<ArrayBuffer>, { transport: "udp", hostname, port });
  }

  /** The next datagram received; rejects after `timeoutMs` without one. */
  async next(timeoutMs = 10_000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length === 0) {
      if (Date.now() > deadline) throw new Error(`no datagram within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return this.#queue.shift()!;
  }

  /** Resolves once `count` datagrams in all have been received. */
  async waitForReceived(count: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.received < count) {
      if (Date.now() > deadline) throw new Error(`${this.received} of ${count} datagrams`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 100);
      });
    }
  }

  /** Sends `data` to hostname:port and returns the reply. */
  async ask(
    data: Uint8Array,
    hostname: string,
    port: number,
    timeoutMs?: number,
  ): Promise<Received> {
    await this.send(data, hostname, port);
    return await this.next(timeoutMs);
  }

  /** Closes the socket. */
  async close(): Promise<void> {
    this.socket.close();
    await this.#loop;
  }
}

/** A UDP echo backend: every datagram goes back to its sender. */
export function udpEcho(hostname = "127.0.0.1", port = 0): UdpEnd {
  return new UdpEnd(hostname, port, (data, from, end) => {
    end.send(data, from.hostname, from.port).catch(() => {});
  });
}

/** Returns a UDP port that was free a moment ago. */
export function freeUdpPort(hostname = "127.0.0.1"): number {
  const socket = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const { port } = socket.addr as Deno.NetAddr;
  socket.close();
  return port;
}

/** Returns a port that was free a moment ago for both TCP and UDP on `hostname`. */
export function freeTcpUdpPort(hostname = "127.0.0.1"): number {
  for (;;) {
    const listener = Deno.listen({ hostname, port: 0 });
    const { port } = listener.addr as Deno.NetAddr;
    try {
      Deno.listenDatagram({ transport: "udp", hostname, port }).close();
      return port;
    } catch {
      // Taken for UDP: another.
    } finally {
      listener.close();
    }
  }
}

/** Runs `dgram.py echo ADDRESS` until stopped; resolves once it is bound. */
export async function pythonEcho(address: string, prefix: string[] = []): Promise<Process> {
  const [command, ...args] = [...prefix, "python3", DGRAM_PY, "echo", address];
  const process = new Process(command, args);
  await process.waitForLog(/^ready$/m);
  return process;
}

/** One reply as `dgram.py ask` reports it. */
export interface Asked {
  size?: number;
  intact?: boolean;
  from?: string;
  sent?: number;
  timeout?: boolean;
}

/** Runs `dgram.py ask ADDRESS OPTIONS...` and returns its reports, one per datagram. */
export async function pythonAsk(
  address: string,
  options: string[] = [],
  prefix: string[] = [],
): Promise<Asked[]> {
  const [command, ...args] = [...prefix, "python3", DGRAM_PY, "ask", address, ...options];
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  const lines = new TextDecoder().decode(output.stdout).split("\n").filter(Boolean);
  if (lines.length === 0) {
    throw new Error(`dgram.py ask printed nothing: ${new TextDecoder().decode(output.stderr)}`);
  }
  return lines.map((line) => JSON.parse(line));
}

/** The counts in the proxy's stop line. */
export interface StopCounts {
  connections: number;
  sessionsOpen: number;
  sessions: number;
  /** Sessions ended early for new clients. */
  evicted: number;
  forwarded: number;
  returned: number;
  undeliverable: number;
  /** To whom ("2 to the target, 1 to clients"), or "". */
  undeliverableTo: string;
  dropped: number;
  /** Why sessions were refused ("4 over --connections-max"), or "". */
  refusedBecause: string;
}

const STOP_LINE = new RegExp(
  "Stopped: (\\d+) connection\\(s\\) served, none cut off(?:, \\d+ failed to reach the target)?" +
    "(?:; \\d+ refused \\([^)]*\\))?; " +
    "(\\d+) session\\(s\\) open, (\\d+) served(?: \\((\\d+) ended early for new clients\\))?, " +
    "datagrams (\\d+) forwarded, (\\d+) returned, (\\d+) dropped(?: \\(([^)]*)\\))?" +
    "(?:, (\\d+) undeliverable \\(([^)]*)\\))?, none cut off\\.",
);

/** Sends SIGTERM, waits for the exit (0) and returns the stop line's counts. */
export async function stopProxy(proxy: Process): Promise<StopCounts> {
  proxy.child.kill("SIGTERM");
  const { code, stderr } = await proxy.exit();
  const match = STOP_LINE.exec(stderr);
  if (code !== 0 || match === null) {
    throw new Error(`exit ${code}, no stop line with datagram counts:\n${stderr}`);
  }
  const [connections, sessionsOpen, sessions, evicted, forwarded, returned, dropped] = match
    .slice(1, 8).map((n) => Number(n ?? 0));
  return {
    connections,
    sessionsOpen,
    sessions,
    evicted,
    forwarded,
    returned,
    dropped,
    refusedBecause: match[8] ?? "",
    undeliverable: Number(match[9] ?? 0),
    undeliverableTo: match[10] ?? "",
  };
}

/** How many file descriptors the process has open. */
export function fdCount(pid: number): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/** The process's resident set size, in KiB. */
export function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))![1]);
}

/** The TXT strings dnsmasq serves for big.test: 15 records of 250 bytes, an answer of ~4 KB. */
export const BIG_TXT: readonly string[] = Array.from(
  { length: 15 },
  (_, i) => String.fromCharCode(97 + i).repeat(250),
);

/** A real DNS server on 127.0.0.1:port (UDP and TCP): a.test is 192.0.2.1; big.test has TXT. */
export class Dnsmasq {
  readonly #process: Process;
  readonly #dir: string;

  private constructor(process: Process, dir: string, readonly port: number) {
    this.#process = process;
    this.#dir = dir;
  }

  /**
   * Starts it with a configuration of its own (and a pid file of its own), in the foreground;
   * `prefix` runs it through another command (`nsenter`, say).
   */
  static async start(port: number, prefix: string[] = []): Promise<Dnsmasq> {
    const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-dnsmasq-" });
    Deno.writeTextFileSync(
      `${dir}/dnsmasq.conf`,
      [
        `port=${port}`,
        "listen-address=127.0.0.1",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        `pid-file=${dir}/dnsmasq.pid`,
        "edns-packet-max=4096",
        "address=/a.test/192.0.2.1",
        ...BIG_TXT.map((text) => `txt-record=big.test,"${text}"`),
        "",
      ].join("\n"),
    );
    const [command, ...args] = [
      ...prefix,
      "/usr/sbin/dnsmasq",
      `--conf-file=${dir}/dnsmasq.conf`,
      "--no-daemon",
    ];
    const process = new Process(command, args);
    await process.waitForLog(/started, version/);
    return new Dnsmasq(process, dir, port);
  }

  /** Stops it (by its pid) and removes its directory. */
  async stop(): Promise<void> {
    await this.#process.stop();
    Deno.removeSync(this.#dir, { recursive: true });
  }
}

/** Runs a DNS client (`dig` or `kdig`) and returns what it printed. */
export async function dnsQuery(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`${command} ${args.join(" ")} failed:\n${text}`);
  return text;
}

/**
 * A DNS server of the test's own for names it is given (A records only; other names
 * NXDOMAIN): it can stall, holding every query until {@link TestDns.answer} is called, as an
 * unreachable or overloaded server does. The program under test reaches it through a
 * `resolv.conf` of its own ({@link TestDns.inNamespace}), never through the machine's.
 */
export class TestDns {
  /** Queries received so far, by name (others than the test's come, e.g. Deno's update check). */
  readonly queries = new Map<string, number>();
  readonly #socket: Deno.DatagramConn;
  readonly #loop: Promise<void>;
  #stalled = true;
  #delayMs = 0;
  #held: Array<() => Promise<void>> = [];
  readonly #dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-dns-" });

  /**
   * Serves on `address`:53 (a loopback address of its own: root may bind port 53 there).
   * @param names the A record of each name.
   * @param stalled whether queries are held from the start.
   */
  constructor(
    readonly address: string,
    readonly names: Readonly<Record<string, string>>,
    stalled = true,
  ) {
    this.#stalled = stalled;
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname: address, port: 53 });
    const socket = this.#socket;
    this.#loop = (async () => {
      try {
        for (;;) {
          const [query, from] = await socket.receive();
          const name = questionOf(query).name;
          this.queries.set(name, (this.queries.get(name) ?? 0) + 1);
          const reply = () =>
            socket.send(this.#answerTo(query) as Uint8Array<ArrayBuffer>, from).then(() => {});
          if (this.#stalled) this.#held.push(reply);
          else if (this.#delayMs > 0) setTimeout(() => reply().catch(() => {}), this.#delayMs);
          else await reply().catch(() => {});
        }
      } catch {
        // Closed.
      }
    })();
  }

  /**
   * Stops stalling: the held queries are answered now, and further ones after `delayMs` (a
   * slow server).
   */
  async answer(delayMs = 0): Promise<void> {
    this.#stalled = false;
    this.#delayMs = delayMs;
    for (const reply of this.#held.splice(0)) await reply().catch(() => {});
  }

  /**
   * A command prefix that runs a program in a mount namespace of its own whose
   * `/etc/resolv.conf` names only this server, waiting up to `timeoutS` for an answer.
   */
  inNamespace(timeoutS = 30): string[] {
    const conf = `${this.#dir}/resolv.conf`;
    Deno.writeTextFileSync(
      conf,
      `nameserver ${this.address}\noptions timeout:${timeoutS} attempts:1\n`,
    );
    return [
      "unshare",
      "--mount",
      "--",
      "sh",
      "-c",
      'mount --bind "$0" /etc/resolv.conf && exec "$@"',
      conf,
    ];
  }

  #answerTo(query: Uint8Array): Uint8Array {
    const { name, type, end } = questionOf(query);
    const address = this.names[name];
    const answer = address !== undefined && type === 1;
    const header = new Uint8Array(12);
    header.set(query.subarray(0, 2)); // ID
    header.set([0x85, address === undefined ? 0x83 : 0x80, 0, 1, 0, answer ? 1 : 0, 0, 0, 0, 0], 2);
    const record = answer
      ? [0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...address.split(".").map(Number)]
      : [];
    return new Uint8Array([...header, ...query.subarray(12, end), ...record]);
  }

  /** Closes it and removes its files. */
  async close(): Promise<void> {
    this.#socket.close();
    await this.#loop;
    Deno.removeSync(this.#dir, { recursive: true });
  }
}

/** The question of a DNS query: its name (lower case), type, and where it ends. */
function questionOf(query: Uint8Array): { name: string; type: number; end: number } {
  // Labels from offset 12 up to a zero byte, then QTYPE and QCLASS.
  let at = 12;
  const labels: string[] = [];
  while (at < query.length && query[at] !== 0) {
    labels.push(new TextDecoder().decode(query.subarray(at + 1, at + 1 + query[at])));
    at += 1 + query[at];
  }
  return {
    name: labels.join(".").toLowerCase(),
    type: (query[at + 1] << 8) | query[at + 2],
    end: at + 5,
  };
}

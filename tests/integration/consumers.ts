/**
 * Real PROXY protocol consumers for the tests: nginx and haproxy, each our own instance with its
 * own configuration, pid file, logs and a free loopback port in a temporary directory, in the
 * foreground, reporting the client address they were told about. They are stopped by their pid;
 * an nginx or haproxy of the machine (a Debian service on port 80, say) is never touched, and
 * never mistaken for ours: the pid file must name the process we started.
 * @module
 */
import { Process } from "./harness.ts";

/** A running consumer; its HTTP response body is "ADDRESS PORT". */
export interface Consumer {
  readonly port: number;
  stop(): Promise<void>;
}

async function waitForPort(port: number, process: Process): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  await process.stop();
  throw new Error(`consumer did not listen on ${port}:\n${process.stderr}`);
}

/**
 * Fails unless the pid file `path` names `process`: the listener on the port is ours. nginx
 * listens before it writes the file, so an empty or missing one is read again for a moment.
 */
async function checkPidFile(path: string, process: Process): Promise<void> {
  let pid = "";
  for (const deadline = performance.now() + 5000; pid === "" && performance.now() < deadline;) {
    try {
      pid = Deno.readTextFileSync(path).trim();
    } catch {
      // Not written yet.
    }
    if (pid === "") await new Promise((resolve) => setTimeout(resolve, 10));
  }
  if (pid !== String(process.child.pid)) {
    await process.stop();
    throw new Error(
      `${path} says ${pid || "nothing"}, we started pid ${process.child.pid}:\n${process.stderr}`,
    );
  }
}

/**
 * Runs `command` until it listens on `port` and its pid file names it; stopping it (SIGTERM to
 * that pid, then its exit awaited) removes its directory `dir`.
 */
async function start(
  port: number,
  dir: string,
  command: string,
  args: string[],
): Promise<Consumer> {
  const process = new Process(command, args);
  await waitForPort(port, process);
  await checkPidFile(`${dir}/${command}.pid`, process);
  return {
    port,
    async stop() {
      process.child.kill("SIGTERM");
      await process.exit();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** nginx with `listen … proxy_protocol`, answering `$proxy_protocol_addr $proxy_protocol_port`. */
export async function startNginx(port: number): Promise<Consumer> {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-nginx-" });
  Deno.writeTextFileSync(
    `${dir}/nginx.conf`,
    `daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server {
    listen 127.0.0.1:${port} proxy_protocol;
    location / { return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }
  }
}
`,
  );
  // -e: the log nginx opens before it reads its configuration (else /var/log/nginx/error.log).
  const args = ["-p", dir, "-c", `${dir}/nginx.conf`, "-e", "stderr"];
  return await start(port, dir, "nginx", args);
}

/** haproxy with `bind … accept-proxy`, answering `%[src] %[src_port]`. */
export async function startHaproxy(port: number): Promise<Consumer> {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-haproxy-" });
  Deno.writeTextFileSync(
    `${dir}/haproxy.cfg`,
    `global
  log stderr format raw local0
  pidfile ${dir}/haproxy.pid
defaults
  mode http
  timeout client 10s
  timeout connect 10s
  timeout server 10s
frontend proxied
  bind 127.0.0.1:${port} accept-proxy
  http-request return status 200 content-type text/plain lf-string "%[src] %[src_port]\\n"
`,
  );
  // -W -db: master-worker in the foreground, so that the pid file (written only in that mode or
  // as a daemon) names the master we started; SIGTERM to it stops its worker too.
  return await start(port, dir, "haproxy", ["-W", "-db", "-f", `${dir}/haproxy.cfg`]);
}

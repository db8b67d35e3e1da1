/**
 * Real PROXY protocol consumers for the tests: nginx and haproxy, each in a temporary prefix,
 * in the foreground, reporting the client address they were told about.
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

/** Runs `command` until it listens on `port`; stopping it removes its directory `dir`. */
async function start(
  port: number,
  dir: string,
  command: string,
  args: string[],
): Promise<Consumer> {
  const process = new Process(command, args);
  await waitForPort(port, process);
  return {
    port,
    async stop() {
      await process.stop();
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
  return await start(port, dir, "nginx", ["-p", dir, "-c", `${dir}/nginx.conf`]);
}

/** haproxy with `bind … accept-proxy`, answering `%[src] %[src_port]`. */
export async function startHaproxy(port: number): Promise<Consumer> {
  const dir = Deno.makeTempDirSync({ prefix: "socket-proxyd-haproxy-" });
  Deno.writeTextFileSync(
    `${dir}/haproxy.cfg`,
    `global
  log stderr format raw local0
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
  return await start(port, dir, "haproxy", ["-db", "-f", `${dir}/haproxy.cfg`]);
}

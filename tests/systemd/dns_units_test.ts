/**
 * The DNS example (systemd/dns/): statically clean, locked down, and the options it documents.
 * Its behaviour on a booted systemd, with dnsmasq and dig, is proven by tests/systemd/dns.sh.
 */
import { equal, match, ok } from "node:assert/strict";

const dir = new URL("../../systemd/dns/", import.meta.url);
const units = ["proxy-to-dnsmasq.socket", "proxy-to-dnsmasq.service", "dnsmasq-private.service"];
const read = (name: string) => Deno.readTextFileSync(new URL(name, dir));

/** A root directory with the host's unit library, the example units and stand-in binaries. */
function fakeRoot(): string {
  const root = Deno.makeTempDirSync({ prefix: "socket-proxyd-dns-units-" });
  for (const sub of ["etc/systemd/system", "usr/local/bin", "usr/sbin", "usr/lib/systemd"]) {
    Deno.mkdirSync(`${root}/${sub}`, { recursive: true });
  }
  Deno.symlinkSync("/lib/systemd/system", `${root}/usr/lib/systemd/system`);
  for (const unit of units) {
    Deno.copyFileSync(new URL(unit, dir), `${root}/etc/systemd/system/${unit}`);
  }
  for (const binary of ["usr/local/bin/socket-proxyd", "usr/sbin/dnsmasq"]) {
    Deno.writeTextFileSync(`${root}/${binary}`, "#!/bin/sh\n", { mode: 0o755 });
  }
  return root;
}

async function analyze(args: string[]): Promise<string> {
  const root = fakeRoot();
  try {
    const { stdout, stderr } = await new Deno.Command("systemd-analyze", {
      args: [...args, `--root=${root}`],
      env: { SYSTEMD_COLORS: "0" },
    }).output();
    const decoder = new TextDecoder();
    return decoder.decode(stdout) + decoder.decode(stderr);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
}

Deno.test("systemd-analyze verify prints nothing for the DNS units", async () => {
  equal(await analyze(["verify", "--man=no", ...units.map((u) => `/etc/systemd/system/${u}`)]), "");
});

Deno.test("the DNS proxy and its dnsmasq are SAFE (exposure at most 1.0)", async () => {
  for (const service of ["proxy-to-dnsmasq.service", "dnsmasq-private.service"]) {
    const output = await analyze(["security", "--offline=true", service]);
    const level = Number(output.match(/Overall exposure level for \S+: ([\d.]+)/)?.[1]);
    ok(level <= 1.0, `${service}: ${output.split("\n").at(-2)}`);
  }
});

Deno.test("one socket unit for UDP and TCP on port 53, one proxy in dnsmasq's namespace", () => {
  const socket = read("proxy-to-dnsmasq.socket");
  match(socket, /^ListenStream=53$/m);
  match(socket, /^ListenDatagram=53$/m);
  const service = read("proxy-to-dnsmasq.service");
  match(service, /^JoinsNamespaceOf=dnsmasq-private\.service$/m);
  match(service, /^ExecStart=.* --idle-timeout=5s --connections-max=1024 .* 127\.0\.0\.1:53$/m);
  for (const unit of [service, read("dnsmasq-private.service")]) {
    match(unit, /^PrivateNetwork=yes$/m);
    match(unit, /^PrivateTmp=yes$/m);
  }
  match(read("dnsmasq-private.conf"), /^listen-address=127\.0\.0\.1$/m);
});

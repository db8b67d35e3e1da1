/**
 * The DNS example (systemd/dns/): statically clean, locked down, and the options it documents.
 * Its behaviour on a booted systemd, with dnsmasq and dig, is proven by tests/systemd/dns.sh.
 */
import { equal, match, ok } from "node:assert/strict";
import { analyzeUnits } from "./unit_root.ts";

const dir = new URL("../../systemd/dns/", import.meta.url);
const units = ["proxy-to-dnsmasq.socket", "proxy-to-dnsmasq.service", "dnsmasq-private.service"];
const read = (name: string) => Deno.readTextFileSync(new URL(name, dir));

/** `systemd-analyze ARGS` over the example's units (see unit_root.ts). */
const analyze = (args: string[]) =>
  analyzeUnits(dir, units, ["usr/local/bin/socket-proxyd", "usr/sbin/dnsmasq"], args);

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

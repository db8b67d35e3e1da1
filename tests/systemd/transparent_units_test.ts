/**
 * The --transparent example (systemd/transparent/): statically clean, locked down but for the
 * one capability it needs, and shaped as socket-proxyd(8) explains: a socket per address family,
 * each with a target of its own, the proxy in dnsmasq's namespace, the route back in dnsmasq's
 * unit. Its behaviour on a booted systemd is proven by tests/systemd/transparent.sh.
 */
import { equal, match, ok } from "node:assert/strict";
import { analyzeUnits } from "./unit_root.ts";

const dir = new URL("../../systemd/transparent/", import.meta.url);
const units = [
  "transparent-proxy.socket",
  "transparent-proxy-ipv6.socket",
  "transparent-proxy.service",
  "dnsmasq-transparent.service",
];
const read = (name: string) => Deno.readTextFileSync(new URL(name, dir));

/** `systemd-analyze ARGS` over the example's units (see unit_root.ts). */
const analyze = (args: string[]) =>
  analyzeUnits(dir, units, ["usr/local/bin/socket-proxyd", "usr/sbin/dnsmasq", "sbin/ip"], args);

Deno.test("systemd-analyze verify prints nothing for the --transparent units", async () => {
  equal(await analyze(["verify", "--man=no", ...units.map((u) => `/etc/systemd/system/${u}`)]), "");
});

Deno.test("the --transparent proxy and its dnsmasq: exposure as the README quotes it", async () => {
  const readme = Deno.readTextFileSync(new URL("../README.md", dir));
  for (const service of ["transparent-proxy.service", "dnsmasq-transparent.service"]) {
    const output = await analyze(["security", "--offline=true", service]);
    const [, level, word] = output.match(/Overall exposure level for \S+: ([\d.]+) (\w+)/) ?? [];
    ok(Number(level) <= 2.0, `${service}: ${output.split("\n").at(-2)}`);
    match(readme, new RegExp(`transparent/${service.replace(".", "\\.")}\`[ |]*${level} ${word}`));
  }
});

Deno.test("one socket per family, each with its own target; CAP_NET_ADMIN only; the route back in dnsmasq's unit", () => {
  match(read("transparent-proxy.socket"), /^ListenDatagram=0\.0\.0\.0:5300$/m);
  match(read("transparent-proxy.socket"), /^FileDescriptorName=ipv4$/m);
  const ipv6 = read("transparent-proxy-ipv6.socket");
  match(ipv6, /^ListenDatagram=\[::\]:5300$/m);
  match(ipv6, /^BindIPv6Only=ipv6-only$/m);
  match(ipv6, /^FileDescriptorName=ipv6$/m);
  match(ipv6, /^Service=transparent-proxy\.service$/m);
  const service = read("transparent-proxy.service");
  match(
    service,
    /^ExecStart=\/usr\/local\/bin\/socket-proxyd --transparent .*--target=ipv6=\[::1\]:5301 127\.0\.0\.1:5301$/m,
  );
  match(service, /^JoinsNamespaceOf=dnsmasq-transparent\.service$/m);
  match(service, /^DynamicUser=yes$/m);
  match(service, /^CapabilityBoundingSet=CAP_NET_ADMIN$/m);
  match(service, /^AmbientCapabilities=CAP_NET_ADMIN$/m);
  ok(!/^PrivateUsers=/m.test(service), "no PrivateUsers=: the capability must reach the namespace");
  match(service, /^RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX$/m, "no AF_NETLINK");
  const backend = read("dnsmasq-transparent.service");
  match(backend, /^ExecStartPre=\+\/sbin\/ip route replace local default dev lo$/m);
  match(backend, /^ExecStartPre=\+\/sbin\/ip -6 route replace local default dev lo$/m);
  ok(!/^IPAddressDeny=/m.test(backend), "the clients' addresses reach dnsmasq");
  for (const unit of [service, backend]) {
    match(unit, /^PrivateNetwork=yes$/m);
    match(unit, /^PrivateTmp=yes$/m);
  }
  const conf = read("dnsmasq-transparent.conf");
  match(conf, /^port=5301$/m);
  match(conf, /^listen-address=127\.0\.0\.1,::1$/m);
  match(conf, /^log-queries$/m);
});

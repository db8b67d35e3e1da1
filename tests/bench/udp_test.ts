import { deepEqual as assertEquals, ok as assert, throws } from "node:assert/strict";
import { dnsQuery, parseDnsperf, quantile } from "../../bench/lib/udp.ts";
import {
  checkUdpTargets,
  summarizeUdp,
  udpMarkdown,
  udpSection,
} from "../../bench/lib/udpreport.ts";

const OUTPUT = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q.txt -c 4 -l 3 -v
> NOERROR www.bench.test A 0.003181
> NOERROR www.bench.test A 0.000200
> SERVFAIL www.bench.test A 0.010000
[Timeout] Query timed out: msg id 7
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         4
  Queries completed:    3 (75.00%)
  Queries lost:         1 (25.00%)

  Response codes:       NOERROR 2 (66.67%), SERVFAIL 1 (33.33%)
  Average packet size:  request 32, response 48
  Run time (s):         3.003219
  Queries per second:   33040.547493

  Average Latency (s):  0.002939 (min 0.000035, max 0.014927)
  Latency StdDev (s):   0.001091
`;

Deno.test("parseDnsperf reads the statistics and the latency of every answered query", () => {
  const r = parseDnsperf(OUTPUT);
  assertEquals([r.sent, r.completed, r.lost, r.qps], [4, 3, 1, 33040.547493]);
  assertEquals(r.latencies, [0.0002, 0.003181, 0.01]);
});

Deno.test("parseDnsperf refuses output without statistics", () => {
  throws(() => parseDnsperf("Error: could not open socket\n"), /Queries sent/);
});

Deno.test("quantile takes the nearest rank, and NaN of nothing", () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  assertEquals(quantile(xs, 0.99), 99);
  assertEquals(quantile(xs, 0.5), 50);
  assertEquals(quantile([7], 0.99), 7);
  assert(Number.isNaN(quantile([], 0.5)));
});

Deno.test("dnsQuery is one question for an A record with recursion desired", () => {
  const q = dnsQuery(0x1234);
  assertEquals([...q.subarray(0, 12)], [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
  assertEquals(new TextDecoder().decode(q.subarray(13, 16)), "www");
  assertEquals([...q.subarray(-5)], [0, 0, 1, 0, 1]);
});

Deno.test("UDP targets compare ours with nginx and socat, and bound memory per session", () => {
  const summaries = summarizeUdp({
    udp_qps_c4: { direct: [100], ours: [50, 60, 40], nginx: [40] },
    udp_qps_c64: { ours: [30], nginx: [31], socat: [20] },
    udp_idle_kib_per_session: { ours: [3.5], nginx: [9] },
  });
  assertEquals(summaries.map((s) => s.metric.id), [
    "udp_qps_c4",
    "udp_qps_c64",
    "udp_idle_kib_per_session",
  ]);
  assertEquals(summaries[0].ratios.direct, 0.5);
  const targets = checkUdpTargets(summaries);
  assertEquals(targets.map((t) => t.met), [true, false, true, true]);
  assertEquals(targets[1].description, "DNS queries, 64 clients: ≥1× nginx");
  const table = udpMarkdown(summaries, targets, ["direct", "ours", "nginx", "socat"]);
  assert(table.includes("| DNS queries, 64 clients | q/s | – | 30 | 31 | 20 | – | 0.97× | 1.50×"));
});

Deno.test("a UDP target without the other contender's median is unknown, not met", () => {
  const targets = checkUdpTargets(summarizeUdp({ udp_qps_c4: { ours: [50] } }));
  assertEquals(targets.map((t) => t.met), [null]);
});

Deno.test("the UDP section says the load average over the DNS runs", () => {
  const summaries = summarizeUdp({
    udp_qps_c4: { ours: [50], nginx: [40] },
    udp_load1_c4: { ours: [3.25, 2], nginx: [4] },
    udp_load1_c64: { direct: [1.5] },
  });
  const section = udpSection(summaries, checkUdpTargets(summaries));
  assert(section.includes("The 1-minute load average at the end of the DNS runs was 1.5–4.0."));
  assert(section.includes("| DNS queries, 4 clients | q/s | – | 50 | 40 | – | – | 1.25× | – |"));
});

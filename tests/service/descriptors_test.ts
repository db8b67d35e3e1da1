import { equal } from "node:assert/strict";
import {
  BASE_DESCRIPTORS,
  descriptorBudgetWarning,
  descriptorsNeeded,
} from "../../src/service/descriptors.ts";

Deno.test("descriptorsNeeded: two per stream connection, one per datagram session, plus the base", () => {
  const c = 5000;
  equal(descriptorsNeeded({ connectionsMax: c, streams: true, datagrams: true }), 15_064);
  equal(descriptorsNeeded({ connectionsMax: c, streams: true, datagrams: false }), 10_064);
  equal(descriptorsNeeded({ connectionsMax: c, streams: false, datagrams: true }), 5_064);
  equal(
    descriptorsNeeded({ connectionsMax: 1, streams: false, datagrams: false }),
    BASE_DESCRIPTORS,
  );
});

Deno.test("descriptorBudgetWarning: one line naming RLIMIT_NOFILE and LimitNOFILE= when the limit is short", () => {
  const served = { connectionsMax: 5000, streams: true, datagrams: true };
  equal(
    descriptorBudgetWarning(1024, served),
    "The limit on open files (RLIMIT_NOFILE) is 1024, but --connections-max=5000 may need " +
      "15064 file descriptors (2 per stream connection and 1 per datagram session, plus 64): " +
      'past 1024, new connections and sessions fail with "Too many open files". Set ' +
      "LimitNOFILE=15064 or more in the service unit, or lower --connections-max.",
  );
  equal(
    descriptorBudgetWarning(100, { connectionsMax: 256, streams: false, datagrams: true }),
    "The limit on open files (RLIMIT_NOFILE) is 100, but --connections-max=256 may need 320 " +
      "file descriptors (1 per datagram session, plus 64): past 100, new connections and " +
      'sessions fail with "Too many open files". Set LimitNOFILE=320 or more in the service ' +
      "unit, or lower --connections-max.",
  );
});

Deno.test("descriptorBudgetWarning: nothing when the limit holds it, or is unknown or unlimited", () => {
  const served = { connectionsMax: 256, streams: true, datagrams: true };
  equal(descriptorsNeeded(served), 832);
  equal(descriptorBudgetWarning(1024, served), null, "the defaults under LimitNOFILE=1024");
  equal(descriptorBudgetWarning(832, served), null);
  equal(descriptorBudgetWarning(831, served)?.startsWith("The limit on open files"), true);
  equal(descriptorBudgetWarning(null, served), null);
});

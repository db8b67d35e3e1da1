import { equal, ok } from "node:assert/strict";
import {
  BACKEND_FAULTS,
  backendFault,
  CLIENT_FAULTS,
  PERMISSION_FAULTS,
  replyFault,
} from "../../src/engine/relaylog.ts";

Deno.test("replyFault: a Unix client's socket the proxy may not write to names the uid and the file", () => {
  for (const errno of [13, 1]) {
    equal(
      replyFault(errno, "/run/client.sock", true, 61234),
      "Permission denied: the proxy's user (uid 61234) may not write to the client's socket " +
        "/run/client.sock; give it write permission on that socket file (and search permission " +
        "on its directories), e.g. through a group both users share, or create the socket with " +
        "mode 0666",
    );
  }
});

Deno.test("replyFault: IP clients, gone Unix clients, other errors", () => {
  equal(
    replyFault(1, "192.0.2.1:53", false, 0),
    "Operation not permitted (a firewall rule refused it)",
  );
  equal(replyFault(13, "192.0.2.1:53", false, 0), "Permission denied");
  equal(replyFault(111, "/run/c.sock", true, 0), "the client's socket is gone");
  equal(replyFault(2, "/run/c.sock", true, 0), "the client's socket is gone");
  equal(replyFault(113, "192.0.2.1:53", false, 0), "No route to host (ICMP host unreachable)");
  equal(replyFault(9999, "192.0.2.1:53", false, 0), "errno 9999");
});

Deno.test("backendFault: ICMP errors, Unix targets, permissions, others", () => {
  equal(
    backendFault(111),
    "Connection refused (nothing is bound there: ICMP port unreachable, or no Unix socket)",
  );
  equal(backendFault(101), "Network is unreachable (ICMP network unreachable)");
  equal(backendFault(2), "No such file or directory (no Unix socket at that path)");
  equal(
    backendFault(13),
    "Permission denied (the proxy's user may not write to the target's socket)",
  );
  equal(backendFault(11), "errno 11");
});

Deno.test("fault sets: EAGAIN is none of them (a full buffer is dropped, not undeliverable)", () => {
  for (const set of [CLIENT_FAULTS, PERMISSION_FAULTS]) ok(!set.has(11));
  ok(!BACKEND_FAULTS.has(11));
  for (const errno of [...BACKEND_FAULTS.keys(), ...PERMISSION_FAULTS]) {
    ok(CLIENT_FAULTS.has(errno));
  }
});

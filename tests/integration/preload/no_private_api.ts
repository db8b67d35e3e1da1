/**
 * Preloaded (`deno run --preload`) to stand for a Deno release that lacks the private APIs the
 * fast path and the recovery from fd exhaustion use: as soon as a server listens, and before
 * anyone hears of it, `takeStream` and `fdForIpc` are taken off the prototype of its native
 * handle (TCP or Unix), for every handle of that kind.
 */
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
  this.prependOnceListener("listening", () => {
    const handle = (this as unknown as { _handle: object })._handle;
    const prototype = Object.getPrototypeOf(handle) as Record<string, unknown>;
    delete prototype.takeStream;
    delete prototype.fdForIpc;
  });
  return listen.apply(this, args as never);
} as typeof listen;

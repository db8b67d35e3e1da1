/**
 * Preloaded (`deno run --preload`) to stand for Deno 2.7.12 to 2.7.14: a server told to listen
 * on an inherited file descriptor says it listens, and never serves it.
 */
import net from "node:net";

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]) {
  const options = args[0] as { fd?: number } | undefined;
  if (typeof options?.fd !== "number") return listen.apply(this, args as never);
  const callback = args.find((arg) => typeof arg === "function") as (() => void) | undefined;
  queueMicrotask(() => callback?.());
  return this;
} as typeof listen;

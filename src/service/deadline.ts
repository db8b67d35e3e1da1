/**
 * Waiting for something for at most a span, as drains do.
 * @module
 */
import { after } from "./timer.ts";

/**
 * Resolves when `done` does, or after `timeoutMs` (Infinity: only when `done` does), whichever
 * comes first.
 */
export async function waitAtMost(done: Promise<unknown>, timeoutMs: number): Promise<void> {
  let cancel = () => {};
  const timeout = new Promise<void>((resolve) => {
    if (Number.isFinite(timeoutMs)) cancel = after(timeoutMs, resolve);
  });
  try {
    await Promise.race([done, timeout]);
  } finally {
    cancel();
  }
}

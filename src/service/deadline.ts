/**
 * Waiting for something for at most a span, as drains do.
 * @module
 */

/** setTimeout's longest delay (about 24.8 days); a longer finite wait is cut to it. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/**
 * Resolves when `done` does, or after `timeoutMs` (Infinity: only when `done` does), whichever
 * comes first; no timer is left behind.
 */
export async function waitAtMost(done: Promise<unknown>, timeoutMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => {
    if (Number.isFinite(timeoutMs)) timer = setTimeout(resolve, Math.min(timeoutMs, MAX_DELAY_MS));
  });
  try {
    await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Exponential backoff with jitter for reconnects and worker-write retries: 100 ms doubling up
 * to 5 s, each delay randomized to between half and all of its nominal value.
 *
 * @module
 */

/** Delays that double from `initialMs` up to `maxMs`, with jitter. */
export class Backoff {
  private failures = 0;

  constructor(
    private readonly initialMs = 100,
    private readonly maxMs = 5_000,
  ) {}

  /** The delay before the next try, in ms. */
  next(): number {
    const nominal = Math.min(this.initialMs * 2 ** Math.min(this.failures, 20), this.maxMs);
    this.failures++;
    const half = nominal / 2;
    return half + Math.random() * half;
  }

  /** Starts over after a success. */
  reset(): void {
    this.failures = 0;
  }
}

/** Resolves after `ms`, or at once (without rejecting) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

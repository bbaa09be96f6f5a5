/**
 * Waiting and aborting: every wait of the client (in the queue, held by pacing, before a retry)
 * ends at once when the call's signal aborts, and the call rejects with the signal's reason
 * (docs/reference.md#14-the-client, "Abort"). Works without `AbortSignal.any` (Node 18).
 */

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/** A signal that aborts when any of the given ones does; undefined when none is given. */
export function anySignal(...signals: (AbortSignal | undefined | null)[]): AbortSignal | undefined {
  const given = signals.filter((s): s is AbortSignal => s !== undefined && s !== null);
  if (given.length <= 1) return given[0];
  if (typeof AbortSignal.any === "function") return AbortSignal.any(given);
  const controller = new AbortController(); // runtimes without AbortSignal.any (Node 18)
  for (const s of given) {
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => controller.abort(s.reason), { once: true });
  }
  return controller.signal;
}

/** The default `sleep` option: a `setTimeout`, cleared when `signal` aborts. */
export function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Sleeps `ms` with the given `sleep`, on a signal of its own that `signal` (when given) aborts:
 * rejects with `signal.reason` at once if it has aborted, or as soon as it does.
 */
export async function sleepUnlessAborted(
  sleep: (ms: number, signal: AbortSignal) => Promise<void>,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const timer = new AbortController();
  const onAbort = () => timer.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    throwIfAborted(signal);
    await sleep(ms, timer.signal);
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

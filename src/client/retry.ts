/**
 * What is retried, and how long a retry waits when the server does not say
 * (docs/reference.md#14-the-client, "Retries" and "Bodies"): a 429 whatever the method, a 503 of
 * an idempotent method, only with a body that can be sent again; exponential backoff with full
 * jitter.
 */

/** Methods that may be repeated without changing the outcome: retried on 503 as well as on 429. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** A 429 (refused, not processed), or a 503 of a method that may be repeated. */
export function isRetryable(status: number, method: string): boolean {
  return status === 429 || (status === 503 && IDEMPOTENT.has(method));
}

/** `fetch`'s own semantics for a body: these can be read again for each attempt. */
export function isReplayableBody(body: RequestInit["body"] | undefined): boolean {
  if (body === undefined || body === null || typeof body === "string") return true;
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return true;
  if (typeof Blob !== "undefined" && body instanceof Blob) return true;
  if (typeof URLSearchParams !== "undefined" && body instanceof URLSearchParams) return true;
  if (typeof FormData !== "undefined" && body instanceof FormData) return true;
  return false;
}

/**
 * The wait before retry `attempt` (from 0) without `Retry-After`, full jitter: `random` (in
 * `[0, 1)`) times `min(maxDelayMs, baseDelayMs * 2^attempt)`.
 */
export function backoffDelay(attempt: number, baseDelayMs: number, maxDelayMs: number, random: () => number): number {
  return random() * Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
}

/** Frees a response that will not be returned. */
export async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // Nothing to free.
  }
}

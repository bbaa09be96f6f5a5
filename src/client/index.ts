/**
 * `sluice/client`: a `fetch` that behaves as rate-limited APIs ask their callers to. It honours
 * `Retry-After`, backs off with full jitter when there is none, paces itself by the rate-limit
 * headers of the answers (Sluice's `X-RateLimit-*`, the same headers of other APIs, or the IETF
 * `RateLimit`/`RateLimit-Policy` fields) so that a client alone on a key sees no 429 in steady
 * state, and caps the requests in flight. No dependency; runs wherever `fetch` does (browsers,
 * Node >= 18, Workers, Deno).
 *
 * ```ts
 * import { rateLimitedFetch } from "sluice/client";
 * const fetch = rateLimitedFetch({ concurrency: 4 });
 * const res = await fetch("https://api.example.com/v1/things", { headers: { "x-api-key": key } });
 * ```
 *
 * @module
 */

import { anySignal, sleepUnlessAborted, throwIfAborted } from "./abort.ts";
import { Slots } from "./concurrency.ts";
import { parseRetryAfter } from "./headers.ts";
import { type Fetch, type RateLimitedFetchOptions, settingsOf } from "./options.ts";
import { type OriginState, Pacer } from "./pacing.ts";
import { backoffDelay, discard, isReplayableBody, isRetryable } from "./retry.ts";

export { parseRetryAfter } from "./headers.ts";
export type { Fetch, RateLimitedFetchOptions } from "./options.ts";

// This file holds the function and the loop of one call's attempts; the parts it uses are in
// src/client/: options.ts (the options and their defaults), pacing.ts (what the client knows of
// each origin: pacing by the answers' headers, holds for a Retry-After), concurrency.ts (the cap on
// requests in flight), headers.ts (reading the rate-limit headers), retry.ts (what is retried, and
// the backoff without Retry-After) and abort.ts (signals and sleeps).

/**
 * Returns a function with `fetch`'s signature that, for every call:
 *
 * - **Retries** a 429, and a 503 of an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE;
 *   a POST or PATCH answered 503 may have been processed, and is returned), at most `maxRetries`
 *   times, then returns the last response. It waits `Retry-After` (seconds or an HTTP date) and
 *   holds every other request to that origin as long; without it, exponential backoff with full
 *   jitter (1, 2, 4, 8 s... capped at `maxDelayMs`, 30 s).
 * - Retries only a request whose body can be sent again: no body, a string, `ArrayBuffer`, typed
 *   array, `Blob`, `URLSearchParams` or `FormData` in `init.body`, or a `Request` (cloned before each
 *   attempt, so its body is kept in memory until the call ends). A `ReadableStream` (or any other)
 *   `init.body` is sent once, and its 429 returned.
 * - **Paces** each origin (scheme, host and port) by the answers' headers: `X-RateLimit-Remaining`
 *   with `X-RateLimit-Reset` (delta seconds, or a Unix time in seconds or ms: told apart by size),
 *   else the IETF `RateLimit` field (`r` remaining, `t` seconds to reset; `RateLimit-Policy`'s `w`
 *   when `t` is missing). What remains is the last answer's figure less the requests sent since;
 *   once nothing remains, the next requests to that origin wait until the reset instead of being
 *   sent to get a 429. Until the first answer, and after each reset, one request goes first and
 *   the others wait for its answer. An origin that sends none of these headers is not paced.
 * - **Caps** the requests in flight at `concurrency`, in a queue.
 * - **Aborts** any wait when `options.signal` or the call's own signal aborts: the call rejects
 *   with the signal's reason and sends no further request.
 *
 * Network errors are not retried: they reject as `fetch` rejects.
 */
export function rateLimitedFetch(options: RateLimitedFetchOptions = {}): Fetch {
  const settings = settingsOf(options);
  const { now } = settings;
  const pacer = new Pacer(settings);
  const slots = new Slots(settings.concurrency);

  return async function limitedFetch(input: Request | string | URL, init?: RequestInit): Promise<Response> {
    const call = callOf(input, init, options.signal, pacer);
    const send = options.fetch ?? globalThis.fetch;

    for (let attempt = 0; ; attempt++) {
      throwIfAborted(call.signal);
      const res = await sendWhenFree(call, send, pacer, slots);
      if (!isRetryable(res.status, call.method) || attempt >= settings.maxRetries || !call.replayable) return res;
      const retryAfter = parseRetryAfter(res.headers.get("retry-after"), now());
      if (retryAfter !== undefined && retryAfter > settings.maxWaitMs) return res;
      await discard(res);
      if (retryAfter !== undefined) {
        // The server asked the whole origin to wait: the next attempt, and every other request to
        // that origin, waits in Pacer.waitForOrigin until then.
        pacer.block(call.state, now() + retryAfter);
      } else {
        const delay = backoffDelay(attempt, settings.baseDelayMs, settings.maxDelayMs, settings.random);
        await sleepUnlessAborted(settings.sleep, delay, call.signal);
      }
    }
  };
}

/** One call of the function `rateLimitedFetch` returns, as each of its attempts needs it. */
interface Call {
  input: Request | string | URL;
  /** `input` when it is a Request: cloned before each attempt. */
  request: Request | undefined;
  /** The `init` of each attempt: the call's, with the combined signal when there is one. */
  init: RequestInit | undefined;
  /** Aborts the call: `options.signal` and the call's own signal, combined. */
  signal: AbortSignal | undefined;
  method: string;
  /** Its body can be sent again, so it may be retried. */
  replayable: boolean;
  /** Its origin's pacing state. */
  state: OriginState;
}

function callOf(
  input: Request | string | URL,
  init: RequestInit | undefined,
  optionsSignal: AbortSignal | undefined,
  pacer: Pacer,
): Call {
  const request = typeof input === "string" || input instanceof URL ? undefined : input;
  const callSignal = init?.signal ?? request?.signal ?? undefined;
  const signal = anySignal(optionsSignal, callSignal);
  const method = (init?.method ?? request?.method ?? "GET").toUpperCase();
  // A body given in init replaces the Request's; a Request's own body is cloned for each attempt.
  const replayable = init?.body !== undefined ? isReplayableBody(init.body) : true;
  const state = pacer.stateOf(request ? request.url : (input as string | URL));
  const attemptInit: RequestInit | undefined = signal && signal !== callSignal ? { ...init, signal } : init;
  return { input, request, init: attemptInit, signal, method, replayable, state };
}

/**
 * One attempt: waits until the origin lets a request go and a place in flight is free, sends it,
 * and applies its answer to the origin's state. Network errors reject as `send` rejects.
 */
async function sendWhenFree(call: Call, send: Fetch, pacer: Pacer, slots: Slots): Promise<Response> {
  const { state, signal } = call;
  // Wait for the origin (pacing, Retry-After), then for a place in flight; the origin may have
  // changed meanwhile, so check it again once placed, and give the place back if it must wait.
  for (;;) {
    await pacer.waitForOrigin(state, signal);
    await slots.acquire(signal);
    if (pacer.holdFor(state) <= 0) break;
    slots.release();
  }
  // Sent now, in the same turn as the check above: nothing else can take the last unit.
  const booking = pacer.book(state);
  let res: Response | undefined;
  try {
    res = await send(call.request ? call.request.clone() : call.input, call.init);
  } finally {
    slots.release();
    pacer.settle(state, booking, res); // the waiters read the new state (or, after a failure, probe again)
  }
  return res;
}

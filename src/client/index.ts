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

import { parseRetryAfter, readRateLimit } from "./headers.ts";

export { parseRetryAfter } from "./headers.ts";

/** A function with the signature of `fetch`. */
export type Fetch = (input: Request | string | URL, init?: RequestInit) => Promise<Response>;

/** The options of {@link rateLimitedFetch}; every one is optional. */
export interface RateLimitedFetchOptions {
  /**
   * Retries of one call at most, after its first attempt; then the last response is returned as
   * it is (a 429 or a 503). `0` turns retrying off. Default `5`.
   */
  maxRetries?: number;
  /**
   * Requests in flight at most, over every origin this function talks to; the calls beyond it
   * wait in a first-in, first-out queue. A call holds its place only while its request is in
   * flight, not while it waits for a retry or for pacing. Default `Infinity` (no cap).
   */
  concurrency?: number;
  /** The `fetch` that sends the requests: another client, or a fake in tests. Default the global `fetch`. */
  fetch?: Fetch;
  /**
   * Aborts every call of this function: a call waiting (in the queue, for pacing, before a retry)
   * rejects at once with the signal's reason and sends nothing more; a request in flight is
   * aborted as `fetch` aborts it. A call's own `init.signal` (or its Request's signal) does the
   * same for that call.
   */
  signal?: AbortSignal;
  /** The first backoff step without `Retry-After`: retry `n` (from 0) waits a random time in `[0, min(maxDelayMs, baseDelayMs * 2^n))`. Default `1000`. */
  baseDelayMs?: number;
  /** The cap of one backoff wait without `Retry-After`. Default `30000` (30 s). */
  maxDelayMs?: number;
  /**
   * The longest wait this function accepts from a server: a `Retry-After` longer than this is not
   * waited for (the 429 or 503 is returned at once), and pacing does not hold a request longer
   * than this (it is sent, and its 429 tells the caller how long). Default `300000` (5 min).
   */
  maxWaitMs?: number;
  /** Pace by the rate-limit headers of the answers (see {@link rateLimitedFetch}). Default `true`. */
  pace?: boolean;
  /** The clock, in ms since the epoch (for tests). Default `Date.now`. */
  now?: () => number;
  /**
   * Waits `ms` milliseconds; rejects with `signal.reason` as soon as `signal` aborts (for tests:
   * a fake clock). Default a `setTimeout`.
   */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** A random number in `[0, 1)`, for the jitter (for tests). Default `Math.random`. */
  random?: () => number;
}

/** Methods that may be repeated without changing the outcome: retried on 503 as well as on 429. */
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

/** What this client knows of one origin's rate limit. */
interface OriginState {
  /**
   * `"unknown"`: no answer yet, or the reset has passed: one request goes first (a probe) and the
   * others wait for its answer. `"known"`: `remaining` and `resetAt` hold. `"none"`: the last
   * answer carried no rate-limit headers, nothing to pace by.
   */
  kind: "unknown" | "known" | "none";
  /** The last answer's figure less the requests sent since (and those still in flight). */
  remaining: number;
  /** When `remaining` goes up, ms since the epoch; `undefined` when the answer did not say. */
  resetAt: number | undefined;
  /** No request before this instant (a `Retry-After`), ms since the epoch. */
  blockedUntil: number;
  /** Requests in flight to this origin. */
  inFlight: number;
  /** A probe is in flight (state `"unknown"`). */
  probing: boolean;
  /** Sequence number of the request whose answer was applied last: older answers are stale. */
  appliedSeq: number;
  /** Sequence number of the last request sent. */
  sentSeq: number;
  /** Waiters to wake when the state changes (an answer, a failed request). */
  wake: Set<() => void>;
}

const newOrigin = (): OriginState => ({
  kind: "unknown",
  remaining: 0,
  resetAt: undefined,
  blockedUntil: 0,
  inFlight: 0,
  probing: false,
  appliedSeq: 0,
  sentSeq: 0,
  wake: new Set(),
});

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
  const maxRetries = options.maxRetries ?? 5;
  const concurrency = options.concurrency ?? Number.POSITIVE_INFINITY;
  const baseDelayMs = options.baseDelayMs ?? 1000;
  const maxDelayMs = options.maxDelayMs ?? 30_000;
  const maxWaitMs = options.maxWaitMs ?? 300_000;
  const pace = options.pace ?? true;
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? defaultSleep;
  const random = options.random ?? Math.random;
  if (!(maxRetries >= 0)) throw new RangeError("maxRetries must be 0 or more");
  if (!(concurrency >= 1)) throw new RangeError("concurrency must be 1 or more");

  const origins = new Map<string, OriginState>();
  const queue: (() => void)[] = [];
  let running = 0;

  /** Waits for a place among the `concurrency` requests in flight. */
  async function acquire(signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    if (running < concurrency && queue.length === 0) {
      running++;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const enter = () => {
        signal?.removeEventListener("abort", onAbort);
        running++;
        resolve();
      };
      const onAbort = () => {
        const i = queue.indexOf(enter);
        if (i >= 0) queue.splice(i, 1);
        reject(signal?.reason);
      };
      queue.push(enter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  function release(): void {
    running--;
    while (running < concurrency && queue.length > 0) queue.shift()?.();
  }

  /**
   * How long a request to this origin must wait before it may be sent: 0 when it may go now,
   * `Infinity` when it waits for a probe's answer (woken by `wake`).
   */
  function holdFor(state: OriginState): number {
    const t = now();
    if (t < state.blockedUntil) return state.blockedUntil - t;
    if (!pace) return 0;
    if (state.kind === "known" && state.remaining <= 0) {
      if (state.resetAt === undefined) return 0; // no reset to wait for: let the server say.
      if (t < state.resetAt) return state.resetAt - t <= maxWaitMs ? state.resetAt - t : 0;
      state.kind = "unknown"; // the reset has passed: how much is back? One request finds out.
    }
    if (state.kind === "unknown" && state.probing) return Number.POSITIVE_INFINITY;
    return 0;
  }

  /** Waits until the origin lets a request go (or the signal aborts). */
  async function waitForOrigin(state: OriginState, signal: AbortSignal | undefined): Promise<void> {
    for (let ms = holdFor(state); ms > 0; ms = holdFor(state)) {
      await waitOrWake(state, ms, signal);
    }
  }

  /** Sleeps `ms` (Infinity: until woken), or less when the origin's state changes. */
  async function waitOrWake(state: OriginState, ms: number, signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    // Ends the sleep (and its timer) whichever way the wait ends: woken, slept out or aborted.
    const timer = new AbortController();
    const onAbort = () => timer.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let woken: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        woken = resolve;
        state.wake.add(resolve);
        timer.signal.addEventListener("abort", () => reject(timer.signal.reason), { once: true });
        if (Number.isFinite(ms)) sleep(ms, timer.signal).then(resolve, reject);
      });
    } finally {
      if (woken) state.wake.delete(woken);
      signal?.removeEventListener("abort", onAbort);
      timer.abort();
    }
  }

  function wakeAll(state: OriginState): void {
    const waiters = [...state.wake];
    state.wake.clear();
    for (const w of waiters) w();
  }

  /** Applies one answer's rate-limit headers to its origin's state. */
  function learn(state: OriginState, seq: number, headers: Headers, status: number): void {
    const answer = readRateLimit(headers, now());
    if (answer.remaining === undefined) {
      // No figure: a 429 says nothing remains; any other answer leaves nothing to pace by.
      if (status === 429 || seq < state.appliedSeq) return;
      state.appliedSeq = seq;
      if (state.kind !== "known") state.kind = "none";
      return;
    }
    if (seq < state.appliedSeq) return; // a newer answer was applied: this one is stale.
    state.appliedSeq = seq;
    state.kind = "known";
    // Requests still in flight may not have been counted in this figure: count them as spent.
    state.remaining = answer.remaining - state.inFlight;
    state.resetAt = answer.resetInMs === undefined ? undefined : now() + answer.resetInMs;
  }

  return async function limitedFetch(input: Request | string | URL, init?: RequestInit): Promise<Response> {
    const request = typeof input === "string" || input instanceof URL ? undefined : input;
    const callSignal = init?.signal ?? request?.signal ?? undefined;
    const signal = anySignal(options.signal, callSignal);
    const method = (init?.method ?? request?.method ?? "GET").toUpperCase();
    // A body given in init replaces the Request's; a Request's own body is cloned for each attempt.
    const replayable = init?.body !== undefined ? isReplayableBody(init.body) : true;
    const originKey = originOf(request ? request.url : (input as string | URL));
    let state = origins.get(originKey);
    if (!state) {
      state = newOrigin();
      origins.set(originKey, state);
    }
    const send = options.fetch ?? globalThis.fetch;
    const attemptInit: RequestInit | undefined = signal && signal !== callSignal ? { ...init, signal } : init;

    for (let attempt = 0; ; attempt++) {
      throwIfAborted(signal);
      // Wait for the origin (pacing, Retry-After), then for a place in flight; the origin may have
      // changed meanwhile, so check it again once placed, and give the place back if it must wait.
      for (;;) {
        await waitForOrigin(state, signal);
        await acquire(signal);
        if (holdFor(state) <= 0) break;
        release();
      }
      // Sent now, in the same turn as the check above: nothing else can take the last unit.
      const seq = ++state.sentSeq;
      const probe = state.kind === "unknown" && pace;
      if (probe) state.probing = true;
      if (state.kind === "known") state.remaining--;
      state.inFlight++;
      let res: Response | undefined;
      try {
        res = await send(request ? request.clone() : input, attemptInit);
      } finally {
        state.inFlight--;
        release();
        if (probe) state.probing = false;
        if (res) learn(state, seq, res.headers, res.status);
        wakeAll(state); // the waiters read the new state (or, after a failure, probe again)
      }

      const retryable = res.status === 429 || (res.status === 503 && IDEMPOTENT.has(method));
      if (!retryable || attempt >= maxRetries || !replayable) return res;
      const retryAfter = parseRetryAfter(res.headers.get("retry-after"), now());
      if (retryAfter !== undefined && retryAfter > maxWaitMs) return res;
      await discard(res);
      if (retryAfter !== undefined) {
        // The server asked the whole origin to wait: the next attempt, and every other request to
        // that origin, waits in waitForOrigin until then.
        state.blockedUntil = Math.max(state.blockedUntil, now() + retryAfter);
      } else {
        // Full jitter: anywhere in [0, min(cap, base * 2^attempt)).
        const delay = random() * Math.min(maxDelayMs, baseDelayMs * 2 ** attempt);
        const timer = new AbortController();
        const onAbort = () => timer.abort(signal?.reason);
        signal?.addEventListener("abort", onAbort, { once: true });
        try {
          throwIfAborted(signal);
          await sleep(delay, timer.signal);
        } finally {
          signal?.removeEventListener("abort", onAbort);
        }
      }
    }
  };
}

/** `fetch`'s own semantics for a body: these can be read again for each attempt. */
function isReplayableBody(body: RequestInit["body"] | undefined): boolean {
  if (body === undefined || body === null || typeof body === "string") return true;
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return true;
  if (typeof Blob !== "undefined" && body instanceof Blob) return true;
  if (typeof URLSearchParams !== "undefined" && body instanceof URLSearchParams) return true;
  if (typeof FormData !== "undefined" && body instanceof FormData) return true;
  return false;
}

/** The origin a request goes to (its key for pacing); relative URLs resolve against the page. */
function originOf(url: string | URL): string {
  try {
    const base = (globalThis as { location?: { href?: string } }).location?.href;
    return new URL(url, base).origin;
  } catch {
    return "";
  }
}

/** Frees a response that will not be returned. */
async function discard(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // Nothing to free.
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/** A signal that aborts when any of the given ones does; undefined when none is given. */
function anySignal(...signals: (AbortSignal | undefined | null)[]): AbortSignal | undefined {
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

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
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

// The options of `rateLimitedFetch` and their defaults, as docs/reference.md#14-the-client lists
// them; `settingsOf` fills in the defaults and checks the figures once, when the function is made.
// (Line comments: a doc comment here would land in the package's dist/client.d.ts.)

import { defaultSleep } from "./abort.ts";

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

/** The options with their defaults filled in. */
export interface Settings {
  maxRetries: number;
  concurrency: number;
  baseDelayMs: number;
  maxDelayMs: number;
  maxWaitMs: number;
  pace: boolean;
  now: () => number;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  random: () => number;
}

/** The options with their defaults; throws a RangeError for a `maxRetries` or `concurrency` out of range. */
export function settingsOf(options: RateLimitedFetchOptions): Settings {
  const settings: Settings = {
    maxRetries: options.maxRetries ?? 5,
    concurrency: options.concurrency ?? Number.POSITIVE_INFINITY,
    baseDelayMs: options.baseDelayMs ?? 1000,
    maxDelayMs: options.maxDelayMs ?? 30_000,
    maxWaitMs: options.maxWaitMs ?? 300_000,
    pace: options.pace ?? true,
    now: options.now ?? Date.now,
    sleep: options.sleep ?? defaultSleep,
    random: options.random ?? Math.random,
  };
  if (!(settings.maxRetries >= 0)) throw new RangeError("maxRetries must be 0 or more");
  if (!(settings.concurrency >= 1)) throw new RangeError("concurrency must be 1 or more");
  return settings;
}

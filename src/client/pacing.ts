/**
 * Pacing each origin (scheme, host and port) by the rate-limit headers of its answers, and holding
 * it for a `Retry-After` (docs/reference.md#14-the-client, "Pacing"): what remains is the last
 * answer's figure less the requests sent since; once nothing remains, requests wait for the reset.
 * Until the first answer, and after each reset, one request (a probe) goes first and the others
 * wait for its answer.
 */

import { throwIfAborted } from "./abort.ts";
import { readRateLimit } from "./headers.ts";
import type { Settings } from "./options.ts";

/** What this client knows of one origin's rate limit. */
export interface OriginState {
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

/** A request booked against its origin by {@link Pacer.book}, until {@link Pacer.settle}. */
export interface Booking {
  /** Its sequence number: its answer is stale once a later request's has been applied. */
  seq: number;
  /** It is the probe of an origin in state `"unknown"`. */
  probe: boolean;
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

/** The origin a request goes to (its key for pacing); relative URLs resolve against the page. */
function originOf(url: string | URL): string {
  try {
    const base = (globalThis as { location?: { href?: string } }).location?.href;
    return new URL(url, base).origin;
  } catch {
    return "";
  }
}

function wakeAll(state: OriginState): void {
  const waiters = [...state.wake];
  state.wake.clear();
  for (const w of waiters) w();
}

/** The state of every origin one `rateLimitedFetch` function has talked to. */
export class Pacer {
  private readonly origins = new Map<string, OriginState>();
  /** Its `now` and `sleep` are called as plain functions, never as methods of this object. */
  private readonly settings: Pick<Settings, "pace" | "maxWaitMs" | "now" | "sleep">;

  constructor(settings: Pick<Settings, "pace" | "maxWaitMs" | "now" | "sleep">) {
    this.settings = settings;
  }

  /** The state of the origin `url` goes to; a new one on its first request. */
  stateOf(url: string | URL): OriginState {
    const key = originOf(url);
    let state = this.origins.get(key);
    if (!state) {
      state = newOrigin();
      this.origins.set(key, state);
    }
    return state;
  }

  /**
   * How long a request to this origin must wait before it may be sent: 0 when it may go now,
   * `Infinity` when it waits for a probe's answer (woken by `wake`).
   */
  holdFor(state: OriginState): number {
    const { now, pace, maxWaitMs } = this.settings;
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
  async waitForOrigin(state: OriginState, signal: AbortSignal | undefined): Promise<void> {
    for (let ms = this.holdFor(state); ms > 0; ms = this.holdFor(state)) {
      await this.waitOrWake(state, ms, signal);
    }
  }

  /**
   * Books a request about to be sent: call it in the same turn as the `holdFor` that let it go,
   * so that nothing else can take the last unit in between.
   */
  book(state: OriginState): Booking {
    const seq = ++state.sentSeq;
    const probe = state.kind === "unknown" && this.settings.pace;
    if (probe) state.probing = true;
    if (state.kind === "known") state.remaining--;
    state.inFlight++;
    return { seq, probe };
  }

  /**
   * A booked request has ended: its answer (`undefined` when the request failed) updates the
   * state, and the waiters wake to read it (or, after a failure, to probe again).
   */
  settle(state: OriginState, booking: Booking, res: Response | undefined): void {
    state.inFlight--;
    if (booking.probe) state.probing = false;
    if (res) this.learn(state, booking.seq, res.headers, res.status);
    wakeAll(state);
  }

  /** The server asked the whole origin to wait (a `Retry-After`): no request before `until`. */
  block(state: OriginState, until: number): void {
    state.blockedUntil = Math.max(state.blockedUntil, until);
  }

  /** Sleeps `ms` (Infinity: until woken), or less when the origin's state changes. */
  private async waitOrWake(state: OriginState, ms: number, signal: AbortSignal | undefined): Promise<void> {
    throwIfAborted(signal);
    const { sleep } = this.settings;
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

  /** Applies one answer's rate-limit headers to its origin's state. */
  private learn(state: OriginState, seq: number, headers: Headers, status: number): void {
    const { now } = this.settings;
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
}

import { type FixedState, fixedAdd, fixedCheck, fixedEnd, fixedInit, fixedRefund } from "./fixed-window.ts";
import { type SlidingState, slidingAdd, slidingCheck, slidingInit, slidingRefund } from "./sliding-window.ts";
import { type TokenState, tokenAdd, tokenBook, tokenCheck, tokenInit, tokenRefund } from "./token-bucket.ts";
import type { Algorithm, RateParams, Verdict } from "./types.ts";

export type { Period } from "./calendar.ts";
export { type Algorithm, NEVER, type RateParams, type Verdict } from "./types.ts";

/** The stored state of one rate policy, tagged with the algorithm that owns it. */
export type RateState =
  | { algorithm: "sliding-window"; s: SlidingState }
  | { algorithm: "fixed-window"; s: FixedState }
  | { algorithm: "token-bucket"; s: TokenState };

export function initState(algorithm: Algorithm): RateState {
  switch (algorithm) {
    case "sliding-window":
      return { algorithm, s: slidingInit() };
    case "fixed-window":
      return { algorithm, s: fixedInit() };
    case "token-bucket":
      return { algorithm, s: tokenInit() };
  }
}

/** Decides whether `cost` fits at `now`, without consuming. */
export function check(state: RateState, now: number, p: RateParams, cost: number): Verdict {
  switch (state.algorithm) {
    case "sliding-window":
      return slidingCheck(state.s, now, p, cost);
    case "fixed-window":
      return fixedCheck(state.s, now, p, cost);
    case "token-bucket":
      return tokenCheck(state.s, now, p, cost);
  }
}

/** Consumes `cost` at `now` (after check allowed it); returns what a refund needs. */
export function consume(state: RateState, now: number, p: RateParams, cost: number): number {
  switch (state.algorithm) {
    case "sliding-window":
      return slidingAdd(state.s, now, p.windowMs, cost);
    case "fixed-window":
      return fixedAdd(state.s, now, p.windowMs, cost, p.period);
    case "token-bucket":
      tokenAdd(state.s, now, p, cost);
      return now;
  }
}

/**
 * Counts `units` as arriving at `end` >= now: an allowance's or a storage block's units (docs/algorithms.md,
 * "Allowances"). Sliding window: an entry at `end`. Fixed window: counted in the current window
 * (the caller keeps `end` inside it). Token bucket: taken at `end` (GCRA), never refunded.
 */
export function bookAt(state: RateState, now: number, end: number, p: RateParams, units: number): void {
  switch (state.algorithm) {
    case "sliding-window":
      slidingAdd(state.s, end, p.windowMs, units);
      return;
    case "fixed-window":
      fixedAdd(state.s, now, p.windowMs, units, p.period);
      return;
    case "token-bucket":
      tokenBook(state.s, now, end, p, units);
      return;
  }
}

/** Gives back a consumption (or booked units) counted at `at`; returns the units given back. */
export function refund(state: RateState, p: RateParams, at: number, cost: number): number {
  switch (state.algorithm) {
    case "sliding-window":
      return slidingRefund(state.s, at, p.windowMs, cost);
    case "fixed-window":
      return fixedRefund(state.s, at, cost);
    case "token-bucket":
      tokenRefund(state.s, p, cost);
      return cost;
  }
}

/**
 * Charges `extra` units more to a consumption counted at `at` (a settled cost above its estimate,
 * docs/algorithms.md#settled-cost), even past the limit: the excess is debt that later requests
 * wait out. Sliding window: added to `at`'s group, so it leaves the window when the booking does.
 * Fixed window: added to the booking's window while it is the current one. Token bucket: taken
 * now (never less strict than taking it at `at`), the level may go below zero. Nothing is charged
 * to a booking no longer counted (its window has passed). Returns the units charged.
 */
export function charge(state: RateState, now: number, p: RateParams, at: number, extra: number): number {
  switch (state.algorithm) {
    case "sliding-window":
      if (at <= now - p.windowMs) return 0;
      slidingAdd(state.s, at, p.windowMs, extra);
      return extra;
    case "fixed-window":
      if (state.s.start !== at) return 0;
      state.s.count += extra;
      return extra;
    case "token-bucket":
      tokenAdd(state.s, now, p, extra);
      return extra;
  }
}

/** True when the state holds nothing worth storing at `now` (its row can be deleted). */
export function isIdle(state: RateState, now: number, p: RateParams): boolean {
  switch (state.algorithm) {
    case "sliding-window":
      return state.s.total === 0 || (state.s.ends.at(-1) as number) <= now - p.windowMs;
    case "fixed-window":
      return state.s.count === 0 || fixedEnd(state.s.start, p) <= now;
    case "token-bucket":
      return state.s.at === 0 || state.s.level + (now - state.s.at) * p.limit >= p.limit * p.windowMs;
  }
}

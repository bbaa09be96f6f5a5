import { type Period, periodEnd, periodStart } from "./calendar.ts";
import { NEVER, type RateParams, type Verdict } from "./types.ts";

/**
 * A counter per window, windows aligned to the Unix epoch (start = floor(now / window) * window),
 * or, for a policy with a `period`, calendar periods in UTC (calendar.ts).
 */
export interface FixedState {
  /** Start of the window `count` belongs to, ms since the epoch. */
  start: number;
  count: number;
}

export function fixedInit(): FixedState {
  return { start: 0, count: 0 };
}

/** The start of the window `now` falls in. */
function startOf(now: number, windowMs: number, period: Period | undefined): number {
  return period ? periodStart(now, period) : Math.floor(now / windowMs) * windowMs;
}

/** The end (exclusive) of the window that starts at `start`. */
export function fixedEnd(start: number, p: RateParams): number {
  return p.period ? periodEnd(start, p.period) : start + p.windowMs;
}

function roll(s: FixedState, now: number, windowMs: number, period?: Period): number {
  const start = startOf(now, windowMs, period);
  if (s.start !== start) {
    s.start = start;
    s.count = 0;
  }
  return start;
}

/** Decides without consuming. Reset is the end of the current window. */
export function fixedCheck(s: FixedState, now: number, p: RateParams, cost: number): Verdict {
  const start = roll(s, now, p.windowMs, p.period);
  const resetMs = fixedEnd(start, p) - now;
  if (s.count + cost <= p.limit) {
    return { allowed: true, remaining: p.limit - s.count - cost, resetMs, retryAfterMs: 0 };
  }
  const remaining = Math.max(0, p.limit - s.count);
  return { allowed: false, remaining, resetMs, retryAfterMs: cost > p.limit ? NEVER : resetMs };
}

/** Consumes `cost`; returns the window start it was booked under (for a refund). */
export function fixedAdd(s: FixedState, now: number, windowMs: number, cost: number, period?: Period): number {
  const start = roll(s, now, windowMs, period);
  s.count += cost;
  return start;
}

/** Gives back `cost` booked in the window starting at `start`; returns the units given back. */
export function fixedRefund(s: FixedState, start: number, cost: number): number {
  if (s.start !== start) return 0;
  const take = Math.min(cost, s.count);
  s.count -= take;
  return take;
}

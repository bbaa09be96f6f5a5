import { NEVER, type RateParams, type Verdict } from "./types.ts";

/** A counter per window, windows aligned to the Unix epoch (start = floor(now / window) * window). */
export interface FixedState {
  /** Start of the window `count` belongs to, ms since the epoch. */
  start: number;
  count: number;
}

export function fixedInit(): FixedState {
  return { start: 0, count: 0 };
}

function roll(s: FixedState, now: number, windowMs: number): number {
  const start = Math.floor(now / windowMs) * windowMs;
  if (s.start !== start) {
    s.start = start;
    s.count = 0;
  }
  return start;
}

/** Decides without consuming. Reset is the end of the current window. */
export function fixedCheck(s: FixedState, now: number, p: RateParams, cost: number): Verdict {
  const start = roll(s, now, p.windowMs);
  const resetMs = start + p.windowMs - now;
  if (s.count + cost <= p.limit) {
    return { allowed: true, remaining: p.limit - s.count - cost, resetMs, retryAfterMs: 0 };
  }
  const remaining = Math.max(0, p.limit - s.count);
  return { allowed: false, remaining, resetMs, retryAfterMs: cost > p.limit ? NEVER : resetMs };
}

/** Consumes `cost`; returns the window start it was booked under (for a refund). */
export function fixedAdd(s: FixedState, now: number, windowMs: number, cost: number): number {
  const start = roll(s, now, windowMs);
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

import { NEVER, type RateParams, type Verdict } from "./types.ts";

/**
 * Token bucket with burst `limit` refilled at `limit` per window. Kept in integer units of
 * 1/windowMs of a token, so refill is exactly `limit` units per ms and no rounding drifts:
 * a full bucket holds limit * windowMs units (at most 1e9 * 31 d, below 2^53 for sane limits).
 */
export interface TokenState {
  /**
   * Units in the bucket at `at`. It may be negative when `at` is in the future: a booking dated at
   * its end (see tokenBook) reads, before `at`, as `level` minus the refill still to come.
   */
  level: number;
  /** ms since the epoch of `level`; 0 for a bucket never used (full). */
  at: number;
  /** The window `level` is counted in (units are 1/w of a token); 0 before first use. */
  w?: number;
}

export function tokenInit(): TokenState {
  return { level: 0, at: 0 };
}

function refill(s: TokenState, now: number, p: RateParams): number {
  const cap = p.limit * p.windowMs;
  // A window changed by an override or a new configuration: keep the tokens, change the unit.
  if (s.at !== 0 && s.w !== undefined && s.w !== p.windowMs) s.level = Math.floor((s.level * p.windowMs) / s.w);
  s.w = p.windowMs;
  if (s.at === 0) s.level = cap;
  else if (now > s.at) s.level = Math.min(cap, s.level + (now - s.at) * p.limit);
  // A level dated in the future (a booking at its end) is read back to now without the cap: as
  // GCRA's theoretical arrival time would, so the booking counts from now on, never less.
  else s.level = Math.min(cap, s.level - (s.at - now) * p.limit);
  s.at = now;
  return cap;
}

/** Decides without consuming. Reset is the time until the next whole token is back. */
export function tokenCheck(s: TokenState, now: number, p: RateParams, cost: number): Verdict {
  const cap = refill(s, now, p);
  const need = cost * p.windowMs;
  if (s.level >= need) {
    const after = s.level - need;
    const toNext = after >= cap ? 0 : p.windowMs - (after % p.windowMs);
    return {
      allowed: true,
      remaining: Math.floor(after / p.windowMs),
      resetMs: Math.max(1, Math.ceil(toNext / p.limit)),
      retryAfterMs: 0,
    };
  }
  const remaining = Math.max(0, Math.floor(s.level / p.windowMs));
  if (cost > p.limit) return { allowed: false, remaining, resetMs: p.windowMs, retryAfterMs: NEVER };
  const wait = Math.max(1, Math.ceil((need - s.level) / p.limit));
  return { allowed: false, remaining, resetMs: wait, retryAfterMs: wait };
}

export function tokenAdd(s: TokenState, now: number, p: RateParams, cost: number): void {
  refill(s, now, p);
  s.level -= cost * p.windowMs;
}

/**
 * Books `cost` as taken at `end` (a storage block's units, counted as spent at its end): whatever
 * was really taken at or before `end` leaves the bucket no fuller than this. In GCRA terms the
 * theoretical arrival time becomes max(tat, end) + cost * window / limit.
 */
export function tokenBook(s: TokenState, now: number, end: number, p: RateParams, cost: number): void {
  refill(s, now, p);
  if (end > s.at) {
    s.level = Math.min(p.limit * p.windowMs, s.level + (end - s.at) * p.limit);
    s.at = end;
  }
  s.level -= cost * p.windowMs;
}

export function tokenRefund(s: TokenState, p: RateParams, cost: number): void {
  s.level = Math.min(p.limit * p.windowMs, s.level + cost * p.windowMs);
}

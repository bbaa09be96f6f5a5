/**
 * Plain reference models of the three rate algorithms, written apart from src/algorithms/ for the
 * property tests (test/algorithms/properties.test.ts): an exact log of admitted requests for the sliding
 * window, a counter per epoch-aligned window for the fixed window, and, for the token bucket,
 * both a level model and GCRA (theoretical arrival time), two independent formulations.
 * Each answers like src/algorithms: allowed, remaining, resetMs, retryAfterMs (Infinity: never).
 */

export interface RefVerdict {
  allowed: boolean;
  remaining: number;
  resetMs: number;
  retryAfterMs: number;
}

export interface RefParams {
  limit: number;
  windowMs: number;
}

const NEVER = Number.POSITIVE_INFINITY;

/**
 * The exact sliding-window log: every admitted request with its time and cost. An arrival is
 * forgotten once it has left the window in force when a request is decided (so a window lengthened
 * by an override does not bring back arrivals the shorter one had already let go).
 */
export class ExactLog {
  admitted: { t: number; cost: number }[] = [];

  private forget(t: number, windowMs: number): void {
    this.admitted = this.admitted.filter((a) => a.t > t - windowMs);
  }

  /** Cost admitted in (t - windowMs, t]. */
  used(t: number, windowMs: number): number {
    let sum = 0;
    for (const a of this.admitted) if (a.t > t - windowMs && a.t <= t) sum += a.cost;
    return sum;
  }

  /** The earliest time >= t at which `cost` fits, with nothing more admitted meanwhile. */
  fitsAt(t: number, p: RefParams, cost: number): number {
    if (cost > p.limit) return NEVER;
    // Candidates: t itself, and every moment an admitted unit leaves the window.
    const candidates = [t, ...this.admitted.map((a) => a.t + p.windowMs).filter((x) => x > t)].sort((a, b) => a - b);
    for (const x of candidates) if (this.used(x, p.windowMs) + cost <= p.limit) return x;
    return NEVER;
  }

  decide(t: number, p: RefParams, cost: number): RefVerdict {
    this.forget(t, p.windowMs);
    const used = this.used(t, p.windowMs);
    if (used + cost <= p.limit) {
      const live = this.admitted.filter((a) => a.t > t - p.windowMs && a.t <= t);
      const oldest = live.length > 0 ? Math.min(...live.map((a) => a.t)) : t;
      return { allowed: true, remaining: p.limit - used - cost, resetMs: oldest + p.windowMs - t, retryAfterMs: 0 };
    }
    const remaining = Math.max(0, p.limit - used);
    if (cost > p.limit) return { allowed: false, remaining, resetMs: p.windowMs, retryAfterMs: NEVER };
    const wait = Math.max(1, this.fitsAt(t, p, cost) - t);
    return { allowed: false, remaining, resetMs: wait, retryAfterMs: wait };
  }

  admit(t: number, cost: number): void {
    this.admitted.push({ t, cost });
  }
}

/**
 * Fixed windows aligned to the epoch: one counter, for the window [start, start + window) the last
 * request fell in. A window whose start differs (time moved on, or an override changed the length)
 * counts afresh.
 */
export class FixedCounter {
  private start = Number.NaN;
  private count = 0;

  private roll(t: number, windowMs: number): number {
    const start = t - (t % windowMs);
    if (start !== this.start) {
      this.start = start;
      this.count = 0;
    }
    return start;
  }

  decide(t: number, p: RefParams, cost: number): RefVerdict {
    const start = this.roll(t, p.windowMs);
    const resetMs = start + p.windowMs - t;
    if (this.count + cost <= p.limit) {
      return { allowed: true, remaining: p.limit - this.count - cost, resetMs, retryAfterMs: 0 };
    }
    return {
      allowed: false,
      remaining: Math.max(0, p.limit - this.count),
      resetMs,
      retryAfterMs: cost > p.limit ? NEVER : resetMs,
    };
  }

  admit(t: number, p: RefParams, cost: number): void {
    this.roll(t, p.windowMs);
    this.count += cost;
  }
}

/**
 * Token bucket as a level: tokens counted in integer units of 1/windowMs of a token (so refill is
 * exactly `limit` units per ms), full at first use, capped at `limit` tokens. A window changed
 * midway keeps the tokens and changes the unit, rounding down.
 */
export class TokenLevel {
  private units: number | undefined;
  private at = 0;
  private unitWindow = 0;

  private refill(t: number, p: RefParams): number {
    const cap = p.limit * p.windowMs;
    if (this.units === undefined) {
      this.units = cap;
    } else {
      if (this.unitWindow !== p.windowMs) this.units = Math.floor((this.units * p.windowMs) / this.unitWindow);
      this.units = Math.min(cap, this.units + Math.max(0, t - this.at) * p.limit);
    }
    this.unitWindow = p.windowMs;
    this.at = Math.max(this.at, t);
    return cap;
  }

  decide(t: number, p: RefParams, cost: number): RefVerdict {
    const cap = this.refill(t, p);
    const units = this.units as number;
    const need = cost * p.windowMs;
    if (units >= need) {
      const after = units - need;
      // Time until Remaining goes up: the next whole token (none while the bucket is full).
      const toNext = after >= cap ? 0 : p.windowMs - (after % p.windowMs);
      return {
        allowed: true,
        remaining: Math.floor(after / p.windowMs),
        resetMs: Math.max(1, Math.ceil(toNext / p.limit)),
        retryAfterMs: 0,
      };
    }
    const remaining = Math.floor(units / p.windowMs);
    if (cost > p.limit) return { allowed: false, remaining, resetMs: p.windowMs, retryAfterMs: NEVER };
    const wait = Math.max(1, Math.ceil((need - units) / p.limit));
    return { allowed: false, remaining, resetMs: wait, retryAfterMs: wait };
  }

  admit(t: number, p: RefParams, cost: number): void {
    this.refill(t, p);
    this.units = (this.units as number) - cost * p.windowMs;
  }
}

/**
 * GCRA, the other classic formulation of the same bucket: a request of cost c at t is admitted iff
 * max(TAT, t) + c * (window / limit) - t <= window, where TAT is the theoretical arrival time.
 * Kept scaled by `limit` so every quantity is an integer. Decisions and Retry-After only.
 */
export class Gcra {
  /** TAT * limit. */
  private tatL = Number.NEGATIVE_INFINITY;

  decide(t: number, p: RefParams, cost: number): { allowed: boolean; retryAfterMs: number } {
    const tL = t * p.limit;
    const next = Math.max(this.tatL, tL) + cost * p.windowMs;
    const over = next - tL - p.windowMs * p.limit;
    if (over <= 0) return { allowed: true, retryAfterMs: 0 };
    if (cost > p.limit) return { allowed: false, retryAfterMs: NEVER };
    return { allowed: false, retryAfterMs: Math.max(1, Math.ceil(over / p.limit)) };
  }

  admit(t: number, p: RefParams, cost: number): void {
    this.tatL = Math.max(this.tatL, t * p.limit) + cost * p.windowMs;
  }
}

/**
 * A quota per calendar period in UTC, written with Date's own calendar (not src/algorithms/calendar's
 * arithmetic): the period's start is `t` with the time, the weekday (from Monday) or the day of the
 * month wound back; its end is the start moved on by a day, 7 days or a month. One counter, for
 * the period the last request fell in.
 */
export class CalendarCounter {
  private start = Number.NaN;
  private count = 0;

  private readonly period: "day" | "week" | "month";

  constructor(period: "day" | "week" | "month") {
    this.period = period;
  }

  bounds(t: number): { start: number; end: number } {
    const d = new Date(t);
    d.setUTCHours(0, 0, 0, 0);
    if (this.period === "week") d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    if (this.period === "month") d.setUTCDate(1);
    const start = d.getTime();
    if (this.period === "day") d.setUTCDate(d.getUTCDate() + 1);
    else if (this.period === "week") d.setUTCDate(d.getUTCDate() + 7);
    else d.setUTCMonth(d.getUTCMonth() + 1);
    return { start, end: d.getTime() };
  }

  private roll(t: number): { start: number; end: number } {
    const b = this.bounds(t);
    if (b.start !== this.start) {
      this.start = b.start;
      this.count = 0;
    }
    return b;
  }

  decide(t: number, limit: number, cost: number): RefVerdict {
    const { end } = this.roll(t);
    const resetMs = end - t;
    if (this.count + cost <= limit)
      return { allowed: true, remaining: limit - this.count - cost, resetMs, retryAfterMs: 0 };
    return {
      allowed: false,
      remaining: Math.max(0, limit - this.count),
      resetMs,
      retryAfterMs: cost > limit ? NEVER : resetMs,
    };
  }

  admit(t: number, cost: number): void {
    this.roll(t);
    this.count += cost;
  }
}

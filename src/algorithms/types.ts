import type { Period } from "./calendar.ts";

/** What a rate algorithm needs of a policy (after any per-key override). */
export interface RateParams {
  /** Units of cost allowed per window. */
  limit: number;
  /** Window length in ms (of a period policy: the length of the period in force). */
  windowMs: number;
  /** Calendar periods instead of epoch-aligned windows (fixed-window only). */
  period?: Period | undefined;
}

/**
 * One algorithm's answer for one request. Times are ms relative to `now`; the header writers round
 * them up to whole seconds.
 */
export interface Verdict {
  allowed: boolean;
  /** Units left: after this request when allowed, now when rejected. Never negative. */
  remaining: number;
  /**
   * ms until Remaining next goes up (allowed), or until this request could pass (rejected).
   * Always >= 1 when rejected.
   */
  resetMs: number;
  /** ms until a request of this cost could pass; 0 when allowed. Infinity when cost > limit. */
  retryAfterMs: number;
}

/** A rejection that no wait can cure: the request costs more than the whole limit. */
export const NEVER = Number.POSITIVE_INFINITY;

/** The counting algorithms of a rate policy (docs/algorithms.md). */
export type Algorithm = "sliding-window" | "fixed-window" | "token-bucket";

import { NEVER, type RateParams, type Verdict } from "./types.ts";

/**
 * Exact sliding-window log, grouped into sub-buckets so state stays bounded for large limits.
 *
 * Arrivals are grouped by sub-bucket of width g = max(1 ms, floor(window / 1000)), aligned to the
 * epoch, and a group is counted as if all of it arrived with its latest arrival `end`: it counts
 * at time t while end > t - window. Since end >= every arrival in it, each unit is counted at least
 * as long as the exact log would count it, so no window of real time ever admits more than
 * `limit`. The price is a wait at most g - 1 ms longer than the exact log's (none for windows up
 * to 1.999 s), and at most 1,001 entries per policy whatever the limit.
 */
export interface SlidingState {
  /** Latest arrival (ms since the epoch) of each sub-bucket, ascending. */
  ends: number[];
  /** Units admitted in each sub-bucket, parallel to `ends`. */
  counts: number[];
  /** Sum of `counts`. */
  total: number;
}

export function slidingInit(): SlidingState {
  return { ends: [], counts: [], total: 0 };
}

/** Width of one sub-bucket in ms. */
export function subBucketMs(windowMs: number): number {
  return Math.max(1, Math.floor(windowMs / 1000));
}

/** Drops entries no longer counted at `now`. Neutral: it changes no decision. */
function prune(s: SlidingState, now: number, windowMs: number): void {
  const cutoff = now - windowMs;
  let i = 0;
  while (i < s.ends.length && (s.ends[i] as number) <= cutoff) {
    s.total -= s.counts[i] as number;
    i++;
  }
  if (i > 0) {
    s.ends.splice(0, i);
    s.counts.splice(0, i);
  }
}

/** Decides without consuming. */
export function slidingCheck(s: SlidingState, now: number, p: RateParams, cost: number): Verdict {
  prune(s, now, p.windowMs);
  const used = s.total;
  if (used + cost <= p.limit) {
    const oldest = s.ends.length > 0 ? (s.ends[0] as number) : now;
    return { allowed: true, remaining: p.limit - used - cost, resetMs: oldest + p.windowMs - now, retryAfterMs: 0 };
  }
  const remaining = Math.max(0, p.limit - used);
  if (cost > p.limit) return { allowed: false, remaining, resetMs: p.windowMs, retryAfterMs: NEVER };
  // The request fits once enough of the oldest units have left the window.
  const need = used + cost - p.limit;
  let freed = 0;
  let at = now + p.windowMs;
  for (let i = 0; i < s.ends.length; i++) {
    freed += s.counts[i] as number;
    if (freed >= need) {
      at = (s.ends[i] as number) + p.windowMs;
      break;
    }
  }
  const wait = Math.max(1, at - now);
  return { allowed: false, remaining, resetMs: wait, retryAfterMs: wait };
}

/**
 * Counts `cost` as arriving at `at` (after slidingCheck allowed it); returns `at`, which a refund
 * needs. `at` may be any time: the object's own arrivals come at `now`, an allowance or a storage
 * block is booked at its end (in the future), and a reported use is re-dated to its real time (in
 * the past). Each sub-bucket holds one group, counted as arriving with its latest member.
 */
export function slidingAdd(s: SlidingState, at: number, windowMs: number, cost: number): number {
  const g = subBucketMs(windowMs);
  const b = Math.floor(at / g);
  // The last group whose sub-bucket is not after `at`'s (the newest, in the common case).
  let i = s.ends.length - 1;
  while (i >= 0 && Math.floor((s.ends[i] as number) / g) > b) i--;
  s.total += cost;
  if (i >= 0 && Math.floor((s.ends[i] as number) / g) === b) {
    // Same sub-bucket: the group now ends at the later of the two (which only counts it longer).
    s.ends[i] = Math.max(s.ends[i] as number, at);
    s.counts[i] = (s.counts[i] as number) + cost;
  } else {
    s.ends.splice(i + 1, 0, at);
    s.counts.splice(i + 1, 0, cost);
  }
  return at;
}

/**
 * Takes back up to `cost` counted at `at` (a request another object rejected, an allowance's
 * unused units, a use being re-dated). The units sit in the group of `at`'s sub-bucket; when that
 * group has expired there is nothing left to take back. Returns the units taken.
 */
export function slidingRefund(s: SlidingState, at: number, windowMs: number, cost: number): number {
  const g = subBucketMs(windowMs);
  const b = Math.floor(at / g);
  let i = s.ends.length - 1;
  while (i >= 0 && Math.floor((s.ends[i] as number) / g) > b) i--;
  if (i < 0 || Math.floor((s.ends[i] as number) / g) !== b) return 0;
  const take = Math.min(cost, s.counts[i] as number);
  s.counts[i] = (s.counts[i] as number) - take;
  s.total -= take;
  if (s.counts[i] === 0) {
    s.ends.splice(i, 1);
    s.counts.splice(i, 1);
  }
  return take;
}

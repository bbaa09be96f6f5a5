/**
 * Calendar periods in UTC, the windows of a quota (`period` on a rate policy): a day from
 * midnight, a week from Monday midnight, a month from the 1st at midnight, each as long as it
 * really is (28 to 31 days for a month, leap years included). The fixed-window algorithm counts a
 * period policy in these windows instead of epoch-aligned ones (see fixed-window.ts); everything
 * else about it (one counter, reset at the boundary, exact) is the same.
 */
export type Period = "day" | "week" | "month";

const DAY_MS = 86_400_000;
/** 1970-01-01, day 0 of the epoch, was a Thursday: 3 days after a Monday. */
const EPOCH_WEEKDAY_FROM_MONDAY = 3;

/** The start (ms since the epoch) of the period `now` falls in. */
export function periodStart(now: number, period: Period): number {
  const day = Math.floor(now / DAY_MS);
  switch (period) {
    case "day":
      return day * DAY_MS;
    case "week": {
      const sinceMonday = (((day + EPOCH_WEEKDAY_FROM_MONDAY) % 7) + 7) % 7;
      return (day - sinceMonday) * DAY_MS;
    }
    case "month": {
      const d = new Date(now);
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
    }
  }
}

/** The end (exclusive) of the period that starts at `start`: the next period's start. */
export function periodEnd(start: number, period: Period): number {
  switch (period) {
    case "day":
      return start + DAY_MS;
    case "week":
      return start + 7 * DAY_MS;
    case "month": {
      const d = new Date(start);
      // Date.UTC carries month 12 into January of the next year.
      return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
    }
  }
}

/** The length in ms of the period `now` falls in (the IETF `w` of a period policy). */
export function periodLength(now: number, period: Period): number {
  const start = periodStart(now, period);
  return periodEnd(start, period) - start;
}

/** Durations as configuration writes them, and the bounds on windows. Pure. */

/** A duration as written in configuration: "500ms", "10s", "1m", "1h", "1d", or seconds as a number. */
export type Duration = `${number}${"ms" | "s" | "m" | "h" | "d"}` | number;

export const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/** Parses a {@link Duration} to whole milliseconds, or undefined when it is not one. */
export function parseDuration(value: unknown): number | undefined {
  let ms: number | undefined;
  if (typeof value === "number") ms = value * 1000;
  else if (typeof value === "string") {
    const m = DURATION_RE.exec(value.trim());
    if (m) ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  }
  if (ms === undefined || !Number.isFinite(ms) || !Number.isInteger(ms) || ms < 1) return undefined;
  return ms;
}

/** The shortest length of each calendar period (a month's real length is its own, 28 to 31 days). */
export const PERIOD_MIN_MS = { day: UNIT_MS.d, week: 7 * UNIT_MS.d, month: 28 * UNIT_MS.d } as const;

/** Longest window accepted: beyond 31 days the usage and storage bounds in docs/ stop holding. */
export const MAX_WINDOW_MS = 31 * UNIT_MS.d;

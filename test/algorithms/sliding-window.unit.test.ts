import { describe, expect, it } from "vitest";
import { NEVER } from "../../src/algorithms/index.ts";
import {
  slidingAdd,
  slidingCheck,
  slidingInit,
  slidingRefund,
  subBucketMs,
} from "../../src/algorithms/sliding-window.ts";

const T0 = 1_800_000_000_000; // a whole second, ms since the epoch

function take(s: ReturnType<typeof slidingInit>, now: number, limit: number, windowMs: number, cost = 1) {
  const v = slidingCheck(s, now, { limit, windowMs }, cost);
  if (v.allowed) slidingAdd(s, now, windowMs, cost);
  return v;
}

describe("sliding window (pure, injected time)", () => {
  it("10 per second: ten at 0 ms pass, one at 500 ms is rejected, one at 1000 ms passes", () => {
    const s = slidingInit();
    for (let i = 0; i < 10; i++) expect(take(s, T0, 10, 1000).allowed).toBe(true);
    const at500 = take(s, T0 + 500, 10, 1000);
    expect(at500).toEqual({ allowed: false, remaining: 0, resetMs: 500, retryAfterMs: 500 });
    expect(take(s, T0 + 999, 10, 1000)).toMatchObject({ allowed: false, retryAfterMs: 1 });
    // At 1000 ms the ten of 0 ms have left the window (t - 1000, t]; the one of 500 ms never entered.
    expect(take(s, T0 + 1000, 10, 1000)).toMatchObject({ allowed: true, remaining: 9 });
  });

  it("counts exactly (t - window, t]: spread arrivals free one unit each as they expire", () => {
    const s = slidingInit();
    for (let i = 0; i < 5; i++) expect(take(s, T0 + i * 100, 5, 1000).allowed).toBe(true);
    const v = take(s, T0 + 450, 5, 1000);
    expect(v).toMatchObject({ allowed: false, retryAfterMs: 550 }); // the 0 ms arrival leaves at 1000
    expect(take(s, T0 + 1000, 5, 1000).allowed).toBe(true);
    expect(take(s, T0 + 1050, 5, 1000).allowed).toBe(false);
    expect(take(s, T0 + 1100, 5, 1000).allowed).toBe(true);
  });

  it("reports remaining after the request and reset as the time until the oldest unit leaves", () => {
    const s = slidingInit();
    expect(take(s, T0, 3, 10_000)).toEqual({ allowed: true, remaining: 2, resetMs: 10_000, retryAfterMs: 0 });
    expect(take(s, T0 + 4000, 3, 10_000)).toEqual({ allowed: true, remaining: 1, resetMs: 6000, retryAfterMs: 0 });
  });

  it("costs above 1: waits until enough units have left, and a cost above the limit never passes", () => {
    const s = slidingInit();
    expect(take(s, T0, 10, 1000, 4).allowed).toBe(true);
    expect(take(s, T0 + 200, 10, 1000, 4).allowed).toBe(true);
    const v = take(s, T0 + 300, 10, 1000, 4); // 8 used, needs 2 freed: the first 4 leave at 1000
    expect(v).toMatchObject({ allowed: false, remaining: 2, retryAfterMs: 700 });
    expect(take(s, T0 + 300, 10, 1000, 2).allowed).toBe(true);
    expect(take(s, T0 + 300, 10, 1000, 11)).toMatchObject({ allowed: false, retryAfterMs: NEVER });
  });

  it("a rejected check consumes nothing", () => {
    const s = slidingInit();
    take(s, T0, 1, 1000);
    for (let i = 0; i < 50; i++) take(s, T0 + i, 1, 1000);
    expect(s.total).toBe(1);
    expect(take(s, T0 + 1000, 1, 1000).allowed).toBe(true);
  });

  it("1,000,000 per hour keeps at most 1,001 entries and never admits more than the limit in any window", () => {
    const limit = 1_000_000;
    const windowMs = 3_600_000;
    expect(subBucketMs(windowMs)).toBe(3600);
    const s = slidingInit();
    let admitted = 0;
    // 2.5 million arrivals over two hours, in bursts of 500 every 1.44 s.
    for (let step = 0; step < 5000; step++) {
      const now = T0 + step * 1440;
      for (let j = 0; j < 500; j++) if (take(s, now, limit, windowMs).allowed) admitted++;
      expect(s.ends.length).toBeLessThanOrEqual(1001);
      expect(s.total).toBeLessThanOrEqual(limit);
    }
    expect(admitted).toBeGreaterThan(limit);
  });

  it("sub-buckets delay at most g - 1 ms beyond the exact log", () => {
    const windowMs = 60_000; // g = 60 ms
    const s = slidingInit();
    take(s, T0 + 10, 2, windowMs); // lands in the sub-bucket [T0, T0 + 60)
    take(s, T0 + 59, 2, windowMs); // same sub-bucket: the group now ends at +59
    // Exact log: the +10 unit leaves at +60,010. Grouped: both leave at +60,059 (49 ms later).
    expect(take(s, T0 + 60_010, 2, windowMs)).toMatchObject({ allowed: false, retryAfterMs: 49 });
    expect(take(s, T0 + 60_059, 2, windowMs).allowed).toBe(true);
  });

  it("refund gives back exactly what a request took, and nothing once it has expired", () => {
    const s = slidingInit();
    take(s, T0, 3, 1000);
    const at = T0 + 5;
    slidingAdd(s, at, 1000, 2);
    expect(s.total).toBe(3);
    slidingRefund(s, at, 1000, 2);
    expect(s.total).toBe(1);
    expect(take(s, T0 + 6, 3, 1000, 2).allowed).toBe(true);
    slidingRefund(s, T0 - 5000, 1000, 1); // long expired: no effect
    expect(s.total).toBe(3);
  });
});

// The fixed window and the token bucket as pure functions on an injected clock (Node, no workerd).
import { describe, expect, it } from "vitest";
import { fixedAdd, fixedCheck, fixedInit, fixedRefund } from "../../src/algorithms/fixed-window.ts";
import { NEVER } from "../../src/algorithms/index.ts";
import { tokenAdd, tokenCheck, tokenInit, tokenRefund } from "../../src/algorithms/token-bucket.ts";

/** A whole multiple of 10 s (and of 1 h) since the epoch: the start of a fixed window. */
const T0 = 1_800_000_000_000;

function fixedTake(s: ReturnType<typeof fixedInit>, now: number, limit: number, windowMs: number, cost = 1) {
  const v = fixedCheck(s, now, { limit, windowMs }, cost);
  if (v.allowed) fixedAdd(s, now, windowMs, cost);
  return v;
}

function tokenTake(s: ReturnType<typeof tokenInit>, now: number, limit: number, windowMs: number, cost = 1) {
  const v = tokenCheck(s, now, { limit, windowMs }, cost);
  if (v.allowed) tokenAdd(s, now, { limit, windowMs }, cost);
  return v;
}

describe("fixed window (pure, injected time)", () => {
  it("windows are aligned to the Unix epoch, not to the first request; reset is the window's end", () => {
    const s = fixedInit();
    expect(fixedTake(s, T0 + 7000, 3, 10_000)).toEqual({ allowed: true, remaining: 2, resetMs: 3000, retryAfterMs: 0 });
    expect(fixedTake(s, T0 + 8000, 3, 10_000)).toEqual({ allowed: true, remaining: 1, resetMs: 2000, retryAfterMs: 0 });
    expect(fixedTake(s, T0 + 9000, 3, 10_000)).toEqual({ allowed: true, remaining: 0, resetMs: 1000, retryAfterMs: 0 });
    expect(fixedTake(s, T0 + 9999, 3, 10_000)).toEqual({ allowed: false, remaining: 0, resetMs: 1, retryAfterMs: 1 });
    // 10 000 ms is the next window: the whole limit is back at once.
    expect(fixedTake(s, T0 + 10_000, 3, 10_000)).toEqual({
      allowed: true,
      remaining: 2,
      resetMs: 10_000,
      retryAfterMs: 0,
    });
  });

  it("a one-day window ends at midnight UTC", () => {
    const day = 86_400_000;
    const midnight = Math.ceil(T0 / day) * day;
    const v = fixedTake(fixedInit(), midnight - 90_000, 100, day);
    expect(v.resetMs).toBe(90_000);
    expect(fixedTake(fixedInit(), midnight, 100, day).resetMs).toBe(day);
  });

  it("admits up to twice the limit across a window boundary (what fixed windows trade for simplicity)", () => {
    const s = fixedInit();
    for (let i = 0; i < 3; i++) expect(fixedTake(s, T0 + 9999, 3, 10_000).allowed).toBe(true);
    for (let i = 0; i < 3; i++) expect(fixedTake(s, T0 + 10_000, 3, 10_000).allowed).toBe(true);
    expect(fixedTake(s, T0 + 10_001, 3, 10_000).allowed).toBe(false);
  });

  it("costs above 1: a request passes only if its whole cost fits; one costing more than the limit never passes", () => {
    const s = fixedInit();
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 6 });
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 2 });
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 4)).toEqual({
      allowed: false,
      remaining: 2,
      resetMs: 8000,
      retryAfterMs: 8000,
    });
    expect(fixedTake(s, T0 + 2000, 10, 10_000, 2)).toMatchObject({ allowed: true, remaining: 0 });
    expect(fixedTake(fixedInit(), T0, 10, 10_000, 11)).toMatchObject({ allowed: false, retryAfterMs: NEVER });
  });

  it("a rejected check consumes nothing; a refund gives back only within the window it was booked in", () => {
    const s = fixedInit();
    const at = fixedAdd(s, T0 + 100, 10_000, 2);
    expect(at).toBe(T0);
    for (let i = 0; i < 5; i++) fixedTake(s, T0 + 200, 2, 10_000);
    expect(s.count).toBe(2);
    fixedRefund(s, at, 2);
    expect(fixedTake(s, T0 + 300, 2, 10_000, 2).allowed).toBe(true);
    // A refund of last window's booking does not touch this window's count.
    fixedTake(s, T0 + 10_000, 2, 10_000, 2);
    fixedRefund(s, at, 2);
    expect(fixedTake(s, T0 + 10_001, 2, 10_000).allowed).toBe(false);
  });
});

describe("token bucket (pure, injected time)", () => {
  it("a fresh bucket allows a burst of limit, then refills limit per window, one token at a time", () => {
    const s = tokenInit();
    const t = T0 + 123;
    // 5 per 10 s: one token every 2 s. Reset is when the next whole token is back.
    for (let i = 4; i >= 0; i--) {
      expect(tokenTake(s, t, 5, 10_000)).toEqual({ allowed: true, remaining: i, resetMs: 2000, retryAfterMs: 0 });
    }
    expect(tokenTake(s, t, 5, 10_000)).toEqual({ allowed: false, remaining: 0, resetMs: 2000, retryAfterMs: 2000 });
    expect(tokenTake(s, t + 1999, 5, 10_000)).toMatchObject({ allowed: false, retryAfterMs: 1 });
    expect(tokenTake(s, t + 2000, 5, 10_000)).toMatchObject({ allowed: true, remaining: 0, resetMs: 2000 });
    expect(tokenTake(s, t + 2000, 5, 10_000)).toMatchObject({ allowed: false, retryAfterMs: 2000 });
  });

  it("refills part of a token continuously, and reset counts down to the next whole one", () => {
    const s = tokenInit();
    for (let i = 0; i < 5; i++) tokenTake(s, T0, 5, 10_000);
    // 3 s later: 1.5 tokens. One passes, leaving half a token, 1 s from whole.
    expect(tokenTake(s, T0 + 3000, 5, 10_000)).toEqual({ allowed: true, remaining: 0, resetMs: 1000, retryAfterMs: 0 });
    expect(tokenTake(s, T0 + 3000, 5, 10_000)).toMatchObject({ allowed: false, retryAfterMs: 1000 });
  });

  it("an idle bucket fills up to the burst, never beyond", () => {
    const s = tokenInit();
    for (let i = 0; i < 5; i++) tokenTake(s, T0, 5, 10_000);
    const later = T0 + 3_600_000;
    for (let i = 0; i < 5; i++) expect(tokenTake(s, later, 5, 10_000).allowed).toBe(true);
    expect(tokenTake(s, later, 5, 10_000).allowed).toBe(false);
  });

  it("waits are rounded up, never early: 3 per second refills one token every 333.3 ms", () => {
    const s = tokenInit();
    for (let i = 0; i < 3; i++) tokenTake(s, T0, 3, 1000);
    expect(tokenTake(s, T0, 3, 1000)).toMatchObject({ allowed: false, retryAfterMs: 334 });
    expect(tokenTake(s, T0 + 333, 3, 1000).allowed).toBe(false);
    expect(tokenTake(s, T0 + 334, 3, 1000).allowed).toBe(true);
  });

  it("costs above 1 wait for enough tokens; one costing more than the burst never passes", () => {
    const s = tokenInit();
    // 10 per 10 s: one token a second.
    expect(tokenTake(s, T0, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 6 });
    expect(tokenTake(s, T0, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 2 });
    expect(tokenTake(s, T0, 10, 10_000, 4)).toEqual({
      allowed: false,
      remaining: 2,
      resetMs: 2000,
      retryAfterMs: 2000,
    });
    expect(tokenTake(s, T0 + 2000, 10, 10_000, 4)).toMatchObject({ allowed: true, remaining: 0 });
    expect(tokenTake(tokenInit(), T0, 10, 10_000, 11)).toMatchObject({ allowed: false, retryAfterMs: NEVER });
  });

  it("a refund puts the tokens back, up to the burst", () => {
    const s = tokenInit();
    const p = { limit: 2, windowMs: 1000 };
    tokenTake(s, T0, 2, 1000, 2);
    expect(tokenTake(s, T0, 2, 1000).allowed).toBe(false);
    tokenRefund(s, p, 2);
    tokenRefund(s, p, 2); // a second refund cannot push it past a full bucket
    expect(tokenTake(s, T0, 2, 1000, 2).allowed).toBe(true);
    expect(tokenTake(s, T0, 2, 1000).allowed).toBe(false);
  });
});

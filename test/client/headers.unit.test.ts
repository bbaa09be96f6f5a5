// src/client/headers.ts alone: the header forms test/client/client.test.ts's fake servers do not
// send (a reset as a Unix time in ms, several IETF policies, a policy's window standing in for a
// missing `t`, X-RateLimit-* next to the IETF fields, unreadable figures, fractional Retry-After).
import { describe, expect, it } from "vitest";
import { parseRetryAfter, readRateLimit } from "../../src/client/headers.ts";

const T0 = 1_800_000_000_000;
const read = (headers: Record<string, string>) => readRateLimit(new Headers(headers), T0);

describe("X-RateLimit-Remaining with X-RateLimit-Reset", () => {
  it("tells delta seconds, Unix seconds and Unix ms apart by size; a reset in the past is 0", () => {
    const reset = (value: string) => read({ "x-ratelimit-remaining": "3", "x-ratelimit-reset": value });
    expect(reset("30")).toEqual({ remaining: 3, resetInMs: 30_000 });
    expect(reset(String(T0 / 1000 + 45))).toEqual({ remaining: 3, resetInMs: 45_000 });
    expect(reset(String(T0 + 4_500))).toEqual({ remaining: 3, resetInMs: 4_500 });
    expect(reset(String(T0 / 1000 - 10))).toEqual({ remaining: 3, resetInMs: 0 });
  });

  it("without a readable reset: the figure alone", () => {
    expect(read({ "x-ratelimit-remaining": "0" })).toEqual({ remaining: 0, resetInMs: undefined });
    expect(read({ "x-ratelimit-remaining": "2", "x-ratelimit-reset": "soon" })).toEqual({
      remaining: 2,
      resetInMs: undefined,
    });
  });

  it("is read before the IETF fields when an answer carries both", () => {
    expect(read({ "x-ratelimit-remaining": "5", "x-ratelimit-reset": "10", ratelimit: '"fixed";r=1;t=60' })).toEqual({
      remaining: 5,
      resetInMs: 10_000,
    });
  });
});

describe("the IETF RateLimit and RateLimit-Policy fields", () => {
  it("with several policies, the one with the least remaining binds; a tie takes the latest reset", () => {
    expect(read({ ratelimit: '"minute";r=40;t=20, "day";r=3;t=5000' })).toEqual({ remaining: 3, resetInMs: 5_000_000 });
    expect(read({ ratelimit: '"a";r=0;t=5, "b";r=0;t=50, "c";r=0;t=7' })).toEqual({ remaining: 0, resetInMs: 50_000 });
  });

  it("a policy's window `w` stands in for a missing `t`; neither leaves the reset unknown", () => {
    const policy = '"burst";q=10;w=2, "hour";q=1000;w=3600';
    expect(read({ ratelimit: '"hour";r=7', "ratelimit-policy": policy })).toEqual({
      remaining: 7,
      resetInMs: 3_600_000,
    });
    expect(read({ ratelimit: '"other";r=7', "ratelimit-policy": policy })).toEqual({
      remaining: 7,
      resetInMs: undefined,
    });
  });

  it("reads a quoted name holding a comma as one member", () => {
    const policy = '"a,b";q=10;w=30';
    expect(read({ ratelimit: '"a,b";r=4', "ratelimit-policy": policy })).toEqual({ remaining: 4, resetInMs: 30_000 });
  });
});

describe("answers with nothing to pace by", () => {
  it("no field, or figures that are not non-negative numbers", () => {
    const none = { remaining: undefined, resetInMs: undefined };
    expect(read({})).toEqual(none);
    expect(read({ "x-ratelimit-remaining": "-1" })).toEqual(none);
    expect(read({ "x-ratelimit-remaining": "many", "x-ratelimit-reset": "10" })).toEqual(none);
    expect(read({ ratelimit: '"fixed";t=10' })).toEqual(none);
  });
});

describe("parseRetryAfter", () => {
  it("takes fractional seconds and surrounding spaces", () => {
    expect(parseRetryAfter("1.5", T0)).toBe(1_500);
    expect(parseRetryAfter(" 120 ", T0)).toBe(120_000);
  });
});
